"""A ``curl`` command that replays a recorded request, credentials left out.

The ``Authorization`` header becomes ``-H "Authorization: Bearer $TOKEN"`` (double quotes, so the
shell fills in ``$TOKEN``); cookies, proxy credentials and headers curl sets itself are dropped. JSON
bodies are sent from a quoted here-document, so nothing in them is expanded by the shell. A binary body
(a sealed message) is not reproduced: the command reads it from ``body.bin``, as a note above it says.
"""

from __future__ import annotations

import shlex

import orjson

from conformance.traffic.recorder import Exchange

__all__ = ["curl_command"]

_DROPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "dpop",
        "host",
        "content-length",
        "connection",
        "accept-encoding",
        "transfer-encoding",
        "user-agent",
    }
)


def curl_command(exchange: Exchange, *, insecure: bool = False) -> str:
    """The shell command (bash) that sends the same request again, with ``$TOKEN`` as the credential."""
    first = ["curl", "--silent", "--show-error", "--include"]
    if insecure:
        first.append("--insecure")
    first += ["--request", exchange.method, shlex.quote(exchange.url)]
    lines = [" ".join(first)]
    authorization = exchange.request_header("authorization")
    if authorization is not None:
        scheme = authorization.strip().partition(" ")[0] or "Bearer"
        lines.append(f'--header "Authorization: {scheme} $TOKEN"')
    for name, value in exchange.request_headers:
        if name.lower() not in _DROPPED:
            lines.append("--header " + shlex.quote(f"{name}: {value}"))
    body = exchange.request_body
    here_document = note = None
    if isinstance(body, dict | list):
        lines.append("--data-binary @- <<'JSON'")
        here_document = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\nJSON"
    elif isinstance(body, bytes) and body:
        try:
            lines.append("--data-binary " + shlex.quote(body.decode("utf-8")))
        except UnicodeDecodeError:
            note = (
                f"# the request body is {len(body)} bytes of binary content, not shown: save it as body.bin"
            )
            lines.append("--data-binary @body.bin")
    command = " \\\n  ".join(lines)
    if note:
        command = f"{note}\n{command}"
    return f"{command}\n{here_document}" if here_document else command
