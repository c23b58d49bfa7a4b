"""Pseudonymise personal data and credentials in everything a report directory holds.

A ``Redactor`` replaces, in free text, URLs, headers and JSON or form bodies:

* SSINs and BIS numbers (11 digits with valid check digits, bare or written ``58.03.21-001.26``) by
  ``SSIN-<8 hex>`` / ``BIS-<8 hex>``, computed from the digits alone, so both spellings of a number
  map to the same pseudonym;
* person names (the given and family names of the test patients and professionals, plus any configured
  names; whole words, case- and accent-insensitive) by ``NAME-<8 hex>``;
* credentials by ``TOKEN-<8 hex>``: ``Authorization``/``Proxy-Authorization`` values (the scheme stays),
  cookies, headers named like tokens, secrets or API keys, JWT-shaped strings, ``Bearer``/``Basic``
  credentials quoted in text, and the OAuth fields ``access_token``, ``refresh_token``, ``id_token``,
  ``client_assertion``, ``subject_token``, ``actor_token``, ``code_verifier``, ``client_secret``,
  ``assertion``, ``password`` and ``code`` in JSON, form bodies, query strings and text. ``code`` is a
  credential in form bodies, in queries that also carry ``state``, and in JSON objects that are OAuth
  messages (with ``grant_type``, ``code_verifier`` or ``redirect_uri``); elsewhere it is FHIR's
  ``code`` and stays.

The hex digits are the first 8 of ``HMAC-SHA256(secret, kind:value)``: the same patient gets the same
pseudonym throughout one run, and nobody without the secret can test a guess. ``Redactor.for_run()``
draws a random secret that is never written anywhere. Redacting twice changes nothing.
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import replace
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import orjson

from conformance.belgium.identifiers import check_ssin
from conformance.traffic.recorder import SECRET_FIELDS, Exchange

__all__ = ["PSEUDONYM", "Redactor", "simulator_names"]

PSEUDONYM = re.compile(r"(?:SSIN|BIS|NAME|TOKEN)-[0-9a-f]{8}")
"""What a pseudonym looks like."""

_SECRET_FIELDS = frozenset(SECRET_FIELDS)
_OAUTH_MARKERS = frozenset({"grant_type", "code_verifier", "redirect_uri"})
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "dpop", "x-api-key"}
)
_SEP = r"[.\- ]?"
_SSIN_RE = re.compile(rf"(?<!\d)\d{{2}}{_SEP}\d{{2}}{_SEP}\d{{2}}{_SEP}\d{{3}}{_SEP}\d{{2}}(?!\d)")
_JWT_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?"
)
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic|dpop)(\s+)((?=[A-Za-z]*[0-9._~+/=:-])[A-Za-z0-9._~+/=:-]{16,})")
_FIELDS = "|".join(sorted(_SECRET_FIELDS))
_FORM_RE = re.compile(rf"(?<![\w-])({_FIELDS})=([^&\s#\"']+)|(?:(?<=[?&])|^)(code)=([^&\s#\"']+)")
_JSONISH_RE = re.compile(rf'"({_FIELDS})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')
_MEMO_LENGTH = 512
_MEMO_ENTRIES = 200_000
_ASSIGN_RE = re.compile(r"(?i)^--?[\w-]*(token|secret|password|assertion|api-key)[\w-]*$")
_ASSIGN_INLINE_RE = re.compile(r"(?i)^(--?[\w-]*(?:token|secret|password|assertion|api-key)[\w-]*=)(.+)$")


def _fold(text: str) -> str:
    """Case- and accent-insensitive key of a name."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def simulator_names() -> list[str]:
    """Given and family names of every patient and professional of the simulator's test data."""
    from conformance.simulator.testdata import TestData  # the simulator package is heavy: import on use

    data = TestData.load()
    people = [*data.patients, *data.professionals]
    return [name for person in people for name in (person.given_name, person.family_name)]


class Redactor:
    """Replaces personal data and credentials by stable, keyed pseudonyms."""

    def __init__(self, secret: bytes, names: Iterable[str] = ()) -> None:
        """``secret`` keys the pseudonyms (keep it out of every file); ``names`` are the names to hide."""
        if len(secret) < 16:
            raise ValueError("the redaction secret must be at least 16 bytes")
        self._secret = secret
        self._memo: dict[str, str] = {}  # FHIR bodies repeat the same strings thousands of times
        self._pseudonyms: dict[str, str] = {}
        variants: set[str] = set()
        for name in names:
            name = unicodedata.normalize("NFC", name.strip())
            if len(name) >= 2:
                variants.update({name, unicodedata.normalize("NFC", _fold(name))})
        alternatives = sorted(variants, key=lambda n: (-len(n), n))
        pattern = "|".join(r"\s+".join(re.escape(word) for word in v.split()) for v in alternatives)
        self._names = re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE) if pattern else None

    @classmethod
    def for_run(cls, extra_names: Iterable[str] = ()) -> Redactor:
        """A redactor with a fresh random secret, hiding the test-data names and ``extra_names``."""
        return cls(secrets.token_bytes(32), [*simulator_names(), *extra_names])

    def __repr__(self) -> str:
        return "Redactor(<secret>)"

    # -- pseudonyms ---------------------------------------------------------------------------------

    def pseudonym(self, kind: str, value: str) -> str:
        """``KIND-<8 hex>`` for ``value``; the same value always gives the same pseudonym."""
        key = f"{kind}:{value}"
        known = self._pseudonyms.get(key)
        if known is None:
            known = self._pseudonyms[key] = (
                f"{kind}-{hmac.new(self._secret, key.encode(), sha256).hexdigest()[:8]}"
            )
        return known

    def token(self, value: str) -> str:
        """The pseudonym of a credential (a pseudonym or empty value is kept as it is)."""
        value = value.strip()
        if not value or PSEUDONYM.fullmatch(value):
            return value
        return self.pseudonym("TOKEN", value)

    def _ssin(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if check_ssin(digits) is not None:
            return match.group(0)
        return self.pseudonym("BIS" if int(digits[2:4]) >= 20 else "SSIN", digits)

    def _name(self, match: re.Match[str]) -> str:
        return self.pseudonym("NAME", " ".join(_fold(match.group(0)).split()))

    # -- text, URLs, headers ----------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """Free text with every SSIN, BIS, name and credential replaced."""
        if len(value) < 2:
            return value
        known = self._memo.get(value)
        if known is not None:
            return known
        result = self._text(value)
        if len(value) <= _MEMO_LENGTH and len(self._memo) < _MEMO_ENTRIES:
            self._memo[value] = result
        return result

    def _text(self, value: str) -> str:
        if "eyJ" in value:
            value = _JWT_RE.sub(lambda m: self.token(m.group(0)), value)
        value = _SCHEME_RE.sub(lambda m: m.group(1) + m.group(2) + self.token(m.group(3)), value)
        if "=" in value:
            value = _FORM_RE.sub(self._form_pair, value)
        if '"' in value:
            value = _JSONISH_RE.sub(lambda m: f'"{m.group(1)}"{m.group(2)}"{self.token(m.group(3))}"', value)
        value = _SSIN_RE.sub(self._ssin, value)
        if self._names is not None:
            value = self._names.sub(self._name, value)
        return value

    def _form_pair(self, match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        secret = match.group(2) or match.group(4)
        return f"{name}={self.token(unquote(secret))}"

    def url(self, value: str) -> str:
        """A URL with credentials in the user info, and personal data or credentials in path and query, replaced."""
        try:
            parts = urlsplit(value)
        except ValueError:
            return self.text(value)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user, colon, password = userinfo.partition(":")
            netloc = f"{self.text(user)}{colon}{self.token(password) if colon else ''}@{host}"
        path = "/".join(self._segment(segment) for segment in parts.path.split("/"))
        return urlunsplit((parts.scheme, netloc, path, self.query(parts.query), self.query(parts.fragment)))

    def _segment(self, segment: str) -> str:
        decoded = unquote(segment)
        redacted = self.text(decoded)
        return segment if redacted == decoded else quote(redacted, safe=":@!$&'()*+,;=")

    def query(self, value: str, *, form: bool = False) -> str:
        """A query string or form body with its secret fields and personal data replaced."""
        if not value:
            return value
        pairs = parse_qsl(value, keep_blank_values=True)
        names = {name for name, _ in pairs}
        code_is_secret = form or "state" in names or "grant_type" in names
        redacted = [
            (
                self.text(name),
                self.token(text)
                if name in _SECRET_FIELDS or (name == "code" and code_is_secret)
                else self.text(text),
            )
            for name, text in pairs
        ]
        if redacted == pairs:
            return value
        return urlencode(redacted, quote_via=quote, safe="|:,")

    def header(self, name: str, value: str) -> str:
        """A header value with credentials (whole, or per cookie) and personal data replaced."""
        lower = name.lower()
        if lower in ("authorization", "proxy-authorization"):
            scheme, space, credentials = value.strip().partition(" ")
            return (
                f"{scheme} {self.token(credentials)}" if space and credentials.strip() else self.token(value)
            )
        if lower == "cookie":
            return "; ".join(self._cookie(part) for part in value.split(";"))
        if lower == "set-cookie":
            first, sep, rest = value.partition(";")
            return self._cookie(first) + sep + rest
        if lower in _SECRET_HEADERS or any(
            word in lower for word in ("token", "secret", "api-key", "session")
        ):
            return self.token(value)
        return self.text(value)

    def _cookie(self, part: str) -> str:
        cookie_name, equals, value = part.strip().partition("=")
        return f"{cookie_name}={self.token(value)}" if equals else self.token(cookie_name)

    # -- JSON and bodies ----------------------------------------------------------------------------------

    def json(self, value: Any, *, secret_keys: bool = True) -> Any:
        """A redacted copy of a JSON value (any depth); with ``secret_keys``, OAuth fields become tokens."""
        if not isinstance(value, dict | list | tuple):
            return self._scalar(value)
        root: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
        stack: list[tuple[Any, Any]] = [(value, root)]
        while stack:  # iterative, so no depth is too deep
            source, target = stack.pop()
            if isinstance(source, dict):
                oauth = secret_keys and not _OAUTH_MARKERS.isdisjoint(source)
                for key, child in source.items():
                    secret = secret_keys and (key in _SECRET_FIELDS or (key == "code" and oauth))
                    target[self.text(str(key))] = self._copy(child, secret, stack)
            else:
                target.extend(self._copy(child, False, stack) for child in source)
        return root

    def _copy(self, child: Any, secret: bool, stack: list[tuple[Any, Any]]) -> Any:
        if isinstance(child, dict | list | tuple):
            copy: dict[str, Any] | list[Any] = {} if isinstance(child, dict) else []
            stack.append((child, copy))
            return copy
        if secret and isinstance(child, str):
            return self.token(child)
        return self._scalar(child)

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int) and not isinstance(value, bool) and 10**10 <= value < 10**11:
            redacted = _SSIN_RE.sub(self._ssin, str(value))
            return value if redacted == str(value) else redacted
        return value

    def body(self, body: Any, content_type: str | None = None) -> Any:
        """A redacted body: JSON (object or array), form or text bytes; other bytes are kept as they are."""
        if body is None:
            return None
        if isinstance(body, dict | list):
            return self.json(body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body  # binary (e.g. a sealed message): nothing readable to redact
        if "x-www-form-urlencoded" in (content_type or "").lower():
            return self.query(text, form=True).encode()
        return self.text(text).encode()

    def exchange(self, exchange: Exchange) -> Exchange:
        """A copy of the exchange with personal data and credentials replaced everywhere."""
        return replace(
            exchange,
            url=self.url(exchange.url),
            path=self.url(exchange.path),
            query=self.query(exchange.query),
            request_headers=tuple((n, self.header(n, v)) for n, v in exchange.request_headers),
            response_headers=tuple((n, self.header(n, v)) for n, v in exchange.response_headers),
            request_body=self.body(exchange.request_body, exchange.request_header("content-type")),
            response_body=self.body(exchange.response_body, exchange.response_header("content-type")),
            subject=self.text(exchange.subject) if exchange.subject else exchange.subject,
            validation=self.json(exchange.validation, secret_keys=False),
            error=self.text(exchange.error) if exchange.error else exchange.error,
            tags=self.json(exchange.tags),
        )

    # -- the report ------------------------------------------------------------------------------------------

    def command_line(self, arguments: Iterable[str]) -> list[str]:
        """Command-line arguments with the values of token, secret and password options replaced."""
        result: list[str] = []
        hide_next = False
        for argument in arguments:
            inline = _ASSIGN_INLINE_RE.match(argument)
            if hide_next:
                result.append(self.token(argument))
            elif inline:
                result.append(inline.group(1) + self.token(inline.group(2)))
            else:
                result.append(self.text(argument))
            hide_next = bool(_ASSIGN_RE.match(argument))
        return result

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        """A redacted copy of report.json; the catalogue's titles, descriptions and IG links stay as they are."""
        result = orjson.loads(orjson.dumps(report))
        run = result["run"]
        run["target"]["url"] = self.url(run["target"]["url"])
        run["command_line"] = self.command_line(run["command_line"])
        for key in ("operator", "ticket", "adapter"):
            run[key] = self.json(run[key], secret_keys=False)
        for key in ("scenarios", "summary", "waivers", "baseline"):
            result[key] = self.json(result[key], secret_keys=False)
        for item in result["items"]:
            item["scenarios"] = [self.text(s) for s in item["scenarios"]]
            item["skip_reasons"] = [self.text(r) for r in item["skip_reasons"]]
        return result
