"""Tests of the ``etee`` command group with click's CliRunner (the depot served on 127.0.0.1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conformance.errors import (
    EXIT_FAILURES,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ConfigurationError,
    TargetUnreachableError,
)
from conformance.etee.cli import DEFAULT_PASSWORD_ENV, etee
from conformance.etee.errors import EtkError, UnsealError, UnsealProblem
from conformance.etee.etk import build_etk
from conformance.etee.seal import seal
from conformance.simulator.etk_depot import REGISTER_CBE, EtkDepot
from conformance.simulator.http import HttpRequest, HttpResponse
from conformance.simulator.server import SimulatorServer
from tests.test_etee_pki import LUC_SSIN, UNKNOWN_CBE, World, etee_world

PASSWORD = "test-pw"
PAYLOAD = b'{"resourceType":"Immunization"}'


@pytest.fixture
def world() -> World:
    return etee_world()


class DepotApp:
    """Just the depot behind the simulator's HTTP server."""

    max_body_bytes = 10_000

    def __init__(self, depot: EtkDepot) -> None:
        self.depot = depot

    def handle(self, request: HttpRequest) -> HttpResponse:
        return self.depot.handle(request)

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        return HttpResponse(status, {}, diagnostics.encode())

    def attach(self, base_url: str) -> None:
        """The depot needs no base URL."""


@pytest.fixture
def depot_url(world: World) -> Iterator[str]:
    with SimulatorServer(DepotApp(world.depot), host="127.0.0.1", port=0) as server:
        yield server.base_url + world.depot.config.prefix


@pytest.fixture
def files(world: World, tmp_path: Path) -> dict[str, Path]:
    """The keys and ETKs the commands read, as a vendor developer would have them."""
    password = PASSWORD.encode()
    paths = {
        "luc_auth": (tmp_path / "luc.auth.p12", world.luc.authentication.to_pkcs12(password)),
        "luc_eid": (tmp_path / "luc.eid.p12", world.luc_eid.to_pkcs12(password)),
        "luc_enc": (tmp_path / "luc.enc.p12", world.luc.encryption.to_pkcs12(password)),
        "register_enc": (tmp_path / "register.enc.p12", world.register.encryption.to_pkcs12(password)),
        "register_etk": (tmp_path / "register.etk", world.depot.register_etk.der),
        "expired_etk": (tmp_path / "expired.etk", build_etk(world.expired)),
        "register_cert": (tmp_path / "register.pem", world.register.encryption.certificate_pem()),
        "root": (tmp_path / "root.pem", world.depot.root_pem()),
        "payload": (tmp_path / "payload.json", PAYLOAD),
        "junk": (tmp_path / "junk.bin", b"junk"),
    }
    for path, data in paths.values():
        path.write_bytes(data)
    return {name: path for name, (path, _) in paths.items()}


def run(*args: object, env: dict[str, str] | None = None) -> Result:
    environment = {DEFAULT_PASSWORD_ENV: PASSWORD} if env is None else env
    return CliRunner().invoke(etee, [str(a) for a in args], env=environment)


def failure(result: Result, kind: type[Exception], exit_code: int) -> Exception:
    assert isinstance(result.exception, kind), result.output
    assert result.exception.exit_code == exit_code  # type: ignore[attr-defined]
    return result.exception


# --- etk ------------------------------------------------------------------------------------------------


def test_etk_from_a_file(files: dict[str, Path]) -> None:
    result = run("etk", "--file", files["register_etk"], "--ca", files["root"])
    assert result.exit_code == 0, result.output
    assert f"holder        CBE={REGISTER_CBE} (application VACCICARD)" in result.stdout
    assert "key           RSA 2048 bits" in result.stdout
    assert "verification  ok (signature, issuer, key size, validity, trust chain)" in result.stdout


def test_etk_that_fails_its_checks_exits_1(files: dict[str, Path]) -> None:
    result = run("etk", "--file", files["expired_etk"])
    failure(result, EtkError, EXIT_FAILURES)
    assert "verification  FAILED" in result.stdout and "not valid now" in result.stdout


def test_etk_from_the_depot_over_http(depot_url: str, tmp_path: Path, files: dict[str, Path]) -> None:
    saved = tmp_path / "luc.etk"
    result = run(
        "etk",
        "--depot",
        depot_url,
        "--type",
        "nihii11",
        "--value",
        "10000106003",
        "--save",
        saved,
        "--ca",
        files["root"],
    )
    assert result.exit_code == 0, result.output
    assert f"holder        SSIN={LUC_SSIN}" in result.stdout and f"saved {saved}" in result.stdout
    assert run("etk", "--file", saved).exit_code == 0
    result = run(
        "etk", "--depot", depot_url, "--type", "CBE", "--value", REGISTER_CBE, "--app-id", "VACCICARD"
    )
    assert "application VACCICARD" in result.stdout


def test_etk_unknown_holder_and_bad_usage(depot_url: str, files: dict[str, Path]) -> None:
    error = failure(
        run("etk", "--depot", depot_url, "--type", "CBE", "--value", UNKNOWN_CBE),
        ConfigurationError,
        EXIT_USAGE,
    )
    assert "404" in error.message and UNKNOWN_CBE in error.message  # type: ignore[attr-defined]
    failure(run("etk"), ConfigurationError, EXIT_USAGE)
    failure(run("etk", "--depot", depot_url, "--file", files["register_etk"]), ConfigurationError, EXIT_USAGE)
    failure(run("etk", "--depot", depot_url, "--type", "CBE"), ConfigurationError, EXIT_USAGE)
    failure(run("etk", "--file", files["junk"]), EtkError, EXIT_FAILURES)


def test_etk_depot_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(
        "etk",
        "--depot",
        f"http://127.0.0.1:{port}/etkdepot",
        "--type",
        "CBE",
        "--value",
        REGISTER_CBE,
        "--timeout",
        "2",
    )
    failure(result, TargetUnreachableError, EXIT_UNREACHABLE)


# --- seal / unseal --------------------------------------------------------------------------------------


def test_seal_then_unseal(files: dict[str, Path], tmp_path: Path) -> None:
    message = tmp_path / "message.p7m"
    result = run(
        "seal",
        files["payload"],
        "--sender-p12",
        files["luc_auth"],
        "--recipient",
        files["register_etk"],
        "-o",
        message,
        "--ca",
        files["root"],
    )
    assert result.exit_code == 0, result.output
    assert "for 1 recipient(s)" in result.stderr
    out = tmp_path / "payload.out"
    result = run(
        "unseal", message, "--recipient-p12", files["register_enc"], "--ca", files["root"], "-o", out
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == PAYLOAD
    assert "ok  outer signature valid (SHA-256, RSASSA-PSS)" in result.stderr
    assert "ok  signer certificates chain to a trust anchor" in result.stderr


def test_seal_with_an_eid_signature_and_a_certificate_recipient(
    files: dict[str, Path], tmp_path: Path
) -> None:
    message = tmp_path / "message.p7m"
    result = run(
        "seal",
        files["payload"],
        "--sender-p12",
        files["luc_auth"],
        "--signature-p12",
        files["luc_eid"],
        "--scheme",
        "pkcs1v15",
        "--recipient",
        files["register_cert"],
        "-o",
        message,
    )
    assert result.exit_code == 0, result.output
    result = run("unseal", message, "--recipient-p12", files["register_enc"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == PAYLOAD
    assert "RSA PKCS#1 v1.5" in result.stderr and "no --ca given" in result.stderr


def test_unseal_failure_exits_1(world: World, files: dict[str, Path], tmp_path: Path) -> None:
    message = tmp_path / "for-luc.p7m"
    message.write_bytes(
        seal(PAYLOAD, sender=world.pharmacy.credentials(), recipients=[world.luc.encryption.certificate])
    )
    error = failure(
        run("unseal", message, "--recipient-p12", files["register_enc"]), UnsealError, EXIT_FAILURES
    )
    assert error.problem is UnsealProblem.WRONG_RECIPIENT  # type: ignore[attr-defined]
    assert run("unseal", message, "--recipient-p12", files["luc_enc"]).stdout_bytes == PAYLOAD


def test_password_problems_exit_2(files: dict[str, Path]) -> None:
    args = ("unseal", files["payload"], "--recipient-p12", files["register_enc"])
    error = failure(run(*args, env={}), ConfigurationError, EXIT_USAGE)
    assert DEFAULT_PASSWORD_ENV in error.message  # type: ignore[attr-defined]
    error = failure(run(*args, env={DEFAULT_PASSWORD_ENV: "wrong"}), ConfigurationError, EXIT_USAGE)
    assert "wrong password" in error.message  # type: ignore[attr-defined]
    result = run(*args, "--password-env", "MY_PW", env={"MY_PW": PASSWORD})
    failure(result, UnsealError, EXIT_FAILURES)  # opened the key; the payload file is no message


def test_seal_usage_errors(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m"
    failure(
        run(
            "seal",
            files["payload"],
            "--sender-p12",
            files["luc_auth"],
            "--recipient",
            files["junk"],
            "-o",
            out,
        ),
        ConfigurationError,
        EXIT_USAGE,
    )
    failure(
        run(
            "seal",
            files["payload"],
            "--sender-p12",
            files["luc_auth"],
            "--recipient",
            files["expired_etk"],
            "-o",
            out,
        ),
        EtkError,
        EXIT_FAILURES,
    )
    failure(
        run(
            "seal",
            files["payload"],
            "--sender-p12",
            files["luc_auth"],
            "--recipient",
            files["register_etk"],
            "--ca",
            files["junk"],
            "-o",
            out,
        ),
        ConfigurationError,
        EXIT_USAGE,
    )
