@area:REJ
Feature: Refusals by the register
  When the register refuses a write with an OperationOutcome, the software shows the reason in words
  the user understands, keeps what was entered so it can be fixed and sent again, and never shows the
  refused vaccination as recorded.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple

  @item:VC-REJ-01 @item:VC-REJ-02 @item:VC-REJ-03 @item:VC-SEC-01
  Scenario: A vaccination dated in the future is refused with 422, fixed and sent again
    When the professional records a vaccination:
      | vaccine             | Measles vaccine           |
      | given on            | 2099-01-01T10:00:00+01:00 |
      | business identifier | vendor-key-rej-1          |
    Then the register refused with rule occurrence-in-future
    And the software showed the register's reason to the user
    And the software did not report the vaccination as recorded
    And the software's messages do not quote the patient's SSIN
    When the professional fixes the date to 2026-11-20T10:00:00+01:00 and sends the vaccination again
    Then the software reported the vaccination as recorded
    And the register holds exactly one vaccination with that business identifier

  @item:VC-REJ-01 @item:VC-REJ-03
  Scenario: A write refused with 409
    Given the register will refuse the next create with 409 "a record with this identifier already exists"
    When the professional records a vaccination:
      | vaccine  | Hepatitis B vaccine       |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software showed the register's reason to the user
    And the software did not report the vaccination as recorded
    And the software did not send the refused request again

  @item:VC-REJ-01 @item:VC-REJ-03 @item:VC-SEC-01
  Scenario: A write refused with 403 for a patient without therapeutic relationship
    Given the patient is Lotte Zonderband
    When the professional records a vaccination:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the register refused with rule no-therapeutic-relationship
    And the software showed the register's reason to the user
    And the software did not report the vaccination as recorded
    And the software's messages do not quote the patient's SSIN
