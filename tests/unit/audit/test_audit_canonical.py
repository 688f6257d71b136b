"""Canonical JSON is the input of the chain's hash: its bytes must never change.

``canonical_v1.jsonl`` holds the lines the PDP wrote for the records below before the
canonical text came from orjson (the json module: sorted keys, no spaces,
``ensure_ascii=False``). Today's code must write the same bytes for them, and verify
them; and every string a record can hold must come out as RFC 8259 with the json
module's choices: only ``"``, ``\\`` and U+0000 to U+001F escaped, short escapes where JSON
has them, ``\\u00xx`` in lower case otherwise, everything else as its UTF-8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwarden.pdp.audit.chain import ChainHead, verify
from pgwarden.pdp.audit.records import canonical, record_document
from pgwarden.pdp.audit.store import read_jsonl_lines
from pgwarden.v1 import decision_pb2 as pb

FIXTURE = Path(__file__).with_name("canonical_v1.jsonl")
STORED_AT_US = 1_795_499_990_123_456
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

TRICKY = [
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x0e\x1b\x1f \x7f",
    'say "hi" \\ \\" \\\\ \\u0041 /*/ </script> &<>\'',
    "Grüße, naïve café, 日本語, Ελληνικά, עברית, e\u0301",
    "line\u2028separator\u2029paragraph\u0085next",
    "🙂 👩\u200d💻 \U0010ffff \ufeff \ufffd \uffff \ud7ff \ue000",
    "",
]
# Keys whose order differs between code points (the json module's sort) and UTF-16.
KEYS = ["z", "Z", "é", "\uffff", "\U0001f600", 'quo"te', "back\\slash", "\n", "hash"]


def records() -> list[pb.AuditRecord]:
    identity = pb.Identity(
        subject="agent:" + TRICKY[2], issuer=TRICKY[1], groups=TRICKY, auth_method="jwt"
    )
    session = {
        "proxy_id": "edge-\u2028",
        "session_id": TRICKY[4],
        "database": TRICKY[0],
        "client_addr": "10.0.0.7",
        "client_port": 65535,
        "application_name": TRICKY[3],
    }
    statement = pb.AuditStatement(
        fingerprint="00b9f719a46da6e3",
        sql=f"SELECT * FROM \"{TRICKY[1]}\" WHERE note = '{TRICKY[0]}' -- {TRICKY[4]}",
        sql_has_literals=True,
        command="SELECT",
        protocol="simple",
        relations=[
            pb.Relation(schema=s, name=n, kind="table", access="read")
            for s, n in zip(TRICKY, reversed(TRICKY), strict=True)
        ],
    )
    decision = pb.AuditDecision(
        decision_id="d-" + TRICKY[3],
        action=pb.ACTION_ALLOW,
        reasons=TRICKY,
        mask={k: TRICKY[i % len(TRICKY)] for i, k in enumerate(KEYS)},
        row_limit=INT64_MAX,
        dry_run=True,
        revision=TRICKY[4],
        code="",
        cached=True,
    )
    return [
        pb.AuditRecord(
            record_id="r-statement",
            kind=pb.AUDIT_KIND_STATEMENT,
            time_unix_us=1_795_499_986_000_001,
            identity=identity,
            statement=statement,
            decision=decision,
            outcome=pb.AuditOutcome(
                status="complete",
                rows=INT64_MAX,
                rows_affected=INT64_MIN,
                bytes_sent=INT64_MAX,
                duration_us=0,
                sqlstate="",
                row_limit_reached=True,
            ),
            **session,
        ),
        pb.AuditRecord(
            record_id="r-refusal-" + TRICKY[2],
            kind=pb.AUDIT_KIND_REFUSAL,
            time_unix_us=0,
            identity=identity,
            statement=statement,
            decision=pb.AuditDecision(
                decision_id="d-2", action=pb.ACTION_DENY, reasons=[TRICKY[1]], code="x"
            ),
            outcome=pb.AuditOutcome(status="refused", sqlstate="42501"),
            **session,
        ),
        pb.AuditRecord(
            record_id="r-close",
            kind=pb.AUDIT_KIND_SESSION_CLOSE,
            time_unix_us=253_402_300_799_999_999,  # 9999-12-31T23:59:59.999999Z
            identity=identity,
            session_stats=pb.AuditSessionStats(
                statements=INT64_MAX,
                refusals=1,
                rows=INT64_MIN,
                bytes_sent=2**31,
                duration_us=2**53 + 1,
                reason="FATAL 57P01: " + TRICKY[0] + TRICKY[4],
            ),
            **session,
        ),
        pb.AuditRecord(
            record_id="",  # the PDP mints one; the fixture keeps the one it minted
            kind=pb.AUDIT_KIND_AUTH_REFUSED,
            time_unix_us=1_795_499_986_999_999,
            client_addr="::1",
            client_port=-1,
            auth=pb.AuditAuthRefusal(
                code="bad_signature",
                sqlstate="28000",
                context={k: TRICKY[-1 - i % len(TRICKY)] for i, k in enumerate(KEYS)},
            ),
        ),
        pb.AuditRecord(record_id="r-empty", kind=99),
    ]


def fixture_lines() -> list[bytes]:
    # Split on b"\n" alone: U+2028, U+0085 … are line breaks to str.splitlines().
    return FIXTURE.read_bytes().removesuffix(b"\n").split(b"\n")


def test_allow_todays_code_writes_the_bytes_written_before() -> None:
    expected = fixture_lines()
    head = ChainHead()
    written = []
    for message, line in zip(records(), expected, strict=True):
        document = record_document(message)
        if not message.record_id:
            document["record_id"] = json.loads(line)["record_id"]
        document["stored_at_us"] = STORED_AT_US
        written.append(head.link_canonical(document, "pdp-\u00e9"))
    assert written == expected


def test_allow_records_written_before_still_verify() -> None:
    lines = fixture_lines()
    result = verify(read_jsonl_lines(FIXTURE))  # as `pgwarden audit verify --file` reads
    assert result.ok, result.breaks
    assert result.records == len(lines) == len(records())
    for line in lines:
        assert canonical(json.loads(line)) == line


def _rfc8259(char: str) -> str:
    """How JSON (and the json module, without ensure_ascii) writes one character."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
    if char in short or char == "\t":
        return short.get(char, "\\t")
    return f"\\u{ord(char):04x}" if ord(char) < 0x20 else char


@pytest.mark.parametrize("first", range(0, 0x110000, 0x1000), ids=lambda c: f"U+{c:04X}")
def test_allow_every_character_is_written_as_json_writes_it(first: int) -> None:
    chars = [chr(c) for c in range(first, first + 0x1000) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(chars)
    expected = "".join(_rfc8259(c) for c in chars)
    assert canonical({"s": text}) == ('{"s":"' + expected + '"}').encode()
    keyed = {c: 0 for c in chars[:64]}  # as keys, sorted by code point
    inner = ",".join(f'"{_rfc8259(c)}":0' for c in sorted(keyed))
    assert canonical(keyed) == ("{" + inner + "}").encode()


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"n": INT64_MAX, "m": INT64_MIN}, b'{"m":-9223372036854775808,"n":9223372036854775807}'),
        (
            {"b": [True, False, None], "a": {}, "c": [[], [{}]]},
            b'{"a":{},"b":[true,false,null],"c":[[],[{}]]}',
        ),
        ({"k": 0, "K": -1, "ka": 1, "k\x00": 2}, b'{"K":-1,"k":0,"k\\u0000":2,"ka":1}'),
        ({}, b"{}"),
    ],
)
def test_allow_canonical_form_of_values_and_key_order(
    document: dict[str, object], expected: bytes
) -> None:
    assert canonical(document) == expected


@pytest.mark.parametrize(
    "document",
    [{"s": "\ud800"}, {"s": ["a\udfffb"]}, {1: "x"}],
    ids=["lone surrogate", "nested lone surrogate", "non-string key"],
)
def test_deny_what_no_json_document_holds_cannot_be_hashed(document: dict[object, object]) -> None:
    # verify() reports such a record as "cannot be hashed" (TypeError or ValueError).
    with pytest.raises((TypeError, ValueError)):
        canonical(document)  # type: ignore[arg-type]
