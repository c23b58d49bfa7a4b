"""The recording proxy: vendor software talks to the acceptance API through it, and every exchange is kept.

``RecordingProxy`` (``server``) listens on 127.0.0.1, forwards requests and answers unchanged (bodies
byte for byte, streamed), records each exchange in a ``TrafficRecorder`` with the operation, subject and
validation issues the Then-steps filter on, and answers 502/504 with an OperationOutcome when the
upstream cannot be reached. ``cli.proxy`` is the ``vaccicard-conformance proxy`` command.
"""

from conformance.proxy.server import DEFAULT_RECORD_LIMIT, HOP_BY_HOP, RecordingProxy

__all__ = ["DEFAULT_RECORD_LIMIT", "HOP_BY_HOP", "RecordingProxy"]
