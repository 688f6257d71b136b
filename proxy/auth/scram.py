"""The proxy's own authentication to the upstream PostgreSQL (SCRAM-SHA-256 and MD5),
without I/O: payloads in, payloads out. Message framing (the 'R' Authentication* and 'p'
messages) is done by the protocol layer; this module only computes what goes inside them.

SCRAM-SHA-256 follows RFC 5802/7677 as PostgreSQL implements it: no channel binding
(gs2 header ``n,,``); the user name in the SCRAM message is only informational (the
server uses the startup packet's); the password is prepared with SASLprep unless SASLprep
rejects it, in which case the raw bytes are used, exactly as the server did when it
stored the verifier. The server must prove in AuthenticationSASLFinal that it knows the
password; a server that cannot is an impostor and :class:`ScramClient` raises.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections.abc import Iterable
from enum import Enum

from pgwarden.proxy.auth.errors import UpstreamAuthError

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"
# A malicious or broken upstream could ask for an absurd PBKDF2 cost to stall the proxy;
# PostgreSQL's default is 4096 (scram_iterations).
MAX_SCRAM_ITERATIONS = 1_000_000
_GS2_HEADER = b"n,,"
# PBKDF2 at PostgreSQL's default 4096 iterations costs ~1.5 ms of the event loop, on every
# upstream connection. A role's salt and count stay the same until its password changes,
# so the result is kept, bounded (entries are tiny; an impostor sending new salts only
# empties it). It is derived from the password the proxy holds anyway.
SALTED_PASSWORDS_MAX = 64
_salted_passwords: dict[tuple[bytes, bytes, int], bytes] = {}


def salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword of RFC 5802 (``Hi(password, salt, i)``), computed once per
    (password, salt, iterations)."""
    key = (password, salt, iterations)
    salted = _salted_passwords.get(key)
    if salted is None:
        salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        if len(_salted_passwords) >= SALTED_PASSWORDS_MAX:
            _salted_passwords.clear()
        _salted_passwords[key] = salted
    return salted


def choose_sasl_mechanism(offered: Iterable[str]) -> str:
    """SCRAM-SHA-256 if offered. We have no TLS channel binding to the upstream, so an
    offer of only SCRAM-SHA-256-PLUS (or anything else) is refused cleanly."""
    offered = list(offered)
    if SCRAM_SHA_256 in offered:
        return SCRAM_SHA_256
    if SCRAM_SHA_256_PLUS in offered:
        raise UpstreamAuthError(
            "sasl_channel_binding_required",
            "the upstream offers only SCRAM-SHA-256-PLUS, which needs TLS channel binding",
        )
    raise UpstreamAuthError(
        "sasl_mechanism_unsupported",
        f"the upstream offers no supported SASL mechanism ({', '.join(offered) or 'none'})",
    )


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stored strings); raises ValueError on a prohibited result."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c
        for c in text
        if not stringprep.in_table_b1(c)  # commonly mapped to nothing
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return normalized
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,  # unassigned code points (stored strings)
    )
    for c in normalized:
        if any(check(c) for check in prohibited):
            raise ValueError("prohibited character")
    rand_al = [stringprep.in_table_d1(c) for c in normalized]
    if any(rand_al):
        if any(stringprep.in_table_d2(c) for c in normalized):
            raise ValueError("mixed bidirectional text")
        if not (rand_al[0] and rand_al[-1]):
            raise ValueError("bidirectional text must start and end with RandALCat")
    return normalized


def _password_bytes(password: str) -> bytes:
    """What PostgreSQL hashes: ASCII as is, else SASLprep, else the raw UTF-8 bytes."""
    if password.isascii():
        return password.encode()
    try:
        return saslprep(password).encode()
    except ValueError:
        return password.encode()


def _escape_username(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


class ScramState(Enum):
    """Where the exchange is; only :meth:`ScramSha256Client._set_state` changes it."""

    INITIAL = "initial"
    SENT_CLIENT_FIRST = "sent_client_first"
    SENT_CLIENT_FINAL = "sent_client_final"
    DONE = "done"
    FAILED = "failed"


_TRANSITIONS = {
    ScramState.INITIAL: {ScramState.SENT_CLIENT_FIRST, ScramState.FAILED},
    ScramState.SENT_CLIENT_FIRST: {ScramState.SENT_CLIENT_FINAL, ScramState.FAILED},
    ScramState.SENT_CLIENT_FINAL: {ScramState.DONE, ScramState.FAILED},
    ScramState.DONE: set(),
    ScramState.FAILED: set(),
}


class ScramClient:
    """One SCRAM-SHA-256 exchange, client side, I/O-free::

        client = ScramClient(user, password)
        mechanism, data = client.initial_response(mechanisms)  # AuthenticationSASL (B) →
                                                               # SASLInitialResponse (F)
        data = client.handle_continue(server_first)  # AuthenticationSASLContinue (B) →
                                                     # SASLResponse (F)
        client.handle_final(server_final)            # AuthenticationSASLFinal (B)

    Only once :meth:`handle_final` returned (``client.done``) may AuthenticationOk be
    accepted. The user name goes into the SCRAM message as RFC 5802 says (PostgreSQL
    ignores it and uses the startup packet's); ``nonce`` is for test vectors only.
    """

    def __init__(self, user: str, password: str, *, nonce: str | None = None) -> None:
        self._password = _password_bytes(password)
        self._nonce = (
            nonce
            if nonce is not None
            else base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        )
        if not self._nonce or "," in self._nonce or not self._nonce.isprintable():
            raise ValueError("SCRAM nonce must be printable, non-empty and without ','")
        self._client_first_bare = f"n={_escape_username(user)},r={self._nonce}".encode()
        self._server_signature = b""
        self.state = ScramState.INITIAL

    @property
    def done(self) -> bool:
        """True once the server proved it knows the password."""
        return self.state is ScramState.DONE

    def _set_state(self, new: ScramState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise UpstreamAuthError(
                "scram_protocol_error",
                f"SCRAM message out of order (in state {self.state.value}, wanted {new.value})",
            )
        self.state = new

    def _fail(self, code: str, message: str) -> UpstreamAuthError:
        if ScramState.FAILED in _TRANSITIONS[self.state]:
            self._set_state(ScramState.FAILED)
        return UpstreamAuthError(code, message)

    def initial_response(self, mechanisms: Iterable[str]) -> tuple[str, bytes]:
        """Choose the mechanism among AuthenticationSASL (B)'s offer and return it with the
        client-first-message: the SASLInitialResponse (F) contents."""
        mechanism = choose_sasl_mechanism(mechanisms)
        self._set_state(ScramState.SENT_CLIENT_FIRST)
        return mechanism, _GS2_HEADER + self._client_first_bare

    def handle_continue(self, server_first: bytes) -> bytes:
        """Consume AuthenticationSASLContinue (B) data (server-first-message) and return the
        client-final-message with the proof: the SASLResponse (F) data."""
        if self.state is not ScramState.SENT_CLIENT_FIRST:
            self._set_state(ScramState.SENT_CLIENT_FINAL)  # raises: out of order
        attrs = self._parse(server_first)
        if "m" in attrs:
            raise self._fail("scram_protocol_error", "server requires an unsupported extension")
        try:
            nonce, salt_b64, iterations_text = attrs["r"], attrs["s"], attrs["i"]
        except KeyError as exc:
            raise self._fail(
                "scram_protocol_error", f"server-first-message lacks '{exc.args[0]}'"
            ) from None
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise self._fail("scram_protocol_error", "server nonce does not extend ours")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
            iterations = int(iterations_text)
        except ValueError:
            raise self._fail("scram_protocol_error", "malformed salt or iteration count") from None
        if not salt or not 0 < iterations <= MAX_SCRAM_ITERATIONS:
            raise self._fail("scram_protocol_error", f"unacceptable iteration count {iterations}")

        salted = salted_password(self._password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = b"c=" + base64.b64encode(_GS2_HEADER) + b",r=" + nonce.encode()
        auth_message = b",".join((self._client_first_bare, server_first, without_proof))
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        self._set_state(ScramState.SENT_CLIENT_FINAL)
        return without_proof + b",p=" + base64.b64encode(proof)

    def handle_final(self, server_final: bytes) -> None:
        """Check AuthenticationSASLFinal (B) data; raises unless the server's signature
        proves it knows the password."""
        if self.state is not ScramState.SENT_CLIENT_FINAL:
            self._set_state(ScramState.DONE)  # raises: out of order
        attrs = self._parse(server_final)
        if "e" in attrs:
            raise self._fail("scram_server_error", f"server reported: {attrs['e'][:100]}")
        try:
            received = base64.b64decode(attrs["v"], validate=True)
        except (KeyError, ValueError):
            raise self._fail(
                "scram_protocol_error", "server-final-message has no valid signature"
            ) from None
        if not hmac.compare_digest(received, self._server_signature):
            raise self._fail(
                "scram_server_signature_mismatch",
                "the upstream server could not prove it knows the password (impostor?)",
            )
        self._set_state(ScramState.DONE)

    def _parse(self, message: bytes) -> dict[str, str]:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail("scram_protocol_error", "SCRAM message is not UTF-8") from None
        attrs: dict[str, str] = {}
        for part in text.split(","):
            if len(part) < 2 or part[1] != "=":
                raise self._fail("scram_protocol_error", "malformed SCRAM attribute")
            attrs.setdefault(part[0], part[2:])
        return attrs


def md5_password_payload(user: str, password: str, salt: bytes) -> bytes:
    """The PasswordMessage (F) contents for AuthenticationMD5Password (B)'s 4-byte salt:
    ``"md5" + md5_hex(md5_hex(password + user) + salt)`` and its NUL terminator."""
    if len(salt) != 4:
        raise UpstreamAuthError("md5_protocol_error", "the MD5 salt must be 4 bytes")
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()  # noqa: S324
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"  # noqa: S324
