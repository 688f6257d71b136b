"""Why an agent was refused at authentication: a machine code (log field and metric label),
the SQLSTATE the client sees, and a client-facing message that never carries the token."""

# S105 reads "password"/"token" in these names as secrets; they are codes and SQLSTATEs.
# ruff: noqa: S105

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

# SQLSTATEs of the FATAL ErrorResponse the proxy sends when authentication fails.
INVALID_PASSWORD = "28P01"  # invalid_password: the token itself is bad
INVALID_AUTHORIZATION_SPECIFICATION = "28000"  # the token comes from nobody we trust
CANNOT_CONNECT_NOW = "57P03"  # we cannot verify tokens right now; retrying may work


class AuthFailure(StrEnum):
    """Why a token was refused; reused as a log field and a metric label."""

    MALFORMED_TOKEN = "malformed_token"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KID = "unknown_kid"
    MISSING_KID = "missing_kid"
    KEY_ALG_MISMATCH = "key_alg_mismatch"
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUDIENCE = "wrong_audience"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    INVALID_TOKEN = "invalid_token"
    UNKNOWN_DEV_TOKEN = "unknown_dev_token"
    JWKS_UNAVAILABLE = "jwks_unavailable"


_SQLSTATE: Mapping[AuthFailure, str] = {
    AuthFailure.UNKNOWN_ISSUER: INVALID_AUTHORIZATION_SPECIFICATION,
    AuthFailure.JWKS_UNAVAILABLE: CANNOT_CONNECT_NOW,
}


def sqlstate_of(code: AuthFailure) -> str:
    """28000 for an untrusted issuer, 57P03 when keys cannot be fetched, else 28P01."""
    return _SQLSTATE.get(code, INVALID_PASSWORD)


class AuthError(Exception):
    """An agent's credential was refused.

    ``code`` is the machine code (log field, metric label), ``sqlstate`` goes into the
    client's ErrorResponse 'C' field and ``message`` into its 'M' field. ``context`` holds
    a few short, non-secret facts for the logs (issuer, kid, alg). No field ever contains
    the token: callers may log and show every attribute of this exception.
    """

    def __init__(
        self, code: AuthFailure, message: str, *, context: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.sqlstate = sqlstate_of(code)
        self.message = message
        self.context: Mapping[str, str] = dict(context or {})


class UpstreamAuthError(Exception):
    """The proxy could not authenticate to the upstream PostgreSQL with its own credential,
    or the upstream failed to prove it knows that credential. Never carries the password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
