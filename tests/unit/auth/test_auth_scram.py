"""The upstream authentication client: SCRAM-SHA-256 (RFC 7677's vector, every refusal)
and the MD5 password message."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pgwarden.proxy.auth import (
    SCRAM_SHA_256,
    ScramClient,
    UpstreamAuthError,
    choose_sasl_mechanism,
    md5_password_payload,
    scram,
)
from pgwarden.proxy.auth.scram import ScramState, saslprep

# RFC 7677 §3.
NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
PASSWORD = "pencil"


def started(password: str = PASSWORD, *, user: str = "user") -> ScramClient:
    client = ScramClient(user, password, nonce=NONCE)
    client.initial_response([SCRAM_SHA_256])
    return client


def test_rfc7677_test_vector() -> None:
    client = ScramClient("user", PASSWORD, nonce=NONCE)
    assert client.initial_response(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]) == (
        "SCRAM-SHA-256",
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    )
    assert client.handle_continue(SERVER_FIRST) == CLIENT_FINAL
    client.handle_final(SERVER_FINAL)
    assert client.state is ScramState.DONE
    assert client.done


def test_random_nonce_is_fresh_and_printable() -> None:
    a = ScramClient("u", "p").initial_response([SCRAM_SHA_256])[1]
    b = ScramClient("u", "p").initial_response([SCRAM_SHA_256])[1]
    assert a != b
    assert a.startswith(b"n,,n=u,r=")
    assert b"," not in a[len(b"n,,n=u,") :]
    assert len(a) >= len(b"n,,n=u,r=") + 24


def test_user_name_is_escaped() -> None:
    _, first = ScramClient("a=b,c", "p", nonce="x").initial_response([SCRAM_SHA_256])
    assert first == b"n,,n=a=3Db=2Cc,r=x"


def test_server_that_cannot_prove_the_password_is_an_impostor() -> None:
    client = started()
    client.handle_continue(SERVER_FIRST)
    forged = b"v=" + base64.b64encode(bytes(32))
    with pytest.raises(UpstreamAuthError) as info:
        client.handle_final(forged)
    assert info.value.code == "scram_server_signature_mismatch"
    assert not client.done
    assert client.state is ScramState.FAILED


def test_signature_from_another_password_is_refused() -> None:
    client = started("not-pencil")
    assert client.handle_continue(SERVER_FIRST) != CLIENT_FINAL
    with pytest.raises(UpstreamAuthError, match="could not prove"):
        client.handle_final(SERVER_FINAL)


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (b"e=invalid-proof", "scram_server_error"),
        (b"x=1", "scram_protocol_error"),
        (b"v=not base64!", "scram_protocol_error"),
        (b"garbage", "scram_protocol_error"),
        (b"\xff\xfe", "scram_protocol_error"),
    ],
)
def test_bad_server_final(final: bytes, code: str) -> None:
    client = started()
    client.handle_continue(SERVER_FIRST)
    with pytest.raises(UpstreamAuthError) as info:
        client.handle_final(final)
    assert info.value.code == code
    assert not client.done


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=someone-elses-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # nothing added
        b"m=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=***,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000000000",
    ],
    ids=[
        "foreign-nonce",
        "nonce-not-extended",
        "mandatory-extension",
        "no-salt",
        "no-iterations",
        "bad-salt",
        "empty-salt",
        "zero-iterations",
        "iterations-not-a-number",
        "absurd-iterations",
    ],
)
def test_bad_server_first_is_a_protocol_error(server_first: bytes) -> None:
    client = started()
    with pytest.raises(UpstreamAuthError) as info:
        client.handle_continue(server_first)
    assert info.value.code == "scram_protocol_error"
    assert client.state is ScramState.FAILED
    assert PASSWORD not in str(info.value)


def test_messages_out_of_order_are_refused() -> None:
    client = ScramClient("user", PASSWORD, nonce=NONCE)
    with pytest.raises(UpstreamAuthError, match="out of order"):
        client.handle_continue(SERVER_FIRST)
    with pytest.raises(UpstreamAuthError, match="out of order"):
        client.handle_final(SERVER_FINAL)
    client.initial_response([SCRAM_SHA_256])
    with pytest.raises(UpstreamAuthError, match="out of order"):
        client.initial_response([SCRAM_SHA_256])
    with pytest.raises(UpstreamAuthError, match="out of order"):
        client.handle_final(SERVER_FINAL)  # before the proof was sent
    client.handle_continue(SERVER_FIRST)
    client.handle_final(SERVER_FINAL)
    with pytest.raises(UpstreamAuthError, match="out of order"):
        client.handle_continue(SERVER_FIRST)  # nothing after success
    assert client.done


def test_only_plus_offered_is_refused_cleanly() -> None:
    with pytest.raises(UpstreamAuthError) as info:
        ScramClient("u", "p").initial_response(["SCRAM-SHA-256-PLUS"])
    assert info.value.code == "sasl_channel_binding_required"


@pytest.mark.parametrize("offer", [[], ["SCRAM-SHA-1"], ["OAUTHBEARER"]])
def test_no_supported_mechanism_is_refused(offer: list[str]) -> None:
    with pytest.raises(UpstreamAuthError) as info:
        choose_sasl_mechanism(offer)
    assert info.value.code == "sasl_mechanism_unsupported"


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        ("I\u00adX", "IX"),  # RFC 4013 §3 examples
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to space
    ],
)
def test_saslprep(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031", "a\u200eb", "\ue000"])
def test_saslprep_prohibited(text: str) -> None:
    with pytest.raises(ValueError, match=r"prohibited|bidirectional"):
        saslprep(text)


def test_password_is_saslprepped_like_postgresql_does() -> None:
    def proof(password: str) -> bytes:
        return started(password).handle_continue(SERVER_FIRST)

    assert proof("penc\u00adil") == CLIENT_FINAL  # soft hyphen maps to nothing
    assert proof("\u2168") == proof("IX")  # NFKC
    # A prohibited result means the raw bytes are used, not a silently stripped password.
    assert proof("pencil\u200e") != CLIENT_FINAL


def test_md5_password_message() -> None:
    # md5("postgres" + "postgres") = 3175bce1d3201d16594cebf9d7eb3f9d, PostgreSQL's
    # stored form for user postgres / password postgres, salted with 01 02 03 04.
    payload = md5_password_payload("postgres", "postgres", b"\x01\x02\x03\x04")
    assert payload == b"md568be9ed08db75f318087ab337aaea044\0"


def test_md5_salt_must_be_four_bytes() -> None:
    with pytest.raises(UpstreamAuthError, match="4 bytes"):
        md5_password_payload("u", "p", b"\x01\x02\x03")


def test_a_roles_salted_password_is_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """PBKDF2 runs once per (password, salt, iterations), not on every connection; the
    proof stays RFC 7677's."""
    monkeypatch.setattr(scram, "_salted_passwords", {})
    calls = []
    pbkdf2 = hashlib.pbkdf2_hmac

    def counted(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        calls.append(salt)
        return pbkdf2(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    for _ in range(3):
        client = started()
        assert client.handle_continue(SERVER_FIRST) == CLIENT_FINAL
        client.handle_final(SERVER_FINAL)
    assert len(calls) == 1
    other_salt = SERVER_FIRST.replace(b"s=W22ZaJ0SNY7soEsUEjb6gQ==", b"s=AAAAAAAAAAAAAAAAAAAAAA==")
    assert started().handle_continue(other_salt) != CLIENT_FINAL
    assert len(calls) == 2


def test_the_salted_passwords_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scram, "_salted_passwords", {})
    for i in range(scram.SALTED_PASSWORDS_MAX * 2):
        scram.salted_password(b"p", i.to_bytes(4, "big"), 1)
    assert 0 < len(scram._salted_passwords) <= scram.SALTED_PASSWORDS_MAX
