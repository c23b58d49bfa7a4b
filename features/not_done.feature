@area:ND
Feature: Vaccination not given
  A vaccination that was not given is recorded too: status not-done and a reason from the value set
  the IG binds, without an administered product.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Noah Kindertest

  @item:VC-ND-01
  Scenario: The parents refuse the vaccination
    When the professional records a vaccination not given:
      | vaccine       | Measles and mumps and rubella vaccine |
      | kind          | refusal                               |
      | status reason | Patient Objection                     |
      | date          | 2026-11-20T10:00:00+01:00             |
    Then the software reported the vaccination as recorded
    And the register received exactly one Immunization
    And it conforms to be-vaccination
    And its status is not-done with the status reason "PATOBJ"
    And the status reason is in its bound value set

  @item:VC-ND-02
  Scenario: A contraindication: allergy to an ingredient of the vaccine
    When the professional records a vaccination not given:
      | vaccine       | Influenza vaccine         |
      | kind          | contraindication          |
      | status reason | ALLERGY                   |
      | date          | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And it conforms to be-vaccination
    And its status is not-done with the status reason "ALLERGY"
    And the status reason is in its bound value set
    And it names no administered product

  @item:VC-ND-03
  Scenario: The vaccine was out of stock
    When the professional records a vaccination not given:
      | vaccine       | Rotavirus vaccine         |
      | kind          | other                     |
      | status reason | Out of Stock              |
      | date          | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And it conforms to be-vaccination
    And its status is not-done with the status reason "OSTOCK"
    And the status reason is in its bound value set
