"""Authentication: agents to the proxy (workload tokens, development tokens) and the proxy
to the upstream PostgreSQL (SCRAM-SHA-256, MD5). Imported as ``pgwarden.proxy.auth``."""

from pgwarden.proxy.auth.agent import AgentAuthenticator
from pgwarden.proxy.auth.config import AuthConfig, IssuerConfig
from pgwarden.proxy.auth.dev_tokens import (
    DEV_AUTH_METHOD,
    DEV_ISSUER,
    DevToken,
    DevTokens,
    issue_dev_token,
    new_dev_token,
    token_digest,
)
from pgwarden.proxy.auth.errors import (
    CANNOT_CONNECT_NOW,
    INVALID_AUTHORIZATION_SPECIFICATION,
    INVALID_PASSWORD,
    AuthError,
    AuthFailure,
    UpstreamAuthError,
)
from pgwarden.proxy.auth.scram import (
    SCRAM_SHA_256,
    ScramClient,
    choose_sasl_mechanism,
    md5_password_payload,
)

__all__ = [
    "CANNOT_CONNECT_NOW",
    "DEV_AUTH_METHOD",
    "DEV_ISSUER",
    "INVALID_AUTHORIZATION_SPECIFICATION",
    "INVALID_PASSWORD",
    "SCRAM_SHA_256",
    "AgentAuthenticator",
    "AuthConfig",
    "AuthError",
    "AuthFailure",
    "DevToken",
    "DevTokens",
    "IssuerConfig",
    "ScramClient",
    "UpstreamAuthError",
    "choose_sasl_mechanism",
    "issue_dev_token",
    "md5_password_payload",
    "new_dev_token",
    "token_digest",
]
