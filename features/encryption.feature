@area:ETE
Feature: End-to-end encryption
  In the encrypted variant the vaccination is sealed before it leaves the practice. The software fetches
  the register's encryption token (ETK) from the eHealth ETK depot and checks it, signs the Immunization
  with the professional's key, encrypts it for the key of that ETK (AES-128-CBC, the content key sent
  with RSA PKCS#1 v1.5) and signs the envelope with the professional's authentication key. The register
  unseals it as eHealth does: both signatures valid, the same signer inside and out, a signing time
  within five minutes, signer certificates valid and trusted. It answers sealed for the professional.
  A message the register cannot unseal is refused with the rule of the check that failed. An ETK that
  fails its checks (its signer not trusted, a key shorter than 2048 bits) is not used: nothing is sealed
  for it or sent, and the professional is told why.

  Background:
    Given the register is Vaccicard
    And the register offers the encrypted variant, with its ETK in the ETK depot
    And Luc Exemplaire is logged in to the software
    And the patient is Jean Exemple

  @item:VC-ETE-01 @item:VC-ETE-02 @item:VC-ETE-03
  Scenario: The software seals the vaccination for Vaccicard with the ETK from the depot
    When the professional records a vaccination through the encrypted variant:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the register unsealed the message: both signatures valid, the same signer, signed within five minutes
    And the software fetched Vaccicard's ETK from the ETK depot before sealing
    And the message is sealed for the key of that ETK: AES-128-CBC, the key sent with RSA PKCS#1 v1.5
    And the software reported the vaccination as recorded
    And the register answered sealed by Vaccicard, and the software showed the record it created

  @item:VC-ETE-03 @item:VC-ETE-04
  Scenario: The sealed vaccination conforms to BeVaccination and is recorded once
    When the professional records a vaccination through the encrypted variant:
      | vaccine             | Measles and mumps and rubella vaccine |
      | given on            | 2026-11-20T10:00:00+01:00             |
      | CNK                 | 1234567                               |
      | lot number          | AB1234                                |
      | lot expiry          | 2027-06-30                            |
      | business identifier | vendor-key-2026-ete-1                 |
    Then the register unsealed the message: both signatures valid, the same signer, signed within five minutes
    And the unsealed Immunization conforms to be-vaccination
    And it names the patient by SSIN, the logged-in professional as recorder and one business identifier
    And the register holds exactly one vaccination with that business identifier
    And the software reported the vaccination as recorded

  @item:VC-ETE-04
  Scenario: The same sealed vaccination sent twice is stored once
    When the professional records a vaccination through the encrypted variant:
      | vaccine             | Hepatitis B vaccine       |
      | given on            | 2026-11-20T10:00:00+01:00 |
      | business identifier | vendor-key-2026-ete-2     |
    And the professional records the same vaccination again
    Then the register unsealed the message: both signatures valid, the same signer, signed within five minutes
    And the register holds exactly one vaccination with that business identifier
    And the software reported the vaccination as recorded

  @item:VC-ETE-01
  Scenario: The software refuses a Vaccicard ETK whose key is shorter than 2048 bits
    Given the ETK depot offers a Vaccicard ETK whose encryption key has only 1024 bits
    When the professional records a vaccination through the encrypted variant:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software fetched Vaccicard's ETK from the ETK depot
    And the software did not send the vaccination, sealed or in the clear
    And the software told the user the register's encryption key could not be trusted

  @item:VC-ETE-01
  Scenario: The software refuses a Vaccicard ETK signed outside the eHealth PKI
    Given the ETK depot offers a Vaccicard ETK signed by an authentication certificate outside the eHealth PKI
    When the professional records a vaccination through the encrypted variant:
      | vaccine  | Influenza vaccine         |
      | given on | 2026-11-20T10:00:00+01:00 |
    Then the software fetched Vaccicard's ETK from the ETK depot
    And the software did not send the vaccination, sealed or in the clear
    And the software told the user the register's encryption key could not be trusted
