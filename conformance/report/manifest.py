"""The integrity manifest of a report directory, its optional Ed25519 signature, and its verification.

``manifest.json`` is written last. It lists every other file of the directory (relative POSIX path,
SHA-256, size) and, when the run was given a signing key, a ``signature`` member: ``algorithm``
``Ed25519``, the signer's raw public key (base64) and its fingerprint (``sha256:<hex>`` of the raw
key), and ``value``, the base64 signature over the **canonical manifest bytes**: the manifest without
its ``signature`` member, serialised as compact JSON with sorted keys in UTF-8.

``verify_report(directory, public_key=None)`` recomputes everything: a changed, added or removed file,
an edited or missing manifest, or a signature that does not verify is a problem. A signed manifest is
always checked against the key it embeds; given the key you trust (``public_key``), the manifest must
be signed by that very key. Without it the result says which key signed, so a re-signed manifest
shows a fingerprint you do not expect.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conformance import __version__
from conformance.errors import ConfigurationError
from conformance.report.model import iso

__all__ = [
    "MANIFEST_FILE",
    "VerifyResult",
    "build_manifest",
    "canonical_bytes",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "manifest_bytes",
    "verify_report",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "vaccicard-conformance-manifest"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> dict[str, Path]:
    """Every file under ``directory`` but the manifest, by relative POSIX path."""
    found = {}
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = Path(root, name)
            relative = path.relative_to(directory).as_posix()
            if relative != MANIFEST_FILE:
                found[relative] = path
    return found


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw 32-byte public key."""
    return "sha256:" + hashlib.sha256(_raw(public_key)).hexdigest()


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without ``signature``, compact JSON, sorted keys."""
    unsigned = {key: value for key, value in manifest.items() if key != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


# -- keys ---------------------------------------------------------------------------------------------


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM (PKCS #8) or OpenSSH file."""
    data = _read(path, "signing key")
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"signing key {path} is not an unencrypted PEM or OpenSSH private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, an OpenSSH ``ssh-ed25519`` line, or a private key file."""
    data = _read(path, "public key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key: Any = serialization.load_ssh_public_key(data.strip())
        elif b"PRIVATE KEY" in data:
            key = load_private_key(path).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"public key {path} is not a PEM or OpenSSH public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"public key {path} is not an Ed25519 key")
    return key


# -- writing --------------------------------------------------------------------------------------------


def build_manifest(directory: str | Path, sign_key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """The manifest of ``directory``'s files as they are now, signed when ``sign_key`` is given."""
    folder = Path(directory)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "created": iso(datetime.now(UTC)),
        "harness_version": __version__,
        "algorithm": "sha256",
        "files": {
            name: {"sha256": _sha256(path), "size": path.stat().st_size}
            for name, path in _files(folder).items()
        },
    }
    if sign_key is not None:
        public = sign_key.public_key()
        manifest["signature"] = {
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(_raw(public)).decode("ascii"),
            "public_key_fingerprint": key_fingerprint(public),
            "value": base64.b64encode(sign_key.sign(canonical_bytes(manifest))).decode("ascii"),
        }
    else:
        manifest["signature"] = None
    return manifest


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """manifest.json as written: indented JSON with sorted keys and a final newline."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# -- verifying ------------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """What ``verify_report`` found: problems (the directory is not intact) and notes."""

    directory: Path
    files: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signed_by: str | None = None
    """Fingerprint of the key whose signature verified, if any."""

    @property
    def ok(self) -> bool:
        """True when every file matches the manifest and any signature verifies."""
        return not self.problems


def verify_report(directory: str | Path, public_key: Ed25519PublicKey | None = None) -> VerifyResult:
    """Recompute a report directory's manifest and signature; a missing directory is a ConfigurationError."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigurationError(f"report directory not found: {folder}")
    result = VerifyResult(folder)
    manifest = _read_manifest(folder, result)
    if manifest is None:
        return result
    listed: Mapping[str, Any] = manifest["files"]
    present = _files(folder)
    result.files = len(listed)
    for name in sorted(set(listed) - set(present)):
        result.problems.append(f"removed: {name} is listed in {MANIFEST_FILE} but missing")
    for name in sorted(set(present) - set(listed)):
        result.problems.append(f"added: {name} is not listed in {MANIFEST_FILE}")
    for name in sorted(set(listed) & set(present)):
        entry = listed[name]
        if not isinstance(entry, dict) or _sha256(present[name]) != entry.get("sha256"):
            result.problems.append(f"changed: {name} does not match its SHA-256 in {MANIFEST_FILE}")
    _check_signature(manifest, public_key, result)
    return result


def _read_manifest(folder: Path, result: VerifyResult) -> dict[str, Any] | None:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        result.problems.append(f"removed: {MANIFEST_FILE} is missing, so nothing can be checked")
        return None
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        result.problems.append(f"changed: {MANIFEST_FILE} is not valid JSON ({exc})")
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        result.problems.append(f"changed: {MANIFEST_FILE} is not a vaccicard-conformance manifest")
        return None
    return manifest


def _check_signature(
    manifest: Mapping[str, Any], trusted: Ed25519PublicKey | None, result: VerifyResult
) -> None:
    signature = manifest.get("signature")
    if not signature:
        if trusted is not None:
            result.problems.append(
                f"not signed: a public key was given but {MANIFEST_FILE} carries no signature"
            )
        else:
            result.notes.append(
                f"{MANIFEST_FILE} is not signed: it shows the files are consistent, not who wrote them"
            )
        return
    try:
        embedded = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(signature["public_key"], validate=True)
        )
        value = base64.b64decode(signature["value"], validate=True)
    except (KeyError, TypeError, ValueError):
        result.problems.append(f"bad signature: the signature in {MANIFEST_FILE} is malformed")
        return
    fingerprint = key_fingerprint(embedded)
    if trusted is not None and key_fingerprint(trusted) != fingerprint:
        result.problems.append(
            f"bad signature: {MANIFEST_FILE} is signed by key {fingerprint}, not by the given key "
            f"{key_fingerprint(trusted)}"
        )
        return
    try:
        embedded.verify(value, canonical_bytes(manifest))
    except InvalidSignature:
        result.problems.append(f"bad signature: {MANIFEST_FILE} was changed after it was signed")
        return
    result.signed_by = fingerprint
    if trusted is None:
        result.notes.append(
            f"signed by key {fingerprint}; no public key was given, so whether you trust that key "
            "was not checked (use --public-key)"
        )
