"""gRPC request → input document: the PDP rebuilds exactly the document the proxy hashed."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.pdp.request import (
    context_document,
    decision_inputs,
    identity_document,
    session_document,
    session_input,
    statement_document,
)
from pgwarden.proxy.decision import Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig, facts_message
from pgwarden.v1 import decision_pb2 as pb

FACTS: dict[str, Any] = {
    "fingerprint": "00b9f719a46da6e3",
    "sql_normalized": "SELECT email FROM customers WHERE id = $1 LIMIT 100",
    "command": "SELECT",
    "protocol": "extended",
    "read_only": True,
    "relations": [{"schema": "public", "name": "customers", "kind": "table", "access": "read"}],
    "columns": [{"relation": "public.customers", "column": "email", "usage": "output"}],
    "outputs": [{"name": "email", "sources": ["public.customers.email"], "direct": True}],
    "star": [],
    "functions": ["pg_catalog.lower"],
    "copy": None,
    "limit": 100,
    "has_where": True,
    "set": None,
    "nested": [
        {
            "fingerprint": "ff",
            "sql_normalized": "COPY t TO STDOUT",
            "command": "COPY",
            "protocol": "simple",
            "read_only": True,
            "relations": [],
            "columns": [],
            "outputs": [],
            "star": [],
            "functions": [],
            "copy": {"direction": "to", "target": "stdout", "relation": "public.t", "query": False},
            "limit": None,
            "has_where": False,
            "set": {"kind": "set", "name": "work_mem", "local": True},
            "nested": [],
            "unresolved": False,
        }
    ],
    "unresolved": False,
}
IDENTITY = Identity(
    "agent:reporting",
    "https://idp.example",
    ("analytics",),
    "jwt",
    {"tenant": "acme", "level": 3},
)
SESSION = SessionFacts("s-1", "edge-1", "10.0.0.7", "shop", "airflow", True, "reporting")


# The tests that build a client are async: grpc.aio channels need an event loop.
def _client() -> PdpClient:
    return PdpClient(PdpClientConfig(("127.0.0.1:1",), token="t"), proxy_id="edge-1")


async def test_statement_document_round_trips_the_proxys_facts() -> None:
    client = _client()
    message = client._statement_message(Statement.of(FACTS))
    assert statement_document(message) == FACTS


async def test_identity_and_session_documents_match_the_proxys() -> None:
    client = _client()
    memo = client._session_memo(IDENTITY, SESSION)
    identity = identity_document(memo[4])
    # Struct numbers are doubles: 3 == 3.0, so the documents compare equal.
    assert identity == IDENTITY.document()
    assert session_document(memo[5]) == SESSION.document(in_transaction=False)
    assert session_document(memo[6]) == SESSION.document(in_transaction=True)


def test_decision_inputs_one_per_statement_with_context() -> None:
    request = pb.DecideRequest(
        identity=pb.Identity(subject="agent:x"),
        session=pb.Session(id="s", in_transaction=True),
        statements=[
            pb.StatementRequest(statement=pb.StatementFacts(fingerprint="a", command="SELECT")),
            pb.StatementRequest(statement=pb.StatementFacts(fingerprint="b", limit=0)),
        ],
    )
    inputs = decision_inputs(request)
    assert [i["statement"]["fingerprint"] for i in inputs] == ["a", "b"]
    assert inputs[0]["statement"]["limit"] is None
    assert inputs[1]["statement"]["limit"] == 0
    assert inputs[0]["session"]["in_transaction"] is True
    assert set(inputs[0]) == {"identity", "session", "statement", "context"}
    assert set(inputs[0]["context"]) == {"now", "usage", "approved"}
    assert inputs[0]["context"]["approved"] is False


def test_session_input_has_no_statement() -> None:
    document = session_input(pb.OpenSessionRequest(identity=pb.Identity(subject="a")))
    assert set(document) == {"identity", "session", "context"}
    assert document["identity"]["subject"] == "a"


def test_context_now_is_rfc3339_utc() -> None:
    assert context_document()["now"].endswith("Z")


def test_deny_facts_outside_the_contract() -> None:
    with pytest.raises(ValueError, match="unknown statement fact 'table'"):
        facts_message({"fingerprint": "x", "table": "customers"})
    with pytest.raises(TypeError):
        facts_message({"limit": "100"})
    with pytest.raises((TypeError, ValueError)):
        facts_message({"relations": [{"schema": "public", "owner": "x"}]})


async def test_facts_outside_the_contract_are_refused_not_sent() -> None:
    client = _client()
    bad = Statement.of({"fingerprint": "x", "table": "customers"})
    [decision] = await client.decide(IDENTITY, SESSION, [bad], in_transaction=False)
    await client.close()
    assert decision.code == "analysis_failed"
    assert not decision.permits
    assert client.pdp_calls == 0


async def test_claims_outside_json_are_refused_not_raised() -> None:
    client = _client()
    odd = Identity("agent:x", "i", (), "jwt", {"when": object()})
    [decision] = await client.decide(odd, SESSION, [Statement.of(FACTS)], in_transaction=False)
    grant = await client.open_session(odd, SESSION)
    await client.close()
    assert decision.code == "analysis_failed"
    assert not grant.allowed
    assert "[analysis_failed]" in grant.reasons[0]
    assert client.pdp_calls == 0
