"""Agent authentication: the client's password is a workload token (a JWT) from a trusted
issuer, verified before any upstream connection exists; in development, a static token
from the development tokens file.

Verification order: the header's ``alg`` must be on the allow-list (never ``none``, never
HMAC); the ``iss`` claim picks the issuer (unknown issuer refused) and the header's ``kid``
picks one of its keys, bound to that algorithm; PyJWT verifies the signature, ``aud``
and ``iss`` and requires ``exp``, ``iss``, ``aud`` and ``sub``; ``exp``/``nbf``/``iat``
are then checked against our own (injectable) clock with the configured leeway. Only
after the signature is valid does any claim reach the :class:`Identity`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jwt
from jwt import PyJWK
from jwt import exceptions as jwt_errors

from pgwarden.proxy.auth.config import AuthConfig
from pgwarden.proxy.auth.dev_tokens import DevTokens
from pgwarden.proxy.auth.errors import AuthError, AuthFailure
from pgwarden.proxy.auth.jwks import IssuerKeys, JwksError, JwksSource, jwks_file_error
from pgwarden.proxy.decision import Identity

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16384
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


def _short(value: object, limit: int = 80) -> str:
    """A log- and message-safe rendering of an attacker-controlled header or claim value."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AgentAuthenticator:
    """Turns an agent's password (a workload token) into a verified :class:`Identity`.

    Build it from the config at start-up, call :meth:`authenticate` once per
    client connection, :meth:`close` at shutdown. The common path (a cached key) does no
    I/O; an unknown ``kid`` or a first use of a ``jwks_url`` issuer awaits one fetch.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the files the config names (JWKS files, CA files, development tokens);
        every failure is a ConfigError naming the key and the config file. ``jwks_url``
        issuers are fetched on first use (or by :meth:`warm_up`). ``clock`` (wall time, for
        ``exp``/``nbf``/``iat``) and ``monotonic`` (for the JWKS rate limit and cache age)
        are injectable for tests."""
        self.config = config
        self._clock = clock
        self._algorithms = frozenset(config.algorithms)
        self._http: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[bool]] = set()
        self._issuers: dict[str, IssuerKeys] = {}
        for issuer in config.issuers:
            keys = IssuerKeys(
                JwksSource(issuer, timeout_s=config.jwks_timeout_s, session=self.http_session),
                config.algorithms,
                refresh_interval_s=config.jwks_refresh_interval_s,
                max_age_s=config.jwks_cache_s,
                monotonic=monotonic,
            )
            if issuer.jwks_file is not None:
                try:
                    keys.load_file_now()
                except JwksError as exc:
                    raise jwks_file_error(issuer, exc) from None
            self._issuers[issuer.issuer] = keys
        self._dev_tokens: DevTokens | None = None
        if config.dev_tokens_file is not None:
            if not config.dev_tokens_file.is_file():
                raise config.error("dev_tokens_file", f"{config.dev_tokens_file}: file not found")
            self._dev_tokens = DevTokens.load(config.dev_tokens_file)
            log.warning(
                "development tokens enabled (%d from %s): not for production",
                len(self._dev_tokens),
                config.dev_tokens_file,
            )

    # -- lifecycle --------------------------------------------------------------------------

    def http_session(self) -> aiohttp.ClientSession:
        """The HTTP client for ``jwks_url`` fetches, created on first use in the running loop."""
        if self._http is None or self._http.closed:
            # Imported on first use: only jwks_url issuers need it (~12 MiB of the
            # proxy's memory otherwise).
            import aiohttp  # noqa: PLC0415

            self._http = aiohttp.ClientSession(trust_env=False)
        return self._http

    async def warm_up(self) -> None:
        """Fetch every ``jwks_url`` issuer's keys now (failures are logged, not raised)."""
        await asyncio.gather(*(k.refresh() for k in self._issuers.values() if k.current is None))

    async def wait_background(self) -> None:
        """Wait for background key refreshes started by stale key sets (tests, shutdown)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def issuer_keys(self, issuer: str) -> IssuerKeys:
        return self._issuers[issuer]

    # -- authentication --------------------------------------------------------------------

    async def authenticate(self, password: str) -> Identity:
        """Verify the agent's token; raises :class:`AuthError` (never containing it)."""
        if not password or len(password) > MAX_TOKEN_CHARS:
            raise AuthError(AuthFailure.MALFORMED_TOKEN, "pgwarden: the password is not a token")
        if self._dev_tokens is not None:
            identity = self._dev_tokens.lookup(password)
            if identity is not None:
                return identity
            if not self._issuers:
                raise AuthError(
                    AuthFailure.UNKNOWN_DEV_TOKEN, "pgwarden: the token is not a known token"
                )
        return await self._verify_jwt(password)

    async def _verify_jwt(self, token: str) -> Identity:
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt_errors.PyJWTError:
            raise AuthError(
                AuthFailure.MALFORMED_TOKEN,
                "pgwarden: the password is not a valid workload token (a signed JWT)",
            ) from None
        header: dict[str, Any] = unverified["header"]
        alg = header.get("alg")
        kid = header.get("kid")  # PyJWT has checked that it is a string when present
        iss = unverified["payload"].get("iss")
        context = {
            name: _short(value, limit)
            for name, value, limit in (("alg", alg, 20), ("kid", kid, 80), ("issuer", iss, 200))
            if value is not None
        }
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError(
                AuthFailure.ALG_NOT_ALLOWED,
                f"pgwarden: token algorithm {_short(alg, 20)!r} is not accepted",
                context=context,
            )
        if not isinstance(iss, str):
            raise AuthError(
                AuthFailure.MISSING_CLAIM, "pgwarden: token has no 'iss' claim", context=context
            )
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise AuthError(
                AuthFailure.UNKNOWN_ISSUER,
                "pgwarden: token issuer is not trusted by this proxy",
                context=context,
            )
        key = await self._key(issuer, kid, alg, context)
        claims = self._decode(token, key, alg, iss, context)
        self._check_times(claims, context)
        return self._identity(claims, iss, context)

    async def _key(
        self, issuer: IssuerKeys, kid: str | None, alg: str, context: Mapping[str, str]
    ) -> PyJWK:
        if issuer.current is None:
            await issuer.refresh()
        if issuer.current is None:
            raise AuthError(
                AuthFailure.JWKS_UNAVAILABLE,
                "pgwarden: cannot verify tokens of this issuer right now "
                "(its signing keys are unavailable); try again later",
                context=context,
            )
        key = issuer.current.find(kid, alg)
        if key is not None:
            self._refresh_if_stale(issuer)
            return key
        if kid is None:
            several = any(a == alg for (_, a) in issuer.current.keys)
            raise AuthError(
                AuthFailure.MISSING_KID if several else AuthFailure.KEY_ALG_MISMATCH,
                "pgwarden: token has no 'kid' header and its issuer has several keys"
                if several
                else f"pgwarden: no key of the token's issuer verifies {alg}",
                context=context,
            )
        if kid not in issuer.current.kids and await issuer.refresh():
            # A key we did not know: the issuer may have rotated; look again once.
            key = issuer.current.find(kid, alg)
            if key is not None:
                return key
        if kid in issuer.current.kids:
            raise AuthError(
                AuthFailure.KEY_ALG_MISMATCH,
                f"pgwarden: the token's key does not verify {alg}",
                context=context,
            )
        raise AuthError(
            AuthFailure.UNKNOWN_KID,
            "pgwarden: token signing key (kid) is not known for its issuer",
            context=context,
        )

    def _refresh_if_stale(self, issuer: IssuerKeys) -> None:
        """Stale keys still verify; a background refresh replaces them (rate-limited)."""
        if issuer.refresh_due():
            task = asyncio.get_running_loop().create_task(issuer.refresh())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _decode(
        self, token: str, key: PyJWK, alg: str, iss: str, context: Mapping[str, str]
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=iss,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    # Time claims are checked by _check_times with our clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt_errors.InvalidSignatureError:
            code, message = AuthFailure.BAD_SIGNATURE, "token signature is not valid"
        except jwt_errors.InvalidAlgorithmError:
            code, message = AuthFailure.ALG_NOT_ALLOWED, f"token algorithm {alg!r} is not accepted"
        except jwt_errors.InvalidAudienceError:
            code = AuthFailure.WRONG_AUDIENCE
            message = (
                f"token audience does not match this proxy (expected {self.config.audience!r})"
            )
        except jwt_errors.MissingRequiredClaimError as exc:
            code, message = AuthFailure.MISSING_CLAIM, f"token has no {exc.claim!r} claim"
        except jwt_errors.InvalidIssuerError:
            code, message = AuthFailure.UNKNOWN_ISSUER, "token issuer is not trusted by this proxy"
        except (jwt_errors.InvalidSubjectError, jwt_errors.InvalidJTIError):
            code, message = AuthFailure.INVALID_CLAIM, "token has a malformed 'sub' or 'jti' claim"
        except jwt_errors.DecodeError:
            code, message = AuthFailure.MALFORMED_TOKEN, "the token cannot be decoded"
        except jwt_errors.PyJWTError as exc:
            log.info("token refused by PyJWT: %s", type(exc).__name__)
            code, message = AuthFailure.INVALID_TOKEN, "the token is not valid"
        raise AuthError(code, f"pgwarden: {message}", context=context)

    def _check_times(self, claims: Mapping[str, Any], context: Mapping[str, str]) -> None:
        now = self._clock()
        leeway = self.config.leeway_s
        times: dict[str, float] = {}
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AuthError(
                    AuthFailure.INVALID_CLAIM,
                    f"pgwarden: token claim {name!r} must be a number (seconds since the epoch)",
                    context=context,
                )
            times[name] = float(value)
        if times["exp"] <= now - leeway:
            raise AuthError(
                AuthFailure.TOKEN_EXPIRED, "pgwarden: token has expired", context=context
            )
        for name in ("nbf", "iat"):
            if name in times and times[name] > now + leeway:
                raise AuthError(
                    AuthFailure.TOKEN_NOT_YET_VALID,
                    f"pgwarden: token is not valid yet ({name} is in the future)",
                    context=context,
                )

    def _identity(
        self, claims: Mapping[str, Any], iss: str, context: Mapping[str, str]
    ) -> Identity:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError(
                AuthFailure.INVALID_CLAIM,
                "pgwarden: token claim 'sub' must be a non-empty string",
                context=context,
            )
        raw_groups = claims.get(self.config.groups_claim)
        groups: tuple[str, ...]
        if raw_groups is None:
            groups = ()
        elif isinstance(raw_groups, str):
            groups = tuple(dict.fromkeys(raw_groups.split()))
        elif isinstance(raw_groups, list) and all(isinstance(g, str) and g for g in raw_groups):
            groups = tuple(dict.fromkeys(raw_groups))
        else:
            raise AuthError(
                AuthFailure.INVALID_CLAIM,
                f"pgwarden: token claim {self.config.groups_claim!r} must be a list of strings "
                "or a space-separated string",
                context=context,
            )
        copied = {name: claims[name] for name in self.config.claims_allowlist if name in claims}
        return Identity(
            subject=subject, issuer=iss, groups=groups, auth_method="jwt", claims=copied
        )
