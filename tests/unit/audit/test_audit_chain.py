"""Stored documents and the hash chain: what a record holds, and what verify reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgwarden.pdp.audit.chain import GENESIS, ChainHead, record_hash, verify
from pgwarden.pdp.audit.records import PART_KEY_MAX, canonical, record_document
from pgwarden.v1 import decision_pb2 as pb


def record(n: int, kind: int = pb.AUDIT_KIND_STATEMENT) -> pb.AuditRecord:
    return pb.AuditRecord(
        record_id=f"r{n}",
        kind=kind,
        time_unix_us=1_795_499_986_000_000 + n,
        proxy_id="edge-1",
        session_id="s-1",
        identity=pb.Identity(subject="agent:etl", issuer="https://idp", groups=["etl"]),
        database="shop",
        statement=pb.AuditStatement(
            fingerprint="00b9f719a46da6e3",
            sql="SELECT * FROM orders WHERE id = $1",
            command="SELECT",
            protocol="extended",
            relations=[pb.Relation(schema="public", name="orders", kind="table", access="read")],
        ),
        decision=pb.AuditDecision(
            decision_id=f"d{n}",
            action=pb.ACTION_ALLOW,
            reasons=["etl reads orders"],
            mask={"public.orders.total": "redact"},
            row_limit=100,
            revision="rev1",
        ),
        outcome=pb.AuditOutcome(status="complete", rows=5, bytes_sent=123, duration_us=9),
    )


def chained(count: int, replica: str = "pdp-a") -> list[dict[str, Any]]:
    head = ChainHead()
    return [head.link(record_document(record(n)), replica) for n in range(1, count + 1)]


def lines(documents: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(i, canonical(d).decode()) for i, d in enumerate(documents, start=1)]


def test_document_has_every_field_of_the_record() -> None:
    document = record_document(record(1))
    assert document["record_id"] == "r1"
    assert document["kind"] == "statement"
    assert document["time"] == "2026-11-24T05:59:46.000001Z"
    assert document["identity"] == {
        "subject": "agent:etl",
        "issuer": "https://idp",
        "groups": ["etl"],
        "auth_method": "",
    }
    assert document["decision_id"] == "d1"
    assert document["statement"]["relations"] == [
        {"schema": "public", "name": "orders", "kind": "table", "access": "read"}
    ]
    assert document["decision"]["mask"] == {"public.orders.total": "redact"}
    assert document["decision"]["row_limit"] == 100
    assert document["outcome"]["rows_affected"] is None
    assert document["session_stats"] is None
    assert document["auth"] is None


def test_allow_first_record_links_to_genesis_and_each_to_the_previous() -> None:
    documents = chained(3)
    assert documents[0]["prev_hash"] == GENESIS
    assert [d["seq"] for d in documents] == [1, 2, 3]
    assert documents[1]["prev_hash"] == documents[0]["hash"]
    assert documents[2]["hash"] == record_hash(documents[1]["hash"], documents[2])
    result = verify(lines(documents))
    assert result.ok
    assert result.records == 3
    assert result.heads["pdp-a"].seq == 3


def test_deny_a_modified_record_is_named() -> None:
    documents = chained(5)
    documents[2]["outcome"]["rows"] = 0  # someone hides how many rows left
    result = verify(lines(documents))
    assert not result.ok
    first = result.first_break
    assert first is not None
    assert (first.position, first.seq, first.record_id) == (3, 3, "r3")
    assert "modified" in first.problem
    assert len(result.breaks) == 1


def test_deny_a_modified_record_with_a_recomputed_hash_breaks_the_next_link() -> None:
    documents = chained(4)
    documents[1]["statement"]["sql"] = "SELECT 1"
    documents[1]["hash"] = record_hash(documents[1]["prev_hash"], documents[1])
    first = verify(lines(documents)).first_break
    assert first is not None
    assert (first.seq, first.record_id) == (3, "r3")
    assert "prev_hash" in first.problem


def test_deny_a_deleted_record_is_named_with_the_missing_seq() -> None:
    documents = chained(5)
    del documents[1]
    first = verify(lines(documents)).first_break
    assert first is not None
    assert (first.position, first.seq, first.record_id) == (2, 3, "r3")
    assert "1 record(s) missing before it (seq 2): deleted" in first.problem


def test_deny_a_deleted_first_record() -> None:
    documents = chained(3)[1:]
    first = verify(lines(documents)).first_break
    assert first is not None
    assert first.seq == 2
    assert "missing" in first.problem


def test_deny_unparseable_line_and_reordered_records() -> None:
    documents = chained(3)
    entries = lines(documents)
    broken = verify([entries[0], (2, '{"seq": '), entries[1], entries[2]])
    assert broken.first_break is not None
    assert broken.first_break.position == 2
    assert "not a JSON record" in broken.first_break.problem
    swapped = verify([entries[0], entries[2], entries[1]])
    assert swapped.first_break is not None
    assert swapped.first_break.seq == 3


def test_allow_interleaved_chains_of_two_replicas() -> None:
    a, b = chained(3, "pdp-a"), chained(3, "pdp-b")
    for document in b:
        document["record_id"] += "b"
    mixed = [a[0], b[0], b[1], a[1], a[2], b[2]]
    # the ids changed after hashing: re-chain b to keep it honest
    head = ChainHead()
    for document in b:
        head.link(document, "pdp-b")
    result = verify(lines(mixed))
    assert result.ok, result.breaks
    assert set(result.heads) == {"pdp-a", "pdp-b"}


def test_canonical_form_is_stable_through_json_round_trips() -> None:
    document = chained(1)[0]
    text = json.dumps(document, indent=2)  # e.g. what jsonb gives back, reordered
    assert canonical(json.loads(text)) == canonical(document)
    assert record_hash(document["prev_hash"], json.loads(text)) == document["hash"]


def test_allow_documents_of_repeated_parts_are_equal_but_never_shared() -> None:
    # Identity, statement and decision are built once per distinct message (a memo):
    # each document still gets objects of its own.
    first, second = record_document(record(1)), record_document(record(1))
    assert first == second
    first["statement"]["relations"][0]["name"] = "edited"
    first["decision"]["mask"].clear()
    first["identity"]["groups"].append("edited")
    assert record_document(record(1)) == second
    assert second["statement"]["relations"][0]["name"] == "orders"


def test_allow_a_part_that_differs_in_one_field_is_its_own() -> None:
    message = record(1)
    message.statement.relations[0].access = "write"
    message.decision.cached = True
    document = record_document(message)
    assert document["statement"]["relations"][0]["access"] == "write"
    assert document["decision"]["cached"] is True
    assert record_document(record(1))["decision"]["cached"] is False


def test_allow_a_statement_too_long_to_memoize_is_still_recorded_whole() -> None:
    message = record(1)
    message.statement.sql = "SELECT " + "x, " * PART_KEY_MAX + "1"
    assert record_document(message)["statement"]["sql"] == message.statement.sql
    assert record_document(message) == record_document(message)


PLACEHOLDER_MEMBER = {"hash": "#" * 64}


@pytest.mark.parametrize(
    "document",
    [
        record_document(record(1)),
        {"record_id": "r"},  # "hash" is the first member
        {"record_id": "r", "hash": "an old hash"},
        {"record_id": "r", "a": PLACEHOLDER_MEMBER},  # the member's text before its own
        {"record_id": "r", "z": [PLACEHOLDER_MEMBER]},  # and after it
        {"record_id": "r", "a": {'x"hash': "#" * 64}},  # a key that ends in "hash
        {"record_id": "r", "a": "#" * 64, "hash2": '"hash":"' + "#" * 64 + '"'},
    ],
    ids=["record", "first", "rehashed", "before", "after", "quoted key", "in strings"],
)
def test_allow_link_canonical_is_the_canonical_text_and_hash_of_the_record(
    document: dict[str, Any],
) -> None:
    head = ChainHead(41, "f" * 64)
    text = head.link_canonical(document, "pdp-a")
    assert text == canonical(document)
    assert document["hash"] == record_hash("f" * 64, document) == head.hash
    assert (document["seq"], document["prev_hash"], head.seq) == (42, "f" * 64, 42)


def test_deny_link_of_what_is_no_json_document_raises_and_leaves_no_placeholder() -> None:
    document: dict[Any, Any] = {"record_id": "r", 1: "not a JSON key"}
    head = ChainHead()
    with pytest.raises(TypeError):
        head.link_canonical(document, "pdp-a")
    assert "hash" not in document
    assert head == ChainHead()


def test_allow_shared_parts_are_the_same_read_only_objects_with_the_same_text() -> None:
    first = record_document(record(1), shared_parts=True)
    second = record_document(record(1), shared_parts=True)
    for name in ("identity", "statement", "decision"):
        assert first[name] is second[name]
    assert canonical(first) == canonical(record_document(record(1)))  # lists are tuples
    with pytest.raises(TypeError):
        first["statement"]["sql"] = "SELECT 1"
    with pytest.raises(TypeError):
        first["decision"]["mask"].clear()
    with pytest.raises(AttributeError):  # a tuple
        first["identity"]["groups"].append("dba")
    first["outcome"]["rows"] = 0  # a part of its own: not shared
    assert second["outcome"]["rows"] == 5
    linked = [ChainHead().link_canonical(d, "pdp-a") for d in (first, record_document(record(1)))]
    assert linked[0] != linked[1]  # the rows differ
    first["outcome"]["rows"] = 5
    again = [ChainHead().link_canonical(d, "pdp-a") for d in (first, record_document(record(1)))]
    assert again[0] == again[1]
