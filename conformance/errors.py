"""One exception family for everything a user can act on.

Each error carries a message meant for the person at the terminal and the exit code the CLI uses
for it: 1 conformance failures, 2 usage or configuration errors, 3 target unreachable.
"""

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class ConformanceError(Exception):
    """Base of every error the harness reports to its user as one line on stderr."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(ConformanceError):
    """Bad configuration or usage: a wrong option, file, profile URL or missing package."""

    exit_code = EXIT_USAGE


class PackageError(ConfigurationError):
    """A FHIR package could not be found, downloaded, unpacked or loaded."""


class NotAvailableError(ConfigurationError):
    """A command that this version of the harness does not provide yet."""


class TargetUnreachableError(ConformanceError):
    """The endpoint, registry or hook could not be reached."""

    exit_code = EXIT_UNREACHABLE
