"""vaccicard-conformance: the conformance suite and evaluation harness for Vaccicard integrations.

The library lives in sub-packages: ``fhir`` (packages, definitions, validator), ``belgium`` (Belgian
identifier checks), and, as they land, ``adapters``, ``simulator``, ``traffic``, ``live``, ``etee`` and
``report``. ``cli`` is the command line on top of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vaccicard-conformance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
