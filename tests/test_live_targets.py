"""Targets: the built-in simulator, ``[target.<name>]`` tables, env and flag overrides, clear errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from conformance.errors import ConfigurationError
from conformance.live.targets import (
    BUILTIN_TARGETS,
    Target,
    load_targets,
    resolve_target,
    targets_from_tables,
)
from conformance.live.tls import ssl_context

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vaccicard.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vaccicard.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_simulator_is_built_in() -> None:
    target = resolve_target(None, env={})
    assert target == BUILTIN_TARGETS["simulator"]
    assert target.fhir_base_url == "http://127.0.0.1:8080/fhir"
    assert target.issuer == "http://127.0.0.1:8080/auth/realms/healthcare"
    assert target.environment == "simulator" and target.auth_mode == "professional"
    assert not target.insecure and target.ca_bundle is None


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    targets = load_targets(EXAMPLE, env={})
    assert set(targets) == {"simulator", "acceptance", "acceptance-organisation"}
    acceptance = targets["acceptance"]
    assert acceptance.fhir_base_url.startswith("https://") and acceptance.environment == "acceptance"
    assert "example" in acceptance.fhir_base_url  # a placeholder, never a real host
    assert acceptance.redirect_port == 53682 and acceptance.read_timeout == 60
    organisation = targets["acceptance-organisation"]
    assert organisation.auth_mode == "organisation" and organisation.client_id is None
    assert organisation.p12_path == EXAMPLE.parent / "certs" / "acceptance-organisation.p12"
    assert organisation.p12_password_env == "VACCICARD_P12_PASSWORD"
    with pytest.raises(ConfigurationError, match="certificate file not found"):
        resolve_target("acceptance-organisation", targets=targets)


def test_tables_env_and_flags_in_that_order(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    ca = tmp_path / "certs" / "ca.pem"
    ca.write_text("unused", encoding="utf-8")
    path = write(
        tmp_path,
        """
        [target.acpt]
        fhir_base_url = "https://fhir.acpt.example/fhir"
        iam-realm-url = "https://iam.acpt.example/auth/realms/healthcare"
        client-id = "my-software"
        ca-bundle = "certs/ca.pem"
        read-timeout = 12
        """,
    )
    env = {
        "VACCICARD_TARGET_ACPT_READ_TIMEOUT": "20",
        "VACCICARD_TARGET_ACPT_INSECURE": "false",
        "VACCICARD_TARGET_SIMULATOR_FHIR_BASE_URL": "http://127.0.0.1:9999/fhir",
        "VACCICARD_TARGET": "acpt",  # not a setting: ignored here
    }
    targets = load_targets(path, env)
    assert targets["simulator"].fhir_base_url == "http://127.0.0.1:9999/fhir"
    assert targets["simulator"].client_id == "vendor-software"  # the rest of the built-in stays
    target = resolve_target("ACPT", targets=targets, overrides={"connect_timeout": 3, "ca_bundle": None})
    assert target.ca_bundle == ca  # relative to the file
    assert target.read_timeout == 20.0 and target.connect_timeout == 3.0
    assert target.environment == "acceptance" and target.source.endswith("+ command line")
    assert target.timeout.read == 20.0 and target.timeout.connect == 3.0


def test_a_url_is_an_ad_hoc_target() -> None:
    target = resolve_target("http://127.0.0.1:8123/fhir", targets={}, overrides={"login_hint": "x"})
    assert target.iam_realm_url == "http://127.0.0.1:8123/auth/realms/healthcare"
    assert target.environment == "simulator" and target.login_hint == "x"
    remote = resolve_target(
        "https://fhir.example/fhir",
        targets={},
        overrides={"iam_realm_url": "https://iam.example/auth/realms/healthcare"},
    )
    assert (
        remote.environment == "acceptance" and remote.issuer == "https://iam.example/auth/realms/healthcare"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[target.a]\niam-realm-url = "https://i.example/r"\nclient-id = "c"',
            "target a .*missing fhir-base-url",
        ),
        (
            '[target.a]\nfhir-base-url = "https://f.example/fhir"\niam-realm-url = "https://i.example/r"',
            "missing client-id",
        ),
        (
            '[target.a]\nfhir-base-url = "http://f.example/fhir"\niam-realm-url = "https://i.example/r"\nclient-id = "c"',
            "must use https",
        ),
        ('[target.a]\nfhir-base-url = "ftp://x"\niam-realm-url = "https://i"', "must be an http\\(s\\) URL"),
        (
            "[target.a]\nfhir-base-uri = 'https://f.example'",
            "unknown setting 'fhir-base-uri'; did you mean fhir-base-url",
        ),
        ("[target.a]\nread-timeout = -1", "read-timeout must be a positive number"),
        ("[target.a]\nredirect-port = 70000", "redirect-port must be a port number"),
        ("[target.a]\nauth-mode = 'robot'", "auth-mode must be one of professional, organisation"),
        ("[target.a]\ninsecure = 'maybe'", "insecure must be true or false"),
        ("target = 3", "must be a table"),
        ("[target]\na = 3", r"\[target.a\] must be a table"),
        ("[target.a\n", "not valid TOML"),
    ],
)
def test_configuration_errors_say_what_and_where(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_targets(write(tmp_path, toml), env={})


def test_unknown_target_suggests_close_names() -> None:
    targets = targets_from_tables(
        {
            "acceptance": {
                "fhir-base-url": "https://f.example/fhir",
                "iam-realm-url": "https://i.example/r",
                "client-id": "c",
            }
        },
        env={},
    )
    with pytest.raises(ConfigurationError, match="unknown target 'acceptanse'; did you mean acceptance"):
        resolve_target("acceptanse", targets=targets)
    with pytest.raises(ConfigurationError, match="known: acceptance, simulator"):
        resolve_target("production", targets=targets)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="configuration file not found"):
        load_targets(tmp_path / "nope.toml", env={})
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ConfigurationError, match=f"CA bundle not found: {missing}"):
        resolve_target(None, targets=BUILTIN_TARGETS, overrides={"ca_bundle": missing})
    with pytest.raises(ConfigurationError, match="organisation login needs p12-path"):
        resolve_target(None, targets=BUILTIN_TARGETS, overrides={"auth_mode": "organisation"})


def test_ssl_context_trusts_the_system_store_plus_the_bundle(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.test_live_iam import make_ca

    _, ca = make_ca("Bundle CA")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    base = BUILTIN_TARGETS["simulator"]
    plain = ssl_context(base)
    with_bundle = ssl_context(Target(**{**base.__dict__, "ca_bundle": bundle}))
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    subjects = [dict(item[0] for item in c["subject"]).get("commonName") for c in with_bundle.get_ca_certs()]
    assert "Bundle CA" in subjects
    assert len(with_bundle.get_ca_certs()) == len(plain.get_ca_certs()) + 1
    insecure = ssl_context(Target(**{**base.__dict__, "insecure": True}))
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is not a PEM CA bundle"):
        ssl_context(Target(**{**base.__dict__, "ca_bundle": garbage}))
