"""Issuers' public keys: a JWKS (RFC 7517) parsed into PyJWK objects bound to one algorithm
each, read from a file or fetched over HTTPS, cached, and refreshed when a token names a
key we do not know — at most once per ``jwks_refresh_interval_s`` per issuer, so random
``kid`` values cannot make us hammer the identity provider."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from pgwarden.config import ConfigError
from pgwarden.proxy.auth.config import IssuerConfig

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20

# Which token algorithms a key may verify, by key type (and curve): an RSA key never
# verifies an ES* or HS* token, an EC key only the algorithm of its own curve.
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = ("Ed25519", "Ed448")
# Only the public members: private parts published by mistake are never loaded.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}


class JwksError(Exception):
    """A JWKS document could not be read, fetched or parsed (no secret in the message)."""


def _algorithms_for(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    kty = jwk.get("kty")
    if kty == "RSA":
        return _RSA_ALGORITHMS
    if kty == "EC":
        alg = _EC_ALGORITHMS.get(str(jwk.get("crv")))
        return (alg,) if alg else ()
    if kty == "OKP" and jwk.get("crv") in _OKP_CURVES:
        return ("EdDSA",)
    return ()  # "oct" (symmetric) keys and unknown types are never used


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's verification keys, indexed by ``(kid, alg)``; built once per fetch so
    that finding the key for a token is a dict lookup."""

    keys: Mapping[tuple[str | None, str], PyJWK]
    kids: frozenset[str | None]

    @classmethod
    def from_jwks(cls, document: Any, algorithms: Iterable[str]) -> KeySet:
        """Parse a JWKS; keys that are unusable, symmetric or not for signatures are skipped."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksError('not a JWKS: expected an object with a "keys" array')
        allowed = set(algorithms)
        keys: dict[tuple[str | None, str], PyJWK] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict):
                continue
            kid = jwk.get("kid")
            if kid is not None and not isinstance(kid, str):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            candidates = [a for a in _algorithms_for(jwk) if a in allowed]
            if isinstance(jwk.get("alg"), str):
                # A key that names its algorithm verifies only that one.
                candidates = [a for a in candidates if a == jwk["alg"]]
            if not candidates:
                continue
            public = {"kty": jwk["kty"]}
            public.update({m: jwk[m] for m in _PUBLIC_MEMBERS.get(str(jwk["kty"]), ()) if m in jwk})
            for alg in candidates:
                if (kid, alg) in keys:
                    log.warning("JWKS has two keys with kid %r for %s; using the first", kid, alg)
                    continue
                try:
                    keys[(kid, alg)] = PyJWK(public, algorithm=alg)
                except (PyJWTError, ValueError, TypeError, KeyError) as exc:
                    log.warning("JWKS key %r skipped: %s", kid, type(exc).__name__)
                    break
        if not keys:
            raise JwksError("the JWKS holds no usable signature key for the allowed algorithms")
        return cls(keys, frozenset(kid for kid, _ in keys))

    @classmethod
    def from_bytes(cls, data: bytes, algorithms: Iterable[str]) -> KeySet:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise JwksError(f"not valid JSON: {exc}") from None
        return cls.from_jwks(document, algorithms)

    def find(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key for a token: by ``kid``; a token without one may use the only key."""
        key = self.keys.get((kid, alg))
        if key is None and kid is None:
            matching = [k for (_, a), k in self.keys.items() if a == alg]
            if len(matching) == 1:
                return matching[0]
        return key


class JwksSource:
    """Where one issuer's JWKS comes from: a file, or an HTTPS URL."""

    def __init__(
        self,
        issuer: IssuerConfig,
        *,
        timeout_s: float,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.issuer = issuer
        self.timeout_s = timeout_s
        self._session = session
        self._ssl: ssl.SSLContext | bool = True
        if issuer.jwks_url is not None:
            try:
                cafile = None if issuer.ca_file is None else str(issuer.ca_file)
                self._ssl = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    issuer.source,
                    f"{issuer.key}.ca_file",
                    f"cannot load CA file {issuer.ca_file}: {exc}",
                ) from None

    @property
    def where(self) -> str:
        return self.issuer.jwks_url or str(self.issuer.jwks_file)

    def read_file(self) -> bytes:
        assert self.issuer.jwks_file is not None
        try:
            with self.issuer.jwks_file.open("rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise JwksError(f"cannot read {self.issuer.jwks_file}: {exc.strerror}") from None
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError("JWKS larger than 1 MiB")
        return data

    async def fetch(self) -> bytes:
        """The JWKS document's bytes (a file read or one HTTPS GET, with a timeout)."""
        if self.issuer.jwks_url is None:
            return await asyncio.to_thread(self.read_file)
        # Imported on first use: only jwks_url issuers need an HTTP client (~12 MiB).
        import aiohttp  # noqa: PLC0415

        try:
            async with self._session().get(
                self.issuer.jwks_url,
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,  # never follow a redirect away from the configured URL
                headers={"Accept": "application/json"},
            ) as resp:
                if resp.status != 200:
                    raise JwksError(f"GET {self.issuer.jwks_url} answered HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError(f"GET {self.issuer.jwks_url}: JWKS larger than 1 MiB")
                return bytes(body)
        except TimeoutError:
            raise JwksError(
                f"GET {self.issuer.jwks_url} timed out after {self.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise JwksError(f"GET {self.issuer.jwks_url} failed: {exc}") from None


class IssuerKeys:
    """One issuer's cached key set with a rate-limited, single-flight refresh.

    ``current`` is read without I/O on every token. ``refresh()`` fetches at most once per
    ``refresh_interval_s`` (counted from the start of the previous attempt, failed or not);
    concurrent callers share one fetch. On failure the previous keys are kept.
    """

    def __init__(
        self,
        source: JwksSource,
        algorithms: Iterable[str],
        *,
        refresh_interval_s: float,
        max_age_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.algorithms = tuple(algorithms)
        self.refresh_interval_s = refresh_interval_s
        self.max_age_s = max_age_s
        self._monotonic = monotonic
        self.current: KeySet | None = None
        self.loaded_at: float | None = None
        self.last_attempt: float | None = None
        self.fetches = 0
        self._inflight: asyncio.Future[bool] | None = None

    def load_file_now(self) -> None:
        """Read a file source synchronously (start-up); raises JwksError."""
        self._install(KeySet.from_bytes(self.source.read_file(), self.algorithms))

    def _install(self, keys: KeySet) -> None:
        self.current = keys
        self.loaded_at = self._monotonic()

    @property
    def stale(self) -> bool:
        return self.loaded_at is None or self._monotonic() - self.loaded_at >= self.max_age_s

    def refresh_due(self) -> bool:
        """Whether stale keys should be replaced in the background now."""
        return self._inflight is None and self.stale and self.may_refresh()

    def may_refresh(self) -> bool:
        """Whether the rate limit lets a fetch start now (or one is already running)."""
        if self._inflight is not None:
            return True
        return (
            self.last_attempt is None
            or self._monotonic() - self.last_attempt >= self.refresh_interval_s
        )

    async def refresh(self) -> bool:
        """Fetch the key set again if the rate limit allows; True if new keys were installed.
        Never raises for a fetch failure (it is logged, the old keys stay)."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        if not self.may_refresh():
            return False
        self.last_attempt = self._monotonic()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight = future
        try:
            ok = await self._fetch_and_install()
            future.set_result(ok)
            return ok
        except BaseException:
            future.set_result(False)
            raise
        finally:
            self._inflight = None

    async def _fetch_and_install(self) -> bool:
        self.fetches += 1
        try:
            data = await self.source.fetch()
            keys = KeySet.from_bytes(data, self.algorithms)
        except JwksError as exc:
            log.warning(
                "JWKS refresh for issuer %r from %s failed: %s",
                self.source.issuer.issuer,
                self.source.where,
                exc,
            )
            return False
        except Exception:
            # Anything unforeseen (a library bug, an odd TLS failure) must not escape into
            # a client's authentication: keep the old keys, fail closed, log the trace.
            log.exception(
                "JWKS refresh for issuer %r from %s failed unexpectedly",
                self.source.issuer.issuer,
                self.source.where,
            )
            return False
        self._install(keys)
        log.info(
            "JWKS for issuer %r loaded from %s: %d key(s)",
            self.source.issuer.issuer,
            self.source.where,
            len(keys.kids),
        )
        return True


def jwks_file_error(issuer: IssuerConfig, exc: JwksError) -> ConfigError:
    """The start-up error for an unreadable or invalid ``jwks_file``."""
    return ConfigError(issuer.source, f"{issuer.key}.jwks_file", f"{issuer.jwks_file}: {exc}")
