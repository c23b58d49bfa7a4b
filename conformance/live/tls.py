"""TLS trust for live targets, and turning transport failures into errors a user can act on.

``ssl_context(target)`` trusts the system store (certifi's bundle when the system store is empty, as
in minimal containers) plus the target's optional CA bundle; verification is off only when the target
says ``insecure``. ``unreachable(what, url, error)`` turns an httpx transport error into a
``TargetUnreachableError`` whose message names the URL and, for a certificate that could not be
verified, says why and how to add a CA bundle.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import httpx

from conformance.errors import ConfigurationError, TargetUnreachableError

if TYPE_CHECKING:
    from conformance.live.targets import Target

__all__ = ["check_reachable", "httpx_verify", "ssl_context", "tls_failure", "unreachable"]


def ssl_context(target: Target) -> ssl.SSLContext:
    """A client ``SSLContext`` for ``target``: system store plus its CA bundle, hostname checked."""
    context = ssl.create_default_context()
    if not context.get_ca_certs():  # empty (or a lazily read capath): certifi adds the public roots
        try:
            import certifi  # httpx depends on it

            context.load_verify_locations(cafile=certifi.where())
        except (ImportError, OSError, ssl.SSLError):
            pass  # no fallback store: only the CA bundle (if any) is trusted
    if target.ca_bundle is not None:
        bundle = target.ca_bundle
        if not bundle.exists():
            raise ConfigurationError(f"target {target.name}: CA bundle not found: {bundle}")
        try:
            if bundle.is_dir():
                context.load_verify_locations(capath=str(bundle))
            else:
                context.load_verify_locations(cafile=str(bundle))
        except (ssl.SSLError, ValueError) as error:
            raise ConfigurationError(
                f"target {target.name}: {bundle} is not a PEM CA bundle ({error})"
            ) from None
        except OSError as error:
            raise ConfigurationError(
                f"target {target.name}: cannot read CA bundle {bundle}: {error}"
            ) from None
    if target.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def httpx_verify(target: Target) -> ssl.SSLContext:
    """The ``verify=`` value for an ``httpx.Client`` talking to ``target``."""
    return ssl_context(target)


def tls_failure(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification failure behind a transport error, if that is what it was."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        for arg in current.args:
            if isinstance(arg, ssl.SSLCertVerificationError):
                return arg
        current = current.__cause__ or current.__context__
    return None


def unreachable(
    what: str, url: str, error: httpx.TransportError, *, target: str | None = None
) -> TargetUnreachableError:
    """A ``TargetUnreachableError`` for a transport failure talking to ``what`` at ``url``."""
    failure = tls_failure(error)
    if failure is not None:
        reason = getattr(failure, "verify_message", None) or failure.reason or str(failure)
        where = f"[target.{target}] of vaccicard.toml" if target else "the target's configuration"
        return TargetUnreachableError(
            f"{what} at {url}: the server's TLS certificate could not be verified ({reason}). "
            f"If it is signed by a private or corporate CA, add that CA's PEM bundle with "
            f'ca-bundle = "/path/to/ca.pem" in {where} (or --ca-bundle); '
            "if the certificate has expired, tell the server's operator"
        )
    if isinstance(error, httpx.TimeoutException):
        return TargetUnreachableError(f"{what} at {url} did not answer in time ({type(error).__name__})")
    detail = str(error) or type(error).__name__
    return TargetUnreachableError(f"{what} is unreachable at {url}: {detail}")


def check_reachable(target: Target) -> None:
    """Raise ``TargetUnreachableError`` unless the target's FHIR API and IAM Connect realm answer.

    Reads ``{fhir}/metadata`` and the realm's OpenID discovery with the target's TLS trust: the check a
    run makes before its first scenario, so an unreachable or untrusted target is one clear message.
    """
    checks = (
        ("the FHIR API", target.fhir_base_url.rstrip("/") + "/metadata"),
        ("IAM Connect", target.issuer + "/.well-known/openid-configuration"),
    )
    with httpx.Client(verify=httpx_verify(target), timeout=target.timeout) as client:
        for what, url in checks:
            try:
                client.get(url)
            except httpx.TransportError as error:
                raise unreachable(what, url, error, target=target.name) from None
