@area:CAN
Feature: Cancellation
  A record made in error is cancelled by an update to status entered-in-error, never deleted; the
  history then no longer counts it as given.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple
    And the professional recorded a vaccination:
      | vaccine             | Influenza vaccine         |
      | given on            | 2026-11-20T10:00:00+01:00 |
      | business identifier | vendor-key-can-1          |

  @item:VC-CAN-01 @item:VC-CAN-02
  Scenario: The professional cancels a vaccination recorded for the wrong patient
    When the professional cancels that vaccination because "recorded for the wrong patient"
    Then the software reported the cancellation as done
    And the software did not send DELETE
    And the software updated the record to entered-in-error with If-Match
    And the update kept the business identifier and the patient
    And the update conforms to be-vaccination

  @item:VC-CAN-03
  Scenario: After the cancellation the history no longer counts the vaccination
    Given the professional cancelled that vaccination because "duplicate entry"
    When the professional opens the vaccination history of the patient
    Then the software showed the history
    And the cancelled vaccination is not shown as given
