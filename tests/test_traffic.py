"""Tests of traffic capture: recording, queries, secret masking and NDJSON evidence."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.errors import ConfigurationError
from conformance.traffic import Exchange, TrafficRecorder, classify, fingerprint, load_ndjson, mask_secrets

SSIN = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/ssin"
BK = "https://www.example.org/vaccicard/immunization-id"
BASE = "http://127.0.0.1:8080"
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiIxMDgyODQ2NTEyMyIsImF1ZCI6InZhY2NpY2FyZCJ9.c2lnbmF0dXJl"
ASSERTION = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJjYmUtMDQwNjc5ODAwNiJ9.YXNzZXJ0aW9u"
REFRESH = "opaque-refresh-7f3c9a"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
SUBJECT_TOKEN = "opaque-subject-token-1234"
SECRETS = [JWT, ASSERTION, REFRESH, VERIFIER, SUBJECT_TOKEN, "cookie-session-value", "s3cr3t-client"]


def immunization(patient: str = "94021300145", key: str = "vac-1") -> dict:
    return {
        "resourceType": "Immunization",
        "identifier": [{"system": BK, "value": key}],
        "status": "completed",
        "patient": {"identifier": {"system": SSIN, "value": patient}},
        "occurrenceDateTime": "2024-03-04",
    }


def fhir_exchange(method: str = "POST", path: str = "/fhir/Immunization", **kwargs: object) -> Exchange:
    values: dict = {
        "method": method,
        "url": BASE + path,
        "request_headers": [("Authorization", f"Bearer {JWT}"), ("Content-Type", "application/fhir+json")],
        "response_status": 201,
        "subject": "nihdi:10828465123",
    }
    values.update(kwargs)
    return Exchange(**values)


def token_exchange() -> Exchange:
    form = (
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        f"&subject_token={SUBJECT_TOKEN}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        f"&client_assertion={ASSERTION}&client_secret=s3cr3t-client&code_verifier={VERIFIER}&code=abc123"
    )
    return Exchange(
        method="POST",
        url=BASE + "/auth/realms/healthcare/protocol/openid-connect/token",
        request_headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "KEYCLOAK_SESSION=cookie-session-value; lang=fr",
        },
        request_body=form.encode(),
        response_status=200,
        response_headers=[("Set-Cookie", "KEYCLOAK_SESSION=cookie-session-value; Path=/; HttpOnly")],
        response_body={
            "access_token": JWT,
            "refresh_token": REFRESH,
            "id_token": JWT,
            "token_type": "Bearer",
        },
    )


# -- the exchange ------------------------------------------------------------------------------------------


def test_exchange_normalises_its_parts():
    exchange = Exchange(
        method="get",
        url=BASE + "/fhir/Immunization?patient.identifier=" + SSIN + "|94021300145&_count=10",
        started=datetime(2024, 3, 4, 11, 0, tzinfo=timezone(timedelta(hours=1))),
        request_headers={"Accept": "application/fhir+json"},
        response_body=b'{"resourceType": "Bundle", "total": 0}',
    )
    assert exchange.method == "GET"
    assert exchange.started == datetime(2024, 3, 4, 10, 0, tzinfo=UTC) and exchange.started.tzinfo is UTC
    assert exchange.path == "/fhir/Immunization"
    assert exchange.query_params == [("patient.identifier", f"{SSIN}|94021300145"), ("_count", "10")]
    assert exchange.request_headers == (("Accept", "application/fhir+json"),)
    assert exchange.request_header("accept") == "application/fhir+json"
    assert exchange.response_header("content-type") is None
    assert exchange.response_json == {"resourceType": "Bundle", "total": 0}
    assert exchange.request_body is None and exchange.request_json is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", b"not json"),
        (b'{"broken": ', b'{"broken": '),
        (b'"a json string"', b'"a json string"'),  # only objects and arrays count as JSON bodies
        (b"\x00\xff\xfe binary", b"\x00\xff\xfe binary"),
        ("text body", b"text body"),
        (bytearray(b"[1, 2]"), [1, 2]),
        (b'  {"a": 1}', {"a": 1}),
        (b"[" * 300 + b"]" * 300, b"[" * 300 + b"]" * 300),  # too deep to keep parsed
    ],
)
def test_bodies_are_json_or_bytes(body, expected):
    assert Exchange(request_body=body).request_body == expected


def test_classify_requests():
    assert classify("POST", "/fhir/Immunization") == ("create", "Immunization", None)
    assert classify("GET", "/fhir/Immunization") == ("search", "Immunization", None)
    assert classify("POST", "/fhir/Immunization/_search") == ("search", "Immunization", None)
    assert classify("GET", "/fhir/Immunization/abc") == ("read", "Immunization", "abc")
    assert classify("PUT", "/fhir/Immunization/abc") == ("update", "Immunization", "abc")
    assert classify("DELETE", "/fhir/Immunization/abc") == ("delete", "Immunization", "abc")
    assert classify("GET", "/fhir/Immunization/abc/_history") == ("history", "Immunization", "abc")
    assert classify("GET", "/fhir/Immunization/abc/_history/2") == ("vread", "Immunization", "abc")
    assert classify("POST", "/fhir/Immunization/$validate") == ("validate", "Immunization", None)
    assert classify("GET", "/fhir/metadata") == ("capabilities", None, None)
    assert classify("POST", "/auth/realms/M2M/protocol/openid-connect/token") == ("token", None, None)
    assert classify("GET", "/auth/realms/healthcare/protocol/openid-connect/auth") == (
        "authorize",
        None,
        None,
    )
    assert classify("GET", "/admin/faults") == ("other", None, None)
    assert classify("PATCH", "/fhir/Immunization/abc/_history/2") == ("other", "Immunization", "abc")
    assert classify("GET", "/fhirish/Immunization") == ("other", None, None)


# -- recording and queries ---------------------------------------------------------------------------------


def test_record_numbers_and_classifies():
    recorder = TrafficRecorder()
    first = recorder.record(fhir_exchange(request_body=immunization()))
    second = recorder.record(fhir_exchange("GET", "/fhir/Immunization/abc", operation="read-special"))
    assert (first.id, second.id) == (1, 2)
    assert (first.operation, first.resource_type, first.resource_id) == ("create", "Immunization", None)
    assert second.operation == "read-special"  # an operation given by the endpoint is kept
    assert len(recorder) == 2


def test_record_keeps_a_private_copy_of_bodies():
    resource = immunization()
    recorder = TrafficRecorder()
    recorder.record(fhir_exchange(request_body=resource, tags={"scenario": "s1"}))
    resource["status"] = "changed after recording"
    assert recorder.exchanges()[0].request_body["status"] == "completed"


def test_recording_from_many_threads():
    recorder = TrafficRecorder()
    threads, per_thread = 8, 50
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            recorder.record(fhir_exchange(request_body=immunization(key=f"{n}-{i}"), tags={"thread": n}))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    items = recorder.exchanges()
    assert [item.id for item in items] == list(range(1, threads * per_thread + 1))
    assert len({item.request_body["identifier"][0]["value"] for item in items}) == threads * per_thread
    for n in range(threads):
        mine = recorder.exchanges(predicate=lambda e, n=n: e.tags["thread"] == n)
        assert [e.request_body["identifier"][0]["value"] for e in mine] == [
            f"{n}-{i}" for i in range(per_thread)
        ]


@pytest.fixture
def traffic() -> TrafficRecorder:
    recorder = TrafficRecorder()
    recorder.record(token_exchange())
    recorder.record(fhir_exchange(request_body=immunization("94021300145", "a1")))
    recorder.record(fhir_exchange(request_body=immunization("06070500252", "b1"), subject="nihdi:71045471"))
    recorder.record(
        fhir_exchange(
            "GET",
            f"/fhir/Immunization?patient.identifier={SSIN}%7C06070500252",
            response_status=200,
            response_body={"resourceType": "Bundle", "type": "searchset", "entry": []},
        )
    )
    recorder.record(
        fhir_exchange(
            "GET",
            "/fhir/Immunization/x1",
            response_status=200,
            response_body={**immunization("94021300145", "a1"), "id": "x1"},
        )
    )
    recorder.record(
        fhir_exchange(
            "GET",
            "/fhir/Immunization?identifier=x",
            response_status=200,
            response_body={
                "resourceType": "Bundle",
                "entry": [{"resource": immunization("06070500252", "b1")}, {"search": {}}],
            },
        )
    )
    return recorder


def test_query_by_operation_method_path_subject(traffic):
    assert [e.id for e in traffic.exchanges(operation="create")] == [2, 3]
    assert [e.id for e in traffic.exchanges(operation="token")] == [1]
    assert [e.id for e in traffic.exchanges(method="get")] == [4, 5, 6]
    assert [e.id for e in traffic.exchanges(path_prefix="/auth/")] == [1]
    assert [e.id for e in traffic.exchanges(subject="nihdi:71045471")] == [3]
    assert [e.id for e in traffic.exchanges(operation="search", subject="nihdi:10828465123")] == [4, 6]
    assert (
        traffic.exchanges(predicate=lambda e: e.response_status == 200 and e.operation == "read")[0].id == 5
    )


def test_query_by_patient_identifier(traffic):
    assert [e.id for e in traffic.exchanges(patient_identifier=(SSIN, "94021300145"))] == [2, 5]
    assert [e.id for e in traffic.exchanges(patient_identifier=(SSIN, "06070500252"))] == [3, 4, 6]
    creates = traffic.exchanges(operation="create", patient_identifier=(SSIN, "06070500252"))
    assert [e.id for e in creates] == [3]
    assert traffic.exchanges(patient_identifier=("urn:other", "94021300145")) == []


def test_mark_since_and_clear(traffic):
    start = traffic.mark()
    assert start == 6
    assert traffic.exchanges(since=start) == []
    traffic.record(fhir_exchange(request_body=immunization(key="late")))
    assert [e.id for e in traffic.exchanges(start)] == [7]
    assert [e.id for e in traffic.exchanges(since=4)] == [5, 6, 7]
    assert [e.id for e in traffic.exchanges(since=0)] == list(range(1, 8))
    traffic.clear()
    assert traffic.exchanges() == [] and len(traffic) == 0
    assert traffic.mark() == 7  # ids keep counting: earlier marks stay meaningful
    assert traffic.record(fhir_exchange()).id == 8
    assert [e.id for e in traffic.exchanges(since=start)] == [8]


def test_max_exchanges_keeps_the_newest():
    recorder = TrafficRecorder(max_exchanges=3)
    for _ in range(10):
        recorder.record(fhir_exchange())
    assert [e.id for e in recorder.exchanges()] == [8, 9, 10]
    assert [e.id for e in recorder.exchanges(since=8)] == [9, 10]
    assert [e.id for e in recorder.exchanges(since=2)] == [8, 9, 10]


# -- secret masking ----------------------------------------------------------------------------------------


def all_text(exchange: Exchange) -> str:
    """Every stored field as text, with binary bodies decoded."""
    parts = [repr(exchange), json.dumps(exchange.to_json(), default=str)]
    for body in (exchange.request_body, exchange.response_body):
        if isinstance(body, bytes):
            parts.append(body.decode("latin-1"))
    return "\n".join(parts)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_token_request_is_masked():
    recorded = TrafficRecorder().record(token_exchange())
    assert_no_secret(all_text(recorded))
    form = recorded.request_body.decode()
    assert f"subject_token={fingerprint(SUBJECT_TOKEN)}" in form
    assert f"client_assertion={fingerprint(ASSERTION)}" in form
    assert f"code_verifier={fingerprint(VERIFIER)}" in form
    assert "grant_type=urn%3Aietf" in form and "code=abc123" in form  # the rest is left as sent
    assert recorded.response_body["access_token"] == fingerprint(JWT)
    assert recorded.response_body["refresh_token"] == fingerprint(REFRESH)
    assert recorded.response_body["token_type"] == "Bearer"
    assert (
        recorded.request_header("cookie")
        == f"KEYCLOAK_SESSION={fingerprint('cookie-session-value')}; lang={fingerprint('fr')}"
    )
    assert recorded.response_header("set-cookie").endswith("; Path=/; HttpOnly")


def test_bearer_fingerprint_matches_the_issued_token():
    recorder = TrafficRecorder()
    issued = recorder.record(token_exchange())
    used = recorder.record(fhir_exchange())
    assert used.request_header("Authorization") == f"Bearer {issued.response_body['access_token']}"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("Authorization", f"Bearer {JWT}", f"Bearer {fingerprint(JWT)}"),
        ("authorization", "Basic dXNlcjpwYXNz", f"Basic {fingerprint('dXNlcjpwYXNz')}"),
        ("Authorization", "raw-token", fingerprint("raw-token")),
        ("Proxy-Authorization", "Bearer abc", f"Bearer {fingerprint('abc')}"),
        ("DPoP", JWT, fingerprint(JWT)),
        ("X-Admin-Token", "admin-secret", fingerprint("admin-secret")),
        ("X-Client-Secret", "s", fingerprint("s")),
        (
            "Location",
            f"{BASE}/cb?code=c1&access_token=t1&state=s",
            f"{BASE}/cb?code=c1&access_token={fingerprint('t1')}&state=s",
        ),
        ("X-Debug", f"got {JWT} here", f"got {fingerprint(JWT)} here"),
        ("Content-Type", "application/fhir+json", "application/fhir+json"),
    ],
)
def test_header_masking(name, value, expected):
    recorded = TrafficRecorder().record(
        Exchange(request_headers=[(name, value)], response_headers={name: value})
    )
    assert recorded.request_headers == ((name, expected),)
    assert recorded.response_headers == ((name, expected),)


def test_json_bodies_are_masked_at_any_depth_but_fhir_is_untouched():
    resource = immunization()
    nested = {"outer": [{"inner": {"access_token": "t", "client_assertion": ASSERTION, "code": "keep"}}]}
    deep: dict = {"level": 0}
    cursor = deep
    for level in range(1, 150):
        cursor["next"] = {"level": level}
        cursor = cursor["next"]
    cursor["id_token"] = JWT
    recorder = TrafficRecorder()
    recorded = recorder.record(Exchange(request_body=resource, response_body=nested))
    assert recorded.request_body == resource
    assert recorded.response_body["outer"][0]["inner"] == {
        "access_token": fingerprint("t"),
        "client_assertion": fingerprint(ASSERTION),
        "code": "keep",
    }
    deep_recorded = recorder.record(Exchange(request_body=deep))
    assert JWT not in json.dumps(deep_recorded.request_body) and fingerprint(JWT) in json.dumps(
        deep_recorded.request_body
    )


def test_secrets_in_query_error_tags_validation_and_broken_json_are_masked():
    recorded = TrafficRecorder().record(
        Exchange(
            method="GET",
            url=f"{BASE}/fhir/Immunization?access_token={REFRESH}&status=completed",
            request_body=b'{"refresh_token": "' + REFRESH.encode() + b'", "truncated',
            response_body=b"<html>token " + JWT.encode() + b"</html>",
            error=f"connection reset while sending {JWT}",
            tags={"note": f"Bearer {JWT}", "subject_token": SUBJECT_TOKEN},
            validation=[{"severity": "error", "code": "invalid", "message": f"bad {JWT}", "expression": "x"}],
        )
    )
    assert recorded.query == f"access_token={fingerprint(REFRESH)}&status=completed"
    assert recorded.request_body == b'{"refresh_token":"' + fingerprint(REFRESH).encode() + b'", "truncated'
    assert recorded.response_body == b"<html>token " + fingerprint(JWT).encode() + b"</html>"
    assert recorded.validation[0]["message"] == f"bad {fingerprint(JWT)}"
    assert_no_secret(all_text(recorded))


def test_masking_is_idempotent_and_configurable():
    once = mask_secrets(token_exchange())
    assert mask_secrets(once) == once
    recorder = TrafficRecorder(secret_headers=["X-Session"], secret_fields=["pin"])
    recorded = recorder.record(
        Exchange(
            request_headers={"X-Session": "abc"}, request_body={"pin": "1234"}, response_body=b"pin=1234&a=b"
        )
    )
    assert recorded.request_header("x-session") == fingerprint("abc")
    assert recorded.request_body == {"pin": fingerprint("1234")}
    assert recorded.response_body == f"pin={fingerprint('1234')}&a=b".encode()


def test_no_secret_reaches_any_written_file(tmp_path):
    live = tmp_path / "live.ndjson"
    with TrafficRecorder(ndjson_path=live) as recorder:
        recorder.record(token_exchange())
        recorder.record(fhir_exchange(request_body=immunization(), error=f"dropped {JWT}"))
        written = tmp_path / "out" / "traffic.ndjson"
        recorder.write_ndjson(written)
    for path in (live, written):
        raw = path.read_text()
        assert_no_secret(raw)
        for line in raw.splitlines():
            data = json.loads(line)
            for side in ("request", "response"):
                if data[f"{side}_body_encoding"] == "base64":
                    assert_no_secret(base64.b64decode(data[f"{side}_body"]).decode("latin-1"))


@settings(max_examples=60, deadline=None)
@given(
    secret=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&#=%+;"), min_size=12
    ).map(lambda text: "tok!" + text)  # never a field name of the written record itself
)
def test_any_token_value_is_masked_in_form_json_and_header(secret):
    recorded = TrafficRecorder().record(
        Exchange(
            request_headers={"Authorization": f"Bearer {secret}"},
            request_body=f"a=1&refresh_token={secret}".encode(),
            response_body={"access_token": secret},
        )
    )
    stored = json.dumps(recorded.to_json()) + recorded.request_body.decode()
    assert secret not in stored


# -- NDJSON ------------------------------------------------------------------------------------------------


def test_ndjson_round_trip(tmp_path, traffic):
    binary = bytes(range(256))
    traffic.record(
        fhir_exchange(
            request_body=binary,
            response_status=None,
            response_body=b"\x89PNG\r\n",
            error="connection reset by fault injection",
            validation=[
                {
                    "severity": "error",
                    "code": "required",
                    "expression": "Immunization.status",
                    "message": "m",
                    "rule": "r",
                    "profile": "p",
                }
            ],
            tags={"scenario": "record-vaccination", "attempt": 2},
            duration_ms=12.5,
        )
    )
    path = tmp_path / "traffic.ndjson"
    assert traffic.write_ndjson(path) == 7
    lines = path.read_bytes().splitlines()
    assert len(lines) == 7
    last = orjson.loads(lines[-1])
    assert last["request_body_encoding"] == "base64" and base64.b64decode(last["request_body"]) == binary
    assert last["started"].endswith("Z")
    first = orjson.loads(lines[1])
    assert (
        first["request_body_encoding"] == "json" and first["request_body"]["resourceType"] == "Immunization"
    )
    loaded = load_ndjson(path)
    assert loaded == traffic.exchanges()
    assert loaded[-1].request_body == binary and loaded[-1].response_status is None


def test_live_ndjson_appends_while_recording(tmp_path):
    path = tmp_path / "evidence" / "live.ndjson"
    recorder = TrafficRecorder(ndjson_path=path)
    recorder.record(fhir_exchange(request_body=immunization()))
    assert len(path.read_bytes().splitlines()) == 1  # flushed at once
    recorder.record(token_exchange())
    recorder.clear()  # clearing memory does not touch the evidence file
    recorder.record(fhir_exchange())
    recorder.close()
    recorder.record(fhir_exchange())  # after close: memory only
    loaded = load_ndjson(path)
    assert [e.id for e in loaded] == [1, 2, 3]
    reopened = TrafficRecorder(ndjson_path=path)  # appends, never truncates
    reopened.record(fhir_exchange())
    reopened.close()
    assert len(load_ndjson(path)) == 4


def test_load_ndjson_skips_a_torn_last_line_only(tmp_path):
    recorder = TrafficRecorder()
    recorder.record(fhir_exchange())
    path = tmp_path / "t.ndjson"
    recorder.write_ndjson(path)
    good = path.read_bytes()
    path.write_bytes(good + b'{"id": 2, "method": "PO')
    assert len(load_ndjson(path)) == 1
    path.write_bytes(b'{"id": 2, "method"\n' + good)
    with pytest.raises(ConfigurationError, match="line 1"):
        load_ndjson(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_ndjson(tmp_path / "missing.ndjson")


def test_exchange_json_is_plain_json():
    exchange = TrafficRecorder().record(fhir_exchange(request_body=immunization()))
    data = exchange.to_json()
    assert json.loads(json.dumps(data)) == data
    assert Exchange.from_json(data) == exchange
    assert dataclasses.asdict(exchange)["id"] == 1


def test_write_ndjson_replaces_the_file_atomically(tmp_path):
    path = Path(tmp_path / "t.ndjson")
    path.write_text("old content\n")
    TrafficRecorder().write_ndjson(path)
    assert path.read_text() == ""
    assert [p.name for p in tmp_path.iterdir()] == ["t.ndjson"]
