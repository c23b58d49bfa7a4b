"""Traffic capture: every exchange the endpoint (simulator or recording proxy) sees, with secrets masked.

The Then-steps judge the vendor software by what it actually sent: ``TrafficRecorder`` keeps each
``Exchange`` (method, URL, headers, bodies, timing, authenticated subject, operation, validation issues,
injected faults), answers queries such as "the creates received for this patient since the scenario
began", and writes NDJSON evidence. Tokens, client assertions and other credentials are replaced by
stable fingerprints when recorded; personal data is left for the report to redact.
"""

from conformance.traffic.recorder import (
    OPERATIONS,
    SECRET_FIELDS,
    SECRET_HEADERS,
    Exchange,
    TrafficRecorder,
    classify,
    fingerprint,
    load_ndjson,
    mask_secrets,
)

__all__ = [
    "OPERATIONS",
    "SECRET_FIELDS",
    "SECRET_HEADERS",
    "Exchange",
    "TrafficRecorder",
    "classify",
    "fingerprint",
    "load_ndjson",
    "mask_secrets",
]
