@area:ACC
Feature: Access refused
  The register refuses access to a patient's vaccinations without consent, without a therapeutic
  relationship, or for a patient it does not know; the software says so and shows nothing else.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software

  @item:VC-ACC-01
  Scenario: The patient has not given consent
    Given the patient is Paul Sansconsent
    When the professional opens the vaccination history of the patient
    Then the register refused with rule patient-no-consent
    And the software showed the register's reason to the user
    And the software showed no vaccination
    And the software did not send the refused request again

  @item:VC-ACC-02
  Scenario: There is no therapeutic relationship with the patient
    Given the patient is Lotte Zonderband
    When the professional opens the vaccination history of the patient
    Then the register refused with rule no-therapeutic-relationship
    And the software showed the register's reason to the user
    And the software showed no vaccination
    And the software did not send the refused request again

  @item:VC-ACC-03
  Scenario: The register does not know the patient
    Given the patient has the SSIN 85073003328, unknown to the register
    When the professional opens the vaccination history of the patient
    Then the register refused with rule patient-unknown
    And the software showed the register's reason to the user
    And the software showed no vaccination
    And the software asked the register about no other patient
