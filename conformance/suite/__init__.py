"""The evaluation suite's machinery: the endpoint, the software under test, the checks, the run.

``plugin`` is the pytest plugin the Gherkin suite (``features/``, ``steps/``) runs with: options,
the simulator, the adapter under test. ``software`` drives the vendor software through its adapter
and keeps what the register received; ``checks`` are the named judgements the Then-steps make;
``vocabulary`` turns the scenarios' words into IG codes; ``results`` collects each scenario's outcome
and evidence; ``runner`` runs the whole suite for ``vaccicard-conformance run``.
"""
