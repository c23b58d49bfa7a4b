"""The ``command`` adapter: run the vendor's command with the intent on stdin, read the answer on stdout.

``CommandAdapter(argv, timeout)`` runs ``argv`` (no shell) once per intent, writes the intent's JSON
(``intent.schema.json``) on its stdin and expects, on exit status 0, one ``AdapterResult`` JSON object
on stdout (the same file's ``$defs/AdapterResult``). A command that cannot be started raises
``ConfigurationError``; one that runs past ``timeout`` is killed and raises ``TargetUnreachableError``;
a non-zero exit or an answer that is not a valid AdapterResult raises ``ConformanceError``. Every message
names the command and ends with the tail of its stderr.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence

from conformance.adapters.intents import AdapterResult, Intent
from conformance.errors import ConfigurationError, ConformanceError, TargetUnreachableError

__all__ = ["CommandAdapter"]

STDERR_TAIL = 500
"""How many characters of the command's stderr an error message quotes."""


class CommandAdapter:
    """Carries out intents by running a vendor's command (see the module docstring)."""

    def __init__(self, argv: Sequence[str] | str, timeout: float = 60.0) -> None:
        """``argv``: the command and its arguments (a string is split like a POSIX shell would)."""
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise ConfigurationError("the command adapter needs a command to run")
        if timeout <= 0:
            raise ConfigurationError(f"the command timeout must be positive, not {timeout!r}")
        self.timeout = timeout

    @property
    def command(self) -> str:
        """The command as one would type it."""
        return shlex.join(self.argv)

    def perform(self, intent: Intent) -> AdapterResult:
        """Run the command with ``intent`` on stdin and return its (schema-checked) answer."""
        body = json.dumps(intent.to_json())
        try:
            done = subprocess.run(
                self.argv,
                input=body,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as error:
            raise ConfigurationError(f"the vendor command {self.command} cannot be found: {error}") from error
        except PermissionError as error:
            raise ConfigurationError(f"the vendor command {self.command} cannot be run: {error}") from error
        except subprocess.TimeoutExpired as error:
            raise TargetUnreachableError(
                f"the vendor command {self.command} did not finish {intent.action} within {self.timeout:g} s"
                f"{_stderr(error.stderr)}"
            ) from error
        if done.returncode != 0:
            raise ConformanceError(
                f"the vendor command {self.command} exited with status {done.returncode} on "
                f"{intent.action}{_stderr(done.stderr)}"
            )
        try:
            data = json.loads(done.stdout)
        except ValueError as error:
            raise ConformanceError(
                f"the vendor command {self.command} answered {intent.action} with something that is not "
                f"JSON on stdout: {_tail(done.stdout)}{_stderr(done.stderr)}"
            ) from error
        try:
            return AdapterResult.from_json(data)
        except ConfigurationError as error:
            raise ConformanceError(
                f"the vendor command {self.command} answered {intent.action}: {error.message}"
                f"{_stderr(done.stderr)}"
            ) from error


def _tail(text: str | bytes | None, limit: int = STDERR_TAIL) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip()
    return repr(text if len(text) <= limit else "..." + text[-limit:]) if text else "(nothing)"


def _stderr(text: str | bytes | None) -> str:
    return f"; stderr: {_tail(text)}"
