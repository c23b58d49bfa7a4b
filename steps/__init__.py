"""Step definitions of the evaluation session (pytest-bdd), grouped by domain.

Steps are thin: they turn the scenario's words into intents (``conformance.adapters.intents``), let
``software`` carry them out, and hand the resulting ``Action`` to the checks of
``conformance.suite.checks``. State passes between steps through fixtures and ``target_fixture``.
"""
