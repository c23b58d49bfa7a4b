"""Live targets: the Vaccicard acceptance (or production) API and eHealth's IAM Connect, for real.

``targets`` says where an endpoint is and how to log in to it (``vaccicard.toml`` ``[target.<name>]``
tables, ``VACCICARD_TARGET_*`` variables, flags); ``tls`` builds the TLS trust (system store plus an
optional CA bundle) and turns transport failures into messages a user can act on; ``iam`` logs a
professional in through the browser (authorization code + PKCE, then token exchange) or an
organisation in with its eHealth certificate (``private_key_jwt``), and hands out renewed tokens through
the ``TokenProvider`` interface the reference adapter uses. Everything here works unchanged against the
simulator on 127.0.0.1, which is how it is tested.
"""

from conformance.live.iam import (
    AuthenticationError,
    OrganisationLogin,
    ProfessionalLogin,
    TokenProvider,
    login_provider,
    read_p12,
    unverified_claims,
)
from conformance.live.targets import (
    BUILTIN_TARGETS,
    Target,
    load_targets,
    resolve_target,
    targets_from_tables,
)
from conformance.live.tls import httpx_verify, ssl_context, unreachable

__all__ = [
    "BUILTIN_TARGETS",
    "AuthenticationError",
    "OrganisationLogin",
    "ProfessionalLogin",
    "Target",
    "TokenProvider",
    "httpx_verify",
    "load_targets",
    "login_provider",
    "read_p12",
    "resolve_target",
    "ssl_context",
    "targets_from_tables",
    "unreachable",
    "unverified_claims",
]
