"""The ``http`` adapter: POST each intent to the vendor's hook URL and read back an AdapterResult.

``HttpHookAdapter(url, timeout)`` sends the intent's JSON (``intent.schema.json``) as the body of a
``POST`` with ``Content-Type: application/json`` and expects a 2xx answer whose body is an
``AdapterResult`` JSON object (the same file's ``$defs/AdapterResult``). A hook that cannot be reached
or does not answer in time raises ``TargetUnreachableError``; a non-2xx answer, a body that is not JSON
or not a valid AdapterResult raises ``ConformanceError``. Every message names the hook URL.
"""

from __future__ import annotations

import json

import httpx

from conformance.adapters.intents import AdapterResult, Intent
from conformance.errors import ConfigurationError, ConformanceError, TargetUnreachableError

__all__ = ["HttpHookAdapter"]


class HttpHookAdapter:
    """Carries out intents by POSTing them to a vendor's hook (see the module docstring)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        """``url``: the hook (``http://`` or ``https://``); ``timeout``: seconds to wait for each answer."""
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the http adapter needs an http:// or https:// hook URL, not {url!r}")
        if timeout <= 0:
            raise ConfigurationError(f"the hook timeout must be positive, not {timeout!r}")
        self.url = url
        self.timeout = timeout
        self.http = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self) -> HttpHookAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def perform(self, intent: Intent) -> AdapterResult:
        """POST ``intent`` to the hook and return its (schema-checked) answer."""
        body = intent.to_json()
        try:
            response = self.http.post(
                self.url,
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        except httpx.TimeoutException as error:
            raise TargetUnreachableError(
                f"the vendor hook {self.url} did not answer {intent.action} within {self.timeout:g} s"
            ) from error
        except httpx.TransportError as error:
            raise TargetUnreachableError(f"the vendor hook {self.url} is unreachable: {error}") from error
        if not 200 <= response.status_code < 300:
            raise ConformanceError(
                f"the vendor hook {self.url} answered {intent.action} with HTTP {response.status_code}: "
                f"{_tail(response.text)}"
            )
        try:
            data = response.json()
        except ValueError as error:
            raise ConformanceError(
                f"the vendor hook {self.url} answered {intent.action} with something that is not JSON: "
                f"{_tail(response.text)}"
            ) from error
        try:
            return AdapterResult.from_json(data)
        except ConfigurationError as error:
            raise ConformanceError(
                f"the vendor hook {self.url} answered {intent.action}: {error.message}"
            ) from error


def _tail(text: str, limit: int = 300) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else "..." + text[-limit:]) if text else "(empty body)"
