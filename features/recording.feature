@area:REG
Feature: Recording a vaccination
  The professional records a vaccination in the software; the software sends one BeVaccination
  Immunization to the register with exactly what the professional entered, names the patient by SSIN
  and the professional as recorder.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple

  @item:VC-REG-01 @item:VC-REG-02 @item:VC-REG-03 @item:VC-REG-04 @item:VC-REG-05 @item:VC-REG-06 @item:VC-REG-07
  Scenario: A vaccination given in the practice, with every detail
    When the professional records a vaccination:
      | vaccine     | Measles and mumps and rubella vaccine |
      | given on    | 2026-11-20T10:00:00+01:00             |
      | CNK         | 1234567                               |
      | lot number  | AB1234                                |
      | lot expiry  | 2027-06-30                            |
      | route       | SC                                    |
      | body site   | Deltoid muscle                        |
      | side        | left                                  |
      | place       | medical-center                        |
      | place name  | Cabinet du Parc                       |
    Then the software reported the vaccination as recorded
    And the register received exactly one Immunization
    And it conforms to be-vaccination
    And it carries one business identifier with a system and a value
    And the patient is identified by SSIN in patient.identifier
    And the recorder is the logged-in professional
    And the lot number and expiry travel in the administered-product extension, not in lotNumber
    And the values equal what the professional entered
    And the place is a contained Encounter with its Location, not Immunization.location

  @item:VC-REG-01 @item:VC-REG-02
  Scenario: The same vaccination sent twice by the software is stored once
    When the professional records a vaccination:
      | vaccine             | Hepatitis B vaccine       |
      | given on            | 2026-11-20T10:00:00+01:00 |
      | business identifier | vendor-key-2026-0001      |
    And the professional records the same vaccination again
    Then the register holds exactly one vaccination with that business identifier
    And every create the software sent carried the same business identifier

  @item:VC-REG-03
  Scenario: A patient known by a BIS number
    Given the patient is Ivan Bisnummer
    When the professional records a vaccination:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And the patient is identified by SSIN in patient.identifier
    And it conforms to be-vaccination

  @item:VC-REG-08
  Scenario: A vaccination reported by the patient, whose exact date is unknown
    When the professional records a vaccination:
      | vaccine       | Tetanus vaccine |
      | reported date | spring 2016     |
    Then the software reported the vaccination as recorded
    And it conforms to be-vaccination
    And the occurrence is sent as occurrenceString "spring 2016"
    And the values equal what the professional entered

  @item:VC-REG-09
  Scenario: A reaction after the vaccination, with its date
    When the professional records a vaccination:
      | vaccine     | Influenza vaccine         |
      | given on    | 2026-11-20T10:00:00+01:00 |
      | reaction on | 2026-11-21                |
      | reaction    | fever                     |
    Then the software reported the vaccination as recorded
    And it conforms to be-vaccination
    And the reaction carries its date and refers to a contained Observation of the reaction
    And the values equal what the professional entered
