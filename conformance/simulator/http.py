"""Framework-free HTTP request and response objects shared by the simulator core and its adapters.

The simulator's handlers take an ``HttpRequest`` and return an ``HttpResponse``; servers (stdlib
``http.server``, ASGI) only translate to and from these. Header names in ``HttpRequest.headers`` are
lower case; query parameters keep every value in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["FORM_CONTENT_TYPE", "DropConnection", "HttpRequest", "HttpResponse", "form", "json_response"]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as the simulator core sees it (header names lower case)."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class HttpResponse:
    """One HTTP response produced by the simulator core.

    ``annotations`` never go on the wire: they tell the traffic recorder what the core knows about
    the exchange (operation, resource type and id, authenticated subject, validation issues, fault).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    annotations: dict[str, Any] = field(default_factory=dict)


class DropConnection(Exception):
    """Raised by the core to make the server close the connection without answering.

    Used for the "reset the connection" fault and for "commit, then drop the connection before
    answering". ``annotations`` are recorded with the exchange, as for a response.
    """

    def __init__(self, reason: str, annotations: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.annotations = annotations or {}


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    """A response whose body is ``obj`` as compact UTF-8 JSON (``Content-Type: application/json``)."""
    all_headers = {"Content-Type": "application/json"}
    if headers:
        all_headers.update(headers)
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, all_headers, body)


def form(request: HttpRequest) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body (first value wins); ValueError if it is not one."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise ValueError(f"expected Content-Type {FORM_CONTENT_TYPE}, found {content_type or 'none'}")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError("form body is not valid UTF-8") from error
    result: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        result.setdefault(name, value)
    return result
