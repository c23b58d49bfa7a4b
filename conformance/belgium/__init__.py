"""Belgian rules that FHIR profiles cannot express: identifiers and their naming systems.

``identifiers`` holds the hl7-be naming-system URLs (SSIN, NIHDI, CBE, CNK), one small check function
per identifier kind (format, plausible birth date for SSIN/BIS, modulo-97 check digits), a registry from
naming-system URL to check used by the validator, and helpers that make valid-checksum test values for
the simulator's fictitious patients, professionals and organisations.
"""

from conformance.belgium.identifiers import IDENTIFIER_CHECKS, check_identifier

__all__ = ["IDENTIFIER_CHECKS", "check_identifier"]
