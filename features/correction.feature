@area:COR
Feature: Correction
  A correction updates the same record: it keeps the business identifier and the patient, names the
  version the software read with If-Match, and never creates a second record.

  Background:
    Given the register is Vaccicard
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple
    And the professional recorded a vaccination:
      | vaccine             | Hepatitis B vaccine       |
      | given on            | 2026-11-20T10:00:00+01:00 |
      | CNK                 | 1234567                   |
      | lot number          | AB1234                    |
      | lot expiry          | 2027-06-30                |
      | business identifier | vendor-key-cor-1          |

  @item:VC-COR-01 @item:VC-COR-02 @item:VC-COR-04
  Scenario: The professional corrects the lot number
    When the professional corrects that vaccination:
      | lot number | ZZ9999     |
      | lot expiry | 2028-01-31 |
    Then the software reported the correction as done
    And the software updated the record with PUT on the same record
    And every update carried If-Match with the version the software last read
    And the update kept the business identifier and the patient
    And the update conforms to be-vaccination
    And the register holds exactly one vaccination with that business identifier
    And the register's current version has the corrected values

  @item:VC-COR-03
  Scenario: Someone else changed the record in the meantime
    Given the register will answer the next update with 412 because the record changed
    When the professional corrects that vaccination:
      | given on | 2026-11-20T09:30:00+01:00 |
    Then the software read the record again after the 412 before writing again
    And every update carried If-Match with the version the software last read
    And the register holds exactly one vaccination with that business identifier
