"""The ``etee`` command group: fetch and check ETKs, seal and unseal messages from the command line.

* ``etee etk``: fetch an ETK from a depot (``--depot URL --type CBE --value 0811122215 [--app-id
  VACCICARD]``, the simulator's JSON form of ``<depot>/etk``) or read one (``--file``), and print its
  holder, validity, key size and the result of its checks (``--ca`` adds the chain check; ``--save``
  writes the first ETK, DER, for ``seal --recipient``).
* ``etee seal PAYLOAD --sender-p12 auth.p12 [--signature-p12 sig.p12] --recipient ETK ... -o OUT``:
  the password of the ``.p12`` files is read from the environment variable named by
  ``--password-env`` (default ``VACCICARD_ETEE_PASSWORD``), never from the command line.
* ``etee unseal MESSAGE --recipient-p12 enc.p12 [--ca root.pem] [-o OUT]``: the payload goes to
  ``OUT`` (default stdout), the checks passed to stderr.

Exit codes through the main CLI: 0 ok, 1 an ETK or message fails its checks (``EtkError``,
``UnsealError``), 2 usage or configuration (bad file, missing password, ``SealError``), 3 the depot
cannot be reached.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from pathlib import Path
from typing import IO

import click
import httpx
from cryptography import x509

from conformance.errors import ConfigurationError, TargetUnreachableError
from conformance.etee.errors import EtkError
from conformance.etee.etk import Etk, parse_etk
from conformance.etee.pki import Credential, Credentials, describe_certificate, key_size
from conformance.etee.seal import DEFAULT_MAX_SKEW, seal, unseal

__all__ = ["DEFAULT_PASSWORD_ENV", "etee"]

DEFAULT_PASSWORD_ENV = "VACCICARD_ETEE_PASSWORD"

_password_option = click.option(
    "--password-env",
    default=DEFAULT_PASSWORD_ENV,
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the password of the .p12 file(s).",
)
_ca_option = click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted CA certificate file, PEM or DER (repeatable).",
)


@click.group("etee")
def etee() -> None:
    """End-to-end encryption (eHealth ETEE): ETKs, sealed messages."""


# --- etk --------------------------------------------------------------------------------------------


@etee.command("etk")
@click.option("--depot", metavar="URL", help="ETK depot base URL (the simulator's is <base>/etkdepot).")
@click.option("--type", "identifier_type", metavar="TYPE", help="Identifier type: SSIN, CBE, NIHII11 ...")
@click.option("--value", "identifier_value", metavar="DIGITS", help="Identifier value.")
@click.option("--app-id", "application_id", metavar="ID", help="Application id (e.g. VACCICARD).")
@click.option(
    "--file",
    "etk_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the ETK from this file (DER, PEM or base64) instead of a depot.",
)
@_ca_option
@click.option(
    "--save",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the first ETK (DER) to this file.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Depot request timeout (s).")
def etk_command(
    depot: str | None,
    identifier_type: str | None,
    identifier_value: str | None,
    application_id: str | None,
    etk_file: Path | None,
    ca_files: tuple[Path, ...],
    save: Path | None,
    timeout: float,
) -> None:
    """Fetch (or read) an ETK and print its holder, validity, key size and checks; exit 1 if it fails one."""
    if (depot is None) == (etk_file is None):
        raise ConfigurationError("give either --depot URL (with --type and --value) or --file PATH")
    if etk_file is not None:
        ders = [_read(etk_file)]
    else:
        if not identifier_type or not identifier_value:
            raise ConfigurationError("--depot needs --type and --value")
        ders = _fetch(depot or "", identifier_type, identifier_value, application_id, timeout)
    trust = _certificates(ca_files)
    failed = 0
    etks: list[Etk] = []
    for index, der in enumerate(ders, 1):
        etk = parse_etk(der)
        etks.append(etk)
        problems = etk.problems(trust=trust)
        failed += bool(problems)
        _print_etk(etk, index, len(ders), problems, bool(trust))
    if save is not None:
        save.write_bytes(etks[0].der)
        click.echo(f"saved {save}")
    if failed:
        raise EtkError(f"{failed} of {len(ders)} ETK(s) fail their checks")


def _fetch(depot: str, kind: str, value: str, application: str | None, timeout: float) -> list[bytes]:
    params = {"identifierType": kind.upper(), "identifierValue": value}
    if application:
        params["applicationId"] = application
    url = depot.rstrip("/") + "/etk"
    try:
        response = httpx.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as error:
        raise TargetUnreachableError(f"cannot reach the ETK depot {url}: {error}") from error
    if response.status_code != 200:
        try:
            detail = response.json().get("message", response.text)
        except ValueError:
            detail = response.text[:200]
        problem = f"the ETK depot answered {response.status_code}: {detail}"
        if response.status_code >= 500:
            raise TargetUnreachableError(problem)
        raise ConfigurationError(problem)
    if response.headers.get("content-type", "").startswith("application/pkcs7-mime"):
        return [response.content]
    try:
        etks = [base64.b64decode(item["etk"], validate=True) for item in response.json()["etks"]]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise EtkError(
            f"the ETK depot's answer is not the expected JSON ({{'etks': [{{'etk': base64}}]}}): {error}"
        ) from error
    if not etks:
        raise ConfigurationError(f"the ETK depot has no ETK for {kind}={value}")
    return etks


def _print_etk(etk: Etk, index: int, count: int, problems: list[str], trusted: bool) -> None:
    enc = etk.encryption_certificate
    app = f" (application {etk.application_id})" if etk.application_id else ""
    click.echo(f"ETK {index} of {count}")
    click.echo(f"  holder        {etk.holder or 'unknown'}{app}")
    click.echo(f"  subject       {enc.subject.rfc4514_string()}")
    click.echo(f"  signed by     {describe_certificate(etk.authentication_certificate)}")
    click.echo(f"  valid         {_instant(enc.not_valid_before_utc)} to {_instant(enc.not_valid_after_utc)}")
    click.echo(f"  key           RSA {etk.key_size or '?'} bits")
    if problems:
        click.echo("  verification  FAILED")
        for problem in problems:
            click.echo(f"    - {problem}")
    else:
        checks = "signature, issuer, key size, validity" + (", trust chain" if trusted else "")
        click.echo(f"  verification  ok ({checks})")


def _instant(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- seal / unseal ----------------------------------------------------------------------------------


@etee.command("seal")
@click.argument("payload", type=click.File("rb"))
@click.option(
    "--sender-p12",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The sender's authentication key and certificate (.p12): signs the outer layer.",
)
@click.option(
    "--signature-p12",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another key (.p12) for the inner signature (default: the authentication key).",
)
@_password_option
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A recipient's ETK or encryption certificate (repeatable).",
)
@_ca_option
@click.option("--scheme", type=click.Choice(["pss", "pkcs1v15"]), default="pss", show_default=True)
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Output file (default stdout).")
def seal_command(
    payload: IO[bytes],
    sender_p12: Path,
    signature_p12: Path | None,
    password_env: str,
    recipients: tuple[Path, ...],
    ca_files: tuple[Path, ...],
    scheme: str,
    output: IO[bytes],
) -> None:
    """Seal PAYLOAD for the recipients: inner signature, AES-128-CBC envelope, outer signature."""
    password = _password(password_env)
    authentication = _credential(sender_p12, password)
    signature = _credential(signature_p12, password) if signature_p12 is not None else None
    trust = _certificates(ca_files)
    targets = [_recipient(path, trust) for path in recipients]
    message = seal(
        payload.read(),
        sender=Credentials(authentication, signature),
        recipients=targets,
        signature_scheme="pss" if scheme == "pss" else "pkcs1v15",
    )
    output.write(message)
    click.echo(f"sealed {len(message)} bytes for {len(targets)} recipient(s)", err=True)


@etee.command("unseal")
@click.argument("message", type=click.File("rb"))
@click.option(
    "--recipient-p12",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The recipient's encryption key and certificate (.p12).",
)
@_password_option
@_ca_option
@click.option(
    "--max-skew",
    type=float,
    default=float(DEFAULT_MAX_SKEW),
    show_default=True,
    help="Seconds the signing time may differ from now.",
)
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Payload file (default stdout).")
def unseal_command(
    message: IO[bytes],
    recipient_p12: Path,
    password_env: str,
    ca_files: tuple[Path, ...],
    max_skew: float,
    output: IO[bytes],
) -> None:
    """Unseal MESSAGE and check it; the payload goes to OUTPUT, the checks to stderr; exit 1 if one fails."""
    recipient = _credential(recipient_p12, _password(password_env))
    result = unseal(message.read(), recipient=recipient, trust=_certificates(ca_files), max_skew=max_skew)
    output.write(result.payload)
    for check in result.checks:
        click.echo(f"ok  {check}", err=True)
    if not ca_files:
        click.echo("--  signer certificates not checked against a CA (no --ca given)", err=True)


# --- helpers ----------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from error


def _password(name: str) -> bytes | None:
    if name not in os.environ:
        raise ConfigurationError(f"set the .p12 password in the environment variable {name} (empty for none)")
    value = os.environ[name]
    return value.encode("utf-8") if value else None


def _credential(path: Path, password: bytes | None) -> Credential:
    return Credential.from_pkcs12(_read(path), password, source=str(path))


def _certificates(paths: tuple[Path, ...]) -> tuple[x509.Certificate, ...]:
    found: list[x509.Certificate] = []
    for path in paths:
        data = _read(path)
        try:
            if b"-----BEGIN" in data:
                found.extend(x509.load_pem_x509_certificates(data))
            else:
                found.append(x509.load_der_x509_certificate(data))
        except ValueError as error:
            raise ConfigurationError(f"{path} is not a PEM or DER certificate") from error
    return tuple(found)


def _recipient(path: Path, trust: tuple[x509.Certificate, ...]) -> Etk | x509.Certificate:
    """An ETK file (checked) or, failing that, an encryption certificate file."""
    data = _read(path)
    try:
        etk = parse_etk(data)
    except EtkError:
        certificates = (
            _certificates((path,)) if b"-----BEGIN CERTIFICATE" in data else _der_certificate(data, path)
        )
        if key_size(certificates[0]) is None:
            raise ConfigurationError(f"{path}: the certificate has no RSA key") from None
        return certificates[0]
    return etk.verify(trust=trust)


def _der_certificate(data: bytes, path: Path) -> tuple[x509.Certificate, ...]:
    try:
        return (x509.load_der_x509_certificate(data),)
    except ValueError as error:
        raise ConfigurationError(f"{path} is neither an ETK nor a certificate") from error
