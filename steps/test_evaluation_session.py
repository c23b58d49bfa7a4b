"""The evaluation session: every feature of ``features/``, one ``scenarios()`` call per feature file."""

from pytest_bdd import scenarios

scenarios("../features/connection.feature")
scenarios("../features/recording.feature")
scenarios("../features/not_done.feature")
scenarios("../features/history.feature")
scenarios("../features/correction.feature")
scenarios("../features/cancellation.feature")
scenarios("../features/rejections.feature")
scenarios("../features/resilience.feature")
scenarios("../features/access.feature")
scenarios("../features/encryption.feature")
