@area:HIS
Feature: Vaccination history
  The software shows the patient's vaccinations as the register holds them: its own and those
  recorded by others, every page of the answer, and cancelled records not counted as given.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple

  @item:VC-HIS-01 @item:VC-HIS-02
  Scenario: Vaccinations recorded by the professional and by others
    Given Luc Exemplaire recorded a Measles vaccine for the patient on 2025-03-01
    And Petra Proefmans recorded an Influenza vaccine for the patient on 2025-10-15
    And Nadir Essai recorded a Tetanus vaccine for the patient on 2026-01-10
    When the professional opens the vaccination history of the patient
    Then the software showed the history
    And the software searched by the patient's SSIN with parameters the register supports
    And the history shows every vaccination the register holds for the patient, each once

  @item:VC-HIS-03
  Scenario: A history longer than one page
    Given the register holds 45 vaccinations for the patient recorded by Petra Proefmans
    When the professional opens the vaccination history of the patient
    Then the software showed the history
    And the software followed the next links to the last page
    And the history shows every vaccination the register holds for the patient, each once

  @item:VC-HIS-04
  Scenario: A vaccination cancelled by another professional
    Given Luc Exemplaire recorded a Measles vaccine for the patient on 2025-03-01
    And Petra Proefmans recorded an Influenza vaccine for the patient on 2025-10-15
    And Petra Proefmans cancelled that vaccination as entered in error
    When the professional opens the vaccination history of the patient
    Then the software showed the history
    And the history shows every vaccination the register holds for the patient, each once
    And the cancelled vaccination is not shown as given
