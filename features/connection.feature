@area:CON
Feature: Connection and authentication
  Before anything else, the software must reach the register, log the professional in through
  eHealth IAM Connect (realm healthcare, authorisation code with PKCE, then a token exchange for
  Vaccicard), keep that login alive, and stop cleanly when the register refuses the professional.

  Background:
    Given the register is Vaccicard
    And the patient is Jean Exemple

  @item:VC-CON-01
  Scenario: The software uses only what the CapabilityStatement offers
    Given Luc Exemplaire is logged in to the software
    When the professional opens the vaccination history of the patient
    Then the software showed the history
    And every request of the software used an interaction and search parameters the CapabilityStatement states

  @item:VC-CON-02 @item:VC-CON-03 @item:VC-SEC-02
  Scenario: The professional logs in through IAM Connect and the token is exchanged for Vaccicard
    Given Luc Exemplaire is logged in to the software
    And the professional's IAM Connect session has ended
    When the professional records a vaccination:
      | vaccine  | Measles vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And the software logged in with the authorisation code flow and PKCE S256
    And the software exchanged the token for one meant for Vaccicard
    And every request to the register carried that token in the Authorization header only

  @item:VC-CON-04
  Scenario: An expired token is renewed and the pending vaccination is recorded once
    Given Luc Exemplaire is logged in to the software
    And the professional has opened the vaccination history of the patient
    And every token the software holds has expired
    When the professional records a vaccination:
      | vaccine  | Measles vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software reported the vaccination as recorded
    And the register answered the software 401 because the token had expired
    And the software renewed its token
    And the register holds exactly one vaccination with that business identifier

  @item:VC-CON-05
  Scenario: A professional whose discipline may not record vaccinations is stopped cleanly
    Given Marc Fictif is logged in to the software
    When the professional records a vaccination:
      | vaccine  | Tetanus vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the register refused with rule discipline-may-not-record
    And the software showed the register's reason to the user
    And the software did not report the vaccination as recorded
    And the software did not send the refused request again

  @item:VC-CON-05
  Scenario: A professional whose discipline is not recognised is stopped cleanly
    Given Thomas Nonreconnu is logged in to the software
    When the professional opens the vaccination history of the patient
    Then the register refused with rule discipline-not-recognised
    And the software showed the register's reason to the user
    And the software showed no vaccination
    And the software did not send the refused request again

  @item:VC-SEC-03
  Scenario: The software refuses a register whose certificate it cannot verify
    Given Luc Exemplaire is logged in to the software
    And the register presents a TLS certificate that no trusted authority issued
    When the professional records a vaccination:
      | vaccine  | Measles vaccine           |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software did not report the vaccination as recorded
    And the register received nothing over that connection
