#!/usr/bin/env python3
"""An example vendor hook for vaccicard-conformance: the ``http`` and ``command`` adapter contracts.

This stands in for a vendor's own software. It receives an intent (JSON, see the harness's
``intent.schema.json``), does the FHIR work with its own tiny Vaccicard client, and answers an
AdapterResult (JSON). It does not import the harness: copy it, then replace ``VaccicardClient`` with
calls into your product.

    python vendor_hook.py --fhir URL --iam URL --professional SSIN [--host 127.0.0.1] [--port 8765]
    python vendor_hook.py --fhir URL --iam URL --professional SSIN --stdin < intent.json

The HTTP mode answers ``POST /`` (any path) and prints ``listening on http://HOST:PORT/`` once ready.
Needs ``httpx``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import secrets
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

CORE = "https://www.ehealth.fgov.be/standards/fhir/core/"
VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
PROFILE = VACCINATION + "StructureDefinition/be-vaccination"
RECORDER = CORE + "StructureDefinition/be-ext-recorder"
PRODUCT = VACCINATION + "StructureDefinition/be-ext-administeredProduct"
LATERALITY = "https://www.ehealth.fgov.be/standards/fhir/core-clinical/StructureDefinition/be-ext-laterality"
CARE_LOCATION = VACCINATION + "CodeSystem/be-cs-care-location"
SSIN = CORE + "NamingSystem/ssin"
NIHDI = CORE + "NamingSystem/nihdi-professional"
CNK = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SIDES = {"left": ("419161000", "Unilateral left"), "right": ("419465000", "Unilateral right")}
OUR_KEYS = "https://vendor.example.org/vaccinations"
FHIR_JSON = "application/fhir+json"


class Refused(Exception):
    """The register refused: the user sees the OperationOutcome's texts."""

    def __init__(self, status: int, body: Any) -> None:
        self.issues = []
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            for item in body.get("issue", []):
                text = (item.get("details") or {}).get("text") or item.get("diagnostics") or ""
                severity = item.get("severity")
                self.issues.append(
                    {
                        "severity": severity
                        if severity in ("fatal", "error", "warning", "information")
                        else "error",
                        "code": str(item.get("code", "")),
                        "text": str(text),
                        "expression": (item.get("expression") or [None])[0],
                    }
                )
        texts = "; ".join(i["text"] for i in self.issues if i["text"]) or f"HTTP {status}"
        super().__init__(f"The register refused it (HTTP {status}): {texts}")
        self.outcome = "rejected" if status < 500 else "failed"


class VaccicardClient:
    """A tiny Vaccicard client: IAM Connect login, then FHIR with retries, conditional create, If-Match."""

    def __init__(self, fhir: str, iam: str, professional: str) -> None:
        self.fhir = fhir.rstrip("/")
        self.issuer = iam.rstrip("/") + ("" if "/realms/" in iam else "/realms/healthcare")
        self.professional = professional
        self.http = httpx.Client(timeout=30.0)
        self.token: str | None = None
        self.nihdi = ""

    # -- IAM Connect: authorization code + PKCE, then token exchange to the Vaccicard audience --
    def login(self) -> None:
        config = self.http.get(self.issuer + "/.well-known/openid-configuration").json()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = "http://127.0.0.1:53682/callback"
        answer = self.http.get(
            config["authorization_endpoint"],
            params={
                "client_id": "vendor-software",
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": "openid profile",
                "state": "example",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "login_hint": self.professional,
            },
        )
        code = parse_qs(urlsplit(answer.headers.get("location", "")).query).get("code")
        if not code:
            raise Refused(
                403,
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"code": "login", "diagnostics": "IAM Connect refused the login"}],
                },
            )
        tokens = self.http.post(
            config["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code[0],
                "redirect_uri": redirect_uri,
                "client_id": "vendor-software",
                "code_verifier": verifier,
            },
        ).json()
        exchanged = self.http.post(
            config["token_endpoint"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": tokens["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": "vaccicard-api",
                "client_id": "vendor-software",
            },
        ).json()
        self.token = exchanged["access_token"]
        payload = self.token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        for value in (claims.get("userProfile") or {}).values():
            if isinstance(value, dict) and value.get("nihii11"):
                self.nihdi = value["nihii11"]

    # -- FHIR with retries (503/429/lost answers) --
    def send(
        self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        if self.token is None:
            self.login()
        renewed = False
        for attempt in range(5):
            all_headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {self.token}", **(headers or {})}
            if body is not None:
                all_headers["Content-Type"] = FHIR_JSON
            try:
                response = self.http.request(method, url, json=body, headers=all_headers, **kw)
            except httpx.TransportError:
                time.sleep(0.1 * 2**attempt)
                continue
            if response.status_code == 401 and not renewed:  # the token expired: log in again, once
                renewed = True
                self.login()
                continue
            if response.status_code in (429, 502, 503, 504) and attempt < 4:
                wait = response.headers.get("retry-after", "")
                time.sleep(min(float(wait), 30.0) if wait.isdigit() else 0.1 * 2**attempt)
                continue
            return response
        raise Refused(503, None)

    @staticmethod
    def check(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise Refused(response.status_code, body)
        return body

    # -- the actions --
    def record(self, intent: dict[str, Any]) -> dict[str, Any]:
        key = intent.get("business_identifier") or {"system": OUR_KEYS, "value": str(uuid.uuid4())}
        if self.token is None:
            self.login()
        resource = self.immunization(intent, key)
        response = self.send(
            "POST",
            self.fhir + "/Immunization",
            resource,
            {"If-None-Exist": f"identifier={key['system']}|{key['value']}"},
        )
        stored = self.check(response)
        return {
            "outcome": "succeeded",
            "message": f"Recorded: Immunization/{stored['id']}",
            "record_ids": [stored["id"]],
            "business_identifiers": [key],
        }

    def history(self, intent: dict[str, Any]) -> dict[str, Any]:
        shown = []
        url: str | None = self.fhir + "/Immunization"
        params: dict[str, str] | None = {"patient.identifier": f"{SSIN}|{intent['patient']}"}
        while url:
            bundle = self.check(self.send("GET", url, params=params))
            for entry in bundle.get("entry", []):
                r = entry.get("resource", {})
                if r.get("resourceType") != "Immunization":
                    continue
                status = {"entered-in-error": "cancelled", "not-done": "not-done"}.get(
                    r.get("status"), "completed"
                )
                coding = (r.get("vaccineCode", {}).get("coding") or [{}])[0]
                shown.append(
                    {
                        "status": status,
                        "record_id": r.get("id"),
                        "business_identifier": (r.get("identifier") or [None])[0],
                        "vaccine": {
                            "system": coding["system"],
                            "code": coding["code"],
                            "display": coding.get("display"),
                        }
                        if coding.get("system") and coding.get("code")
                        else None,
                        "occurrence": r.get("occurrenceDateTime") or r.get("occurrenceString"),
                    }
                )
            url = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None
            )
            params = None
        return {
            "outcome": "succeeded",
            "message": f"{len(shown)} vaccination(s)",
            "record_ids": [v["record_id"] for v in shown if v["record_id"]],
            "vaccinations": shown,
        }

    def update(self, intent: dict[str, Any]) -> dict[str, Any]:
        key = intent["business_identifier"]
        found = self.check(
            self.send(
                "GET", self.fhir + "/Immunization", params={"identifier": f"{key['system']}|{key['value']}"}
            )
        )
        entries = [
            e["resource"] for e in found.get("entry", []) if e["resource"]["resourceType"] == "Immunization"
        ]
        if len(entries) != 1:
            return {"outcome": "rejected", "message": f"{len(entries)} records have that identifier"}
        url = f"{self.fhir}/Immunization/{entries[0]['id']}"
        for conflict in range(4):
            current = self.send("GET", url)
            before = self.check(current)
            resource = copy.deepcopy(before)
            if intent["action"] == "cancel-vaccination":
                resource["status"] = "entered-in-error"
                if {"text": f"Cancelled: {intent['reason']}"} not in resource.setdefault("note", []):
                    resource["note"].append({"text": f"Cancelled: {intent['reason']}"})
            else:
                self.apply(resource, intent)
            self.set_recorder(resource)
            strip = {k: v for k, v in resource.items() if k not in ("meta", "text")}
            if conflict and strip == {k: v for k, v in before.items() if k not in ("meta", "text")}:
                break  # our earlier write committed although its answer was lost
            etag = current.headers.get("etag") or f'W/"{before["meta"]["versionId"]}"'
            response = self.send("PUT", url, resource, {"If-Match": etag})
            if response.status_code != 412:
                self.check(response)
                break
        else:
            return {"outcome": "rejected", "message": "the record kept changing while we saved it: try again"}
        return {
            "outcome": "succeeded",
            "message": f"Saved: Immunization/{entries[0]['id']}",
            "record_ids": [entries[0]["id"]],
            "business_identifiers": [key],
        }

    # -- building the BeVaccination Immunization --
    def set_recorder(self, resource: dict[str, Any]) -> None:
        others = [e for e in resource.get("extension", []) if e.get("url") != RECORDER]
        recorder = {"url": RECORDER, "valueReference": {"identifier": {"system": NIHDI, "value": self.nihdi}}}
        resource["extension"] = [recorder, *others]

    def immunization(self, intent: dict[str, Any], key: dict[str, str]) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        patient = {"identifier": {"system": SSIN, "value": intent["patient"]}}
        r: dict[str, Any] = {
            "resourceType": "Immunization",
            "meta": {"profile": [PROFILE]},
            "identifier": [key],
            "status": "completed" if intent["action"] == "record-vaccination" else "not-done",
            "vaccineCode": {"coding": [coding(intent["vaccine"])]},
            "patient": patient,
            "recorded": now,
            "performer": [
                {"actor": {"identifier": {"system": NIHDI, "value": intent.get("performer") or self.nihdi}}}
            ],
        }
        self.set_recorder(r)
        if intent.get("occurrence_text") and not intent.get("occurrence"):
            r["occurrenceString"] = intent["occurrence_text"]
        else:
            r["occurrenceDateTime"] = intent.get("occurrence") or now
        if intent.get("status_reason"):
            r["statusReason"] = {"coding": [coding(intent["status_reason"])]}
        if intent.get("note"):
            r["note"] = [{"text": intent["note"]}]
        setting = intent.get("care_setting")
        if setting:
            location = {"resourceType": "Location", "id": "location"}
            location["type"] = [{"coding": [{"system": CARE_LOCATION, "code": setting["code"]}]}]
            if setting.get("name"):
                location["name"] = setting["name"]
            encounter = {
                "resourceType": "Encounter",
                "id": "encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": copy.deepcopy(patient),
                "location": [{"location": {"reference": "#location"}}],
            }
            r["contained"] = [encounter, location]
            r["encounter"] = {"reference": "#encounter"}
        self.apply(r, intent)
        return r

    @staticmethod
    def apply(r: dict[str, Any], intent: dict[str, Any]) -> None:
        """Set the clinical details an intent gives (on a new record or a correction)."""
        if intent["action"] == "correct-vaccination":
            if intent.get("vaccine"):
                r["vaccineCode"] = {"coding": [coding(intent["vaccine"])]}
            if intent.get("occurrence"):
                r.pop("occurrenceString", None)
                r["occurrenceDateTime"] = intent["occurrence"]
            elif intent.get("occurrence_text"):
                r.pop("occurrenceDateTime", None)
                r["occurrenceString"] = intent["occurrence_text"]
            if intent.get("note"):
                r["note"] = [{"text": intent["note"]}]
        product = intent.get("product")
        if product:  # CNK, lot and expiry go in the administered-product extension, never in lotNumber
            parts = []
            if product.get("cnk"):
                parts.append(
                    {
                        "url": "coded",
                        "valueCodeableConcept": {"coding": [{"system": CNK, "code": product["cnk"]}]},
                    }
                )
            if product.get("lot_number"):
                parts.append({"url": "lotNumber", "valueString": product["lot_number"]})
            if product.get("expiry"):
                parts.append({"url": "expirationDate", "valueDate": product["expiry"]})
            r["extension"] = [e for e in r.get("extension", []) if e.get("url") != PRODUCT]
            if parts:
                r["extension"].append({"url": PRODUCT, "extension": parts})
        if intent.get("route"):
            r["route"] = {"coding": [coding(intent["route"])]}
        site = intent.get("body_site")
        if site:
            r["site"] = {"coding": [coding(site["site"])]}
            if site.get("laterality"):
                code, display = SIDES[site["laterality"]]
                value = {"system": "http://snomed.info/sct", "code": code, "display": display}
                r["site"]["extension"] = [{"url": LATERALITY, "valueCoding": value}]
        reaction = intent.get("reaction")
        if reaction:
            entry: dict[str, Any] = {"date": reaction["date"]}
            contained = [c for c in r.get("contained", []) if c.get("id") != "reaction"]
            if reaction.get("detail"):
                contained.append(
                    {
                        "resourceType": "Observation",
                        "id": "reaction",
                        "status": "final",
                        "code": {"coding": [coding(reaction["detail"])]},
                        "subject": copy.deepcopy(r["patient"]),
                    }
                )
                entry["detail"] = {"reference": "#reaction"}
            if contained:
                r["contained"] = contained
            r["reaction"] = [entry]


def coding(value: dict[str, Any]) -> dict[str, str]:
    return {k: value[k] for k in ("system", "code", "display") if value.get(k)}


class Clients:
    """One logged-in client per professional: an intent's ``professional`` says who acts."""

    def __init__(self, fhir: str, iam: str, professional: str) -> None:
        self.fhir, self.iam, self.default = fhir, iam, professional
        self.by_professional: dict[str, VaccicardClient] = {}

    def get(self, professional: str | None) -> VaccicardClient:
        who = professional or self.default
        if who not in self.by_professional:
            self.by_professional[who] = VaccicardClient(self.fhir, self.iam, who)
        return self.by_professional[who]


def handle(clients: Clients, intent: dict[str, Any]) -> dict[str, Any]:
    """Carry out one intent; the register's refusals become ``rejected``/``failed`` results."""
    action = intent.get("action")
    if intent.get("encrypted"):  # sealing for Vaccicard (eHealth ETEE) is not part of this example
        return {"outcome": "failed", "message": "this software does not implement the encrypted variant"}
    client = clients.get(intent.get("professional"))
    try:
        if action in ("record-vaccination", "record-not-done"):
            return client.record(intent)
        if action == "read-history":
            return client.history(intent)
        if action in ("correct-vaccination", "cancel-vaccination"):
            return client.update(intent)
    except Refused as refused:
        return {"outcome": refused.outcome, "message": str(refused), "issues": refused.issues}
    return {"outcome": "failed", "message": f"this software cannot do {action!r}"}


def serve(clients: Clients, host: str, port: int) -> None:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                intent = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            except ValueError:
                self.send_error(400, "the body is not JSON")
                return
            try:
                body = json.dumps(handle(clients, intent)).encode()
            except Exception as error:  # a bug or an unreachable register: tell the harness, do not hang up
                self.send_error(500, f"{type(error).__name__}: {error}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            print(format % args, file=sys.stderr)

    server = ThreadingHTTPServer((host, port), Hook)
    print(f"listening on http://{host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fhir", required=True, help="the register's FHIR base URL")
    parser.add_argument("--iam", required=True, help="IAM Connect's base URL (.../auth) or realm issuer")
    parser.add_argument(
        "--professional",
        required=True,
        help="SSIN of the professional to log in (unless an intent names one)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--stdin", action="store_true", help="command mode: one intent on stdin, answer on stdout"
    )
    options = parser.parse_args(argv)
    clients = Clients(options.fhir, options.iam, options.professional)
    if options.stdin:
        try:
            intent = json.load(sys.stdin)
        except ValueError as error:
            print(f"vendor_hook: the intent on stdin is not JSON: {error}", file=sys.stderr)
            return 2
        json.dump(handle(clients, intent), sys.stdout)
        return 0
    serve(clients, options.host, options.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
