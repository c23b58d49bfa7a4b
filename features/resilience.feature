@area:RES
Feature: Resilience
  Outages, throttling, timeouts and lost answers must neither lose nor duplicate a vaccination: the
  software retries with the same business identifier (or a conditional create) and the register ends
  with exactly one record.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple

  @item:VC-RES-01
  Scenario: The register is briefly unavailable (503)
    Given the register will answer the next create with 503 and Retry-After 1
    When the professional records a vaccination:
      | vaccine  | Measles vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And the software sent the create again with the same business identifier
    And the software waited as Retry-After said before sending again
    And the register holds exactly one vaccination with that business identifier

  @item:VC-RES-02
  Scenario: The register throttles the software (429)
    Given the register will answer the next create with 429 and Retry-After 1
    When the professional records a vaccination:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And the software waited as Retry-After said before sending again
    And the register holds exactly one vaccination with that business identifier

  @item:VC-RES-03
  Scenario: The register does not answer in time
    Given the register will not answer the next create in time
    When the professional records a vaccination:
      | vaccine  | Tetanus vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And every create the software sent carried the same business identifier
    And the register holds exactly one vaccination with that business identifier

  @item:VC-RES-04
  Scenario: The register stored the vaccination but the answer was lost
    Given the register will store the next create and then drop the connection
    When the professional records a vaccination:
      | vaccine  | Hepatitis B vaccine       |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And every create the software sent carried the same business identifier
    And the register holds exactly one vaccination with that business identifier

  @item:VC-RES-05 @item:VC-SEC-01
  Scenario: The register stays unavailable, then comes back
    Given the register will answer every create with 503 until it is back
    When the professional records a vaccination:
      | vaccine             | Measles vaccine           |
      | given on            | 2026-11-20T10:00:00+01:00 |
      | business identifier | vendor-key-res-5          |
    Then the software did not report the vaccination as recorded
    And the software told the user the register is unavailable
    And the software's messages do not quote the patient's SSIN
    When the register is back and the professional sends the pending vaccination again
    Then the software reported the vaccination as recorded
    And the register holds exactly one vaccination with that business identifier
