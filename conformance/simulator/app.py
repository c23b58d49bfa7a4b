"""The simulator assembled: FHIR API, IAM Connect, register, faults and traffic capture behind one ``handle``.

``Simulator`` builds the parts from a package set (or a ready ``Validator``): the test data and their
keys, ``IamConnect`` under ``/auth``, the ``ImmunizationStore`` (in memory, or a SQLite file with
``db_path``), a ``FaultPlan``, a ``TrafficRecorder`` and the ``FhirApi`` under the configured FHIR base
(``/fhir``). ``handle(request)`` routes one ``HttpRequest``:

* ``/auth/...`` to IAM Connect, ``/fhir/...`` to the FHIR API, ``/admin/...`` to the admin API, anything
  else to a 404 OperationOutcome;
* every exchange but the admin API's is recorded in ``traffic`` (method, URL, headers, bodies, timing,
  the subject, operation and validation issues the core annotated, and the error for a dropped
  connection or a transport refusal); the recorder replaces tokens and client assertions by
  fingerprints before anything is stored. Admin calls are the harness's control channel, not the
  vendor's traffic, so they are not recorded (polling ``/admin/traffic`` would otherwise feed itself).

In process, tests drive it directly: ``sim.faults.add(Fault.status_error(503), "create", times=2)``,
``sim.reset()`` (empty register, no traffic, no pending faults), ``sim.traffic.exchanges(...)``.
Over HTTP, the admin API does the same, behind its own bearer token (``admin_token``, generated when
not given; never the IAM tokens):

* ``POST /admin/faults``: one fault or a list, in the ``FaultPlan`` JSON shape
  (``{"operation": "create", "times": 2, "kind": "status", "status": 503}``); answers the pending plan;
* ``GET /admin/faults``: the pending plan; ``DELETE /admin/faults``: clear it;
* ``POST /admin/reset``: empty register, traffic and faults;
* ``POST /admin/expire-tokens``: every access token issued so far is expired (``IamConnect.expire_tokens``);
* ``GET /admin/traffic?since=N[&operation=create][&method=POST]``: ``{"mark": M, "exchanges": [...]}``
  in ``Exchange.to_json`` shape, ``M`` being the mark to pass as ``since`` next time;
* ``GET /admin/health``: ``{"status": "ok", ...}``.

The public base URL (``base_url``) is what tokens name as issuer and what ``Location`` headers and
paging links use; a ``SimulatorServer`` tells the simulator the address it bound (``attach``) unless a
``base_url`` was given explicitly (a simulator behind a proxy).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from joserfc.jwk import RSAKey

from conformance.fhir.definitions import PackageSet
from conformance.fhir.terminology import Terminology
from conformance.fhir.validator import Validator
from conformance.simulator.config import SimulatorConfig
from conformance.simulator.etee_api import ETEE_CREATE_PATH, ETEE_PATH, EteeApi, EteeConfig, fhir_create
from conformance.simulator.etk_depot import ETK_DEPOT_PATH, REGISTER_CBE, EtkDepot
from conformance.simulator.faults import FaultPlan, InvalidFault
from conformance.simulator.fhir_api import FhirApi
from conformance.simulator.http import DropConnection, HttpRequest, HttpResponse
from conformance.simulator.iam import HEALTHCARE, M2M, REALMS, IamConnect
from conformance.simulator.store import ImmunizationStore
from conformance.simulator.testdata import KeyRing, TestData
from conformance.traffic.recorder import Exchange, TrafficRecorder

__all__ = [
    "ADMIN_PATH",
    "AUTH_PATH",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_EXCHANGES",
    "Simulator",
    "SimulatorKeys",
    "outcome_response",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_MAX_EXCHANGES = 10_000
"""Exchanges kept in memory by default (the newest); an evaluation scenario records a few hundred."""
AUTH_PATH = "/auth"
ADMIN_PATH = "/admin"
FHIR_JSON = "application/fhir+json"

_EXCHANGE_FIELDS = ("subject", "operation", "resource_type", "resource_id", "validation", "error")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatorKeys:
    """The keys a simulator generates at start-up: one per IAM realm, one per test organisation, and
    the ETK depot's test PKI (the register's and every test holder's eHealth certificates).

    Generating them takes about a second; tests share one set across simulators.
    """

    realms: Mapping[str, RSAKey]
    organisations: KeyRing
    etk_depot: EtkDepot

    @classmethod
    def generate(cls, testdata: TestData) -> SimulatorKeys:
        """Fresh RS256 realm keys and organisation certificates (in memory only)."""
        realms = {
            realm: RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
            for realm in REALMS
        }
        return cls(
            realms=realms, organisations=testdata.generate_keys(), etk_depot=EtkDepot.generate(testdata)
        )


class Simulator:
    """The simulated Vaccicard endpoint in process (see the module docstring)."""

    def __init__(
        self,
        packages: PackageSet | Validator,
        *,
        config: SimulatorConfig | None = None,
        db_path: str | Path | None = None,
        admin_token: str | None = None,
        base_url: str | None = None,
        testdata: TestData | None = None,
        keys: SimulatorKeys | None = None,
        traffic: TrafficRecorder | None = None,
        max_exchanges: int | None = DEFAULT_MAX_EXCHANGES,
    ) -> None:
        """Assemble a simulator.

        ``packages``: the FHIR package set (a Validator is built and the profile compiled now), or a
        ready Validator to share. ``db_path``: a SQLite file kept across restarts (None: in memory).
        ``admin_token``: the admin API's bearer token (None: a random one, see ``admin_token``).
        ``base_url``: the public URL when it differs from the address a server binds (a proxy in front).
        ``testdata``/``keys``/``traffic``: the shipped test data, fresh keys and an in-memory recorder
        keeping the newest ``max_exchanges`` exchanges (None: all) unless given; the bound keeps a
        long-running ``serve`` flat in memory (marks and ``since`` stay meaningful).
        """
        self.config = config or SimulatorConfig()
        if isinstance(packages, Validator):
            self.validator = packages
        else:
            self.validator = Validator(packages, terminology=Terminology(packages))
        self.validator.profile_plan(self.config.profile)  # compiled once, and an unknown profile fails now
        self.testdata = testdata or TestData.load()
        self.keys = keys or SimulatorKeys.generate(self.testdata)
        self.etk_depot = self.keys.etk_depot
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.store = ImmunizationStore(db_path, local_timezone=self.config.timezone)
        self.faults = FaultPlan()
        self.traffic = traffic or TrafficRecorder(
            fhir_base=self.config.fhir_base, max_exchanges=max_exchanges
        )
        self.started = datetime.now(UTC)
        self._explicit_base_url = base_url is not None
        self._lock = threading.Lock()
        self._build(base_url or DEFAULT_BASE_URL)

    def _build(self, base_url: str) -> None:
        base_url = base_url.rstrip("/")
        iam = IamConnect(
            self.testdata,
            base_url + AUTH_PATH,
            realm_keys=self.keys.realms,
            organisation_keys=self.keys.organisations,
        )
        fhir = FhirApi(
            validator=self.validator,
            store=self.store,
            iam=iam,
            testdata=self.testdata,
            faults=self.faults,
            config=self.config,
            base_url=base_url,
        )
        etee = EteeApi(
            self.etk_depot,
            fhir_create(fhir.handle, self.config.fhir_base + "/Immunization"),
            config=EteeConfig(clock=self.config.now, max_body_bytes=self.config.max_body_bytes),
        )
        with self._lock:
            self.base_url = base_url
            self.iam = iam
            self.fhir = fhir
            self.etee = etee

    # --- addresses --------------------------------------------------------------------------------

    def attach(self, base_url: str) -> None:
        """Take the public base URL a server listens on (ignored when ``base_url`` was given explicitly).

        IAM sessions and codes issued before are forgotten; the register, faults and traffic stay.
        """
        if self._explicit_base_url or base_url.rstrip("/") == self.base_url:
            return
        self._build(base_url)

    @property
    def fhir_base_url(self) -> str:
        """The FHIR base URL vendor software is configured with (``{base_url}/fhir``)."""
        return self.base_url + self.config.fhir_base

    @property
    def max_body_bytes(self) -> int:
        """The request body limit the transport enforces (``config.max_body_bytes``)."""
        return self.config.max_body_bytes

    def token_endpoint(self, realm: str = HEALTHCARE) -> str:
        """The realm's token endpoint."""
        return self.iam.endpoint(realm, "token")

    def describe(self) -> dict[str, Any]:
        """What a vendor developer needs to connect: URLs, clients, test professionals and patients."""
        data = self.testdata
        return {
            "fhir_base_url": self.fhir_base_url,
            "realms": {
                realm: {
                    "issuer": self.iam.issuer(realm),
                    "authorization_endpoint": self.iam.endpoint(realm, "auth"),
                    "token_endpoint": self.iam.endpoint(realm, "token"),
                    "jwks_uri": self.iam.endpoint(realm, "certs"),
                }
                for realm in (HEALTHCARE, M2M)
            },
            "vaccicard_audience": self.iam.vaccicard_audience,
            "healthcare_clients": [
                {"client_id": c.client_id, "redirect_uris": list(c.redirect_uris)}
                for c in data.healthcare_clients
            ],
            "organisations": [
                {"name": o.name, "cbe": o.cbe, "client_id": o.client_id} for o in data.organisations
            ],
            "professionals": [
                {
                    "name": f"{p.given_name} {p.family_name}",
                    "discipline": p.discipline,
                    "nihii11": p.nihii11,
                    "ssin": p.ssin,
                    "recognised": p.recognised,
                    "may_record": data.may_record(p),
                }
                for p in data.professionals
            ],
            "patients": [
                {
                    "name": f"{p.given_name} {p.family_name}",
                    "ssin": p.ssin,
                    "consent": p.consent,
                    "relationships": list(p.relationships),
                }
                for p in data.patients
            ],
        }

    def banner(self, *, show_admin_token: bool = True) -> list[str]:
        """The lines ``serve`` prints: URLs, admin token, test professionals and patients, how to log in."""
        info = self.describe()
        healthcare, m2m = info["realms"][HEALTHCARE], info["realms"][M2M]
        client = info["healthcare_clients"][0] if info["healthcare_clients"] else None
        database = (
            f"SQLite file {self.store.path}"
            if self.store.path is not None
            else "in memory (empty at each start)"
        )
        token = self.admin_token if show_admin_token else "(the one given with --admin-token)"
        lines = [
            "Vaccicard simulator: an assumed API with fictitious data, for development and evaluation runs",
            f"  FHIR base URL        {info['fhir_base_url']}",
            f"  IAM Connect realm {HEALTHCARE} (professionals: authorization code + PKCE S256, then token exchange)",
            f"    issuer             {healthcare['issuer']}",
            f"    authorization      {healthcare['authorization_endpoint']}",
            f"    token              {healthcare['token_endpoint']}",
            f"  IAM Connect realm {M2M} (organisations: client_credentials + private_key_jwt)",
            f"    token              {m2m['token_endpoint']}",
            f"  ETK depot            {self.base_url}{ETK_DEPOT_PATH}/etk?identifierType=CBE&identifierValue="
            f"{REGISTER_CBE}&applicationId=VACCICARD",
            f"  Encrypted create     POST {self.base_url}{ETEE_CREATE_PATH} (application/pkcs7-mime)",
            f"  Admin API            {self.base_url}{ADMIN_PATH}/{{faults,reset,traffic,health,expire-tokens}}",
            f"  Admin token          {token}",
            f"  Register             {database}",
            "",
            "Test professionals (choose one on the login page, or pass login_hint=<SSIN or NIHDI number>):",
        ]
        for pro in info["professionals"]:
            notes = [] if pro["recognised"] else ["not recognised"]
            if pro["recognised"] and not pro["may_record"]:
                notes.append("may not record vaccinations")
            lines.append(
                f"  {pro['name']:<24} {pro['discipline']:<11} NIHDI {pro['nihii11']}  SSIN {pro['ssin']}"
                + (f"  ({', '.join(notes)})" if notes else "")
            )
        lines += ["", "Test patients (fictitious SSINs):"]
        for patient in info["patients"]:
            notes = "consent" if patient["consent"] else "NO consent"
            related = len(patient["relationships"])
            lines.append(
                f"  {patient['name']:<24} SSIN {patient['ssin']}  {notes}, {related} professional(s) in care"
            )
        lines += [
            "",
            "How to log in (as vendor software does with IAM Connect):",
            f"  1. open {healthcare['authorization_endpoint']}?client_id="
            f"{client['client_id'] if client else '<client>'}&response_type=code&redirect_uri=<a loopback URI>"
            "&state=<random>&code_challenge=<S256 of your verifier>&code_challenge_method=S256",
            "  2. POST the code to the token endpoint: grant_type=authorization_code, code, redirect_uri,"
            " client_id, code_verifier",
            "  3. token exchange at the same endpoint: grant_type=urn:ietf:params:oauth:grant-type:token-exchange,"
            " subject_token=<access token>, subject_token_type=urn:ietf:params:oauth:token-type:access_token,"
            f" audience={info['vaccicard_audience']}, client_id",
            "  4. call the FHIR API with Authorization: Bearer <the exchanged token>",
        ]
        return lines

    # --- in-process control -----------------------------------------------------------------------

    def reset(self) -> None:
        """An empty register, no traffic (marks stay meaningful), no pending faults, the depot's own ETKs."""
        self.store.reset()
        self.traffic.clear()
        self.faults.clear()
        self.etk_depot.serve_register_etk(None)

    def close(self) -> None:
        """Close the register and the traffic file (if any)."""
        self.store.close()
        self.traffic.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (recording it); raises ``DropConnection`` when a fault says so."""
        path = request.path
        if _under(path, ADMIN_PATH):
            return self._admin(request)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        try:
            response = self._route(request)
        except DropConnection as drop:
            self._record(
                request, None, started, clock, drop.annotations, f"connection dropped: {drop.reason}"
            )
            raise
        except Exception:
            _log.exception("the simulator failed on %s %s", request.method, path)
            response = outcome_response(500, "exception", "internal error in the simulator (see its log)")
            self._record(request, response, started, clock, {}, "internal error")
            return response
        self._record(request, response, started, clock, response.annotations, None)
        return response

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        """Answer (and record) a request the transport refused before routing (413, malformed HTTP ...)."""
        response = outcome_response(status, code, diagnostics)
        if not _under(request.path, ADMIN_PATH):
            self._record(request, response, datetime.now(UTC), time.perf_counter(), {}, diagnostics)
        return response

    def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        fhir_base = self.config.fhir_base
        if _under(path, fhir_base):
            return self.fhir.handle(request)
        if _under(path, AUTH_PATH):
            answer = self.iam.handle(request)
            if answer is not None:
                return answer
        if _under(path, self.etk_depot.config.prefix):
            return self.etk_depot.handle(request)
        if _under(path, ETEE_PATH):
            return self.etee.handle(request)
        return outcome_response(
            404,
            "not-found",
            f"no such endpoint: {request.method} {path} (the FHIR API is under {fhir_base}, "
            f"IAM Connect under {AUTH_PATH}/realms/{{healthcare,M2M}}, the ETK depot under "
            f"{ETK_DEPOT_PATH}, the encrypted create at {ETEE_CREATE_PATH})",
        )

    def _record(
        self,
        request: HttpRequest,
        response: HttpResponse | None,
        started: datetime,
        clock: float,
        annotations: Mapping[str, Any],
        error: str | None,
    ) -> None:
        fields: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for key, value in annotations.items():
            if key in _EXCHANGE_FIELDS and value is not None:
                fields[key] = value
            else:
                tags[key] = value
        if error is not None and "error" not in fields:
            fields["error"] = error
        if "validation" in fields:
            fields["validation"] = _issues(fields["validation"])
        query = urlencode([(k, v) for k, values in request.query.items() for v in values])
        try:
            self.traffic.record(
                Exchange(
                    started=started,
                    duration_ms=(time.perf_counter() - clock) * 1000.0,
                    method=request.method,
                    url=self.base_url + request.path + (f"?{query}" if query else ""),
                    path=request.path,
                    query=query,
                    request_headers=request.headers,
                    request_body=request.body or None,
                    response_status=response.status if response is not None else None,
                    response_headers=response.headers if response is not None else (),
                    response_body=(response.body or None) if response is not None else None,
                    tags=tags,
                    **fields,
                )
            )
        except Exception:  # recording must never turn an answer into a failure
            _log.exception("could not record the exchange %s %s", request.method, request.path)

    # --- admin API --------------------------------------------------------------------------------

    def _admin(self, request: HttpRequest) -> HttpResponse:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), self.admin_token.encode("utf-8")
        ):
            response = outcome_response(401, "login", "the admin API needs the admin bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="vaccicard-simulator-admin"'
            return response
        route = request.path[len(ADMIN_PATH) :].rstrip("/")
        method = request.method.upper()
        handlers = {
            "/faults": {
                "GET": self._admin_faults,
                "POST": self._admin_add_faults,
                "DELETE": self._admin_clear,
            },
            "/reset": {"POST": self._admin_reset},
            "/expire-tokens": {"POST": self._admin_expire_tokens},
            "/traffic": {"GET": self._admin_traffic},
            "/health": {"GET": self._admin_health},
        }
        methods = handlers.get(route)
        if methods is None:
            return outcome_response(404, "not-found", f"no admin endpoint {request.path}")
        handler = methods.get(method)
        if handler is None:
            response = outcome_response(405, "not-supported", f"{method} is not allowed on {request.path}")
            response.headers["Allow"] = ", ".join(methods)
            return response
        try:
            return handler(request)
        except InvalidFault as error:
            return outcome_response(400, "invalid", error.message)

    def _admin_faults(self, request: HttpRequest) -> HttpResponse:
        return _json(200, {"faults": self.faults.to_json()})

    def _admin_add_faults(self, request: HttpRequest) -> HttpResponse:
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return outcome_response(
                400, "structure", "the body must be a fault (JSON object) or a list of them"
            )
        items = data if isinstance(data, list) else [data]
        FaultPlan.from_json(items)  # all or nothing: check every fault before scheduling any
        added = [self.faults.add_json(item).to_json() for item in items]
        return _json(201, {"added": added, "faults": self.faults.to_json()})

    def _admin_clear(self, request: HttpRequest) -> HttpResponse:
        return _json(200, {"cleared": self.faults.clear()})

    def _admin_reset(self, request: HttpRequest) -> HttpResponse:
        self.reset()
        return _json(200, {"reset": True, "mark": self.traffic.mark()})

    def _admin_expire_tokens(self, request: HttpRequest) -> HttpResponse:
        self.iam.expire_tokens()
        return _json(200, {"expired": True})

    def _admin_traffic(self, request: HttpRequest) -> HttpResponse:
        since_text = request.query.get("since", ["0"])[0] or "0"
        if not since_text.isdigit():
            return outcome_response(
                400, "invalid", "since must be a whole number (a mark from an earlier answer)"
            )
        operation = request.query.get("operation", [None])[0]
        method = request.query.get("method", [None])[0]
        mark = self.traffic.mark()
        exchanges = self.traffic.exchanges(int(since_text), operation=operation, method=method)
        exchanges = [e for e in exchanges if e.id <= mark]
        return _json(200, {"mark": mark, "exchanges": [e.to_json() for e in exchanges]})

    def _admin_health(self, request: HttpRequest) -> HttpResponse:
        return _json(
            200,
            {
                "status": "ok",
                "started": self.started.isoformat().replace("+00:00", "Z"),
                "fhir_base_url": self.fhir_base_url,
                "database": str(self.store.path) if self.store.path is not None else None,
                "exchanges": self.traffic.mark(),
                "pending_faults": len(self.faults),
            },
        )


def outcome_response(status: int, code: str, diagnostics: str) -> HttpResponse:
    """A FHIR OperationOutcome answer with one error issue."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return HttpResponse(status, {"Content-Type": f"{FHIR_JSON}; charset=utf-8"}, orjson.dumps(body))


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(
        status,
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
        orjson.dumps(body, default=str),
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _issues(value: Any) -> list[dict[str, Any]]:
    """Validation issues as a list of JSON objects, whatever shape the core annotated."""
    if value is None:
        return []
    if hasattr(value, "to_operation_outcome"):
        value = value.to_operation_outcome()
    if isinstance(value, dict):
        value = value.get("issue", [value])
    if not isinstance(value, list | tuple):
        value = [value]
    result = []
    for item in value:
        if isinstance(item, dict):
            result.append(item)
        elif hasattr(item, "to_fhir"):
            result.append(item.to_fhir())
        elif hasattr(item, "to_json"):
            result.append(item.to_json())
        else:
            result.append({"diagnostics": str(item)})
    return result
