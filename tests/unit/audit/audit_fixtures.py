"""Real ``relay.Execution`` objects for the audit tests: the real analyzer and relay core,
fed the bytes a client and a server would send (no sockets)."""

from __future__ import annotations

import struct

from pgwarden.proxy.analysis import Analyzer
from pgwarden.proxy.decision import Action, Decision, Identity, SessionFacts, new_decision_id
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.relay import DecisionRequest, Execution, RelayCore
from pgwarden.proxy.statements import SessionStatements

SENTINEL = "zq-sentinel-8c1f"
IDENTITY = Identity("agent:reporting", "https://idp.example", ("analytics",), "jwt", {})
SESSION = SessionFacts("s-1", "edge-1", "10.0.0.7", "shop", "psql", True, "reporting")


def data_row(*values: str) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        raw = value.encode()
        body += struct.pack("!i", len(raw)) + raw
    return m.frame(b"D", body)


def row_description(*names: str) -> bytes:
    body = struct.pack("!h", len(names))
    for name in names:
        body += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
    return m.frame(b"T", body)


def command_complete(tag: str) -> bytes:
    return m.frame(b"C", tag.encode() + b"\0")


def run_query(
    client_bytes: bytes, server_bytes: bytes, decision: Decision | None = None
) -> list[Execution]:
    """Executions that the real relay produced for these client and server bytes."""
    analyzer = Analyzer()
    done: list[Execution] = []
    relay = RelayCore(
        SessionStatements(analyzer, analyzer.new_session(user="reporting")),
        max_message_size=1 << 20,
        on_complete=done.append,
    )
    request: DecisionRequest | None = relay.client_data(client_bytes)
    while request is not None:
        decisions = [
            decision or Decision(Action.ALLOW, ("reads are allowed",), new_decision_id())
            for _ in request.statements
        ]
        request = relay.resolve(decisions)
    relay.server_data(server_bytes)
    return done


def select_execution(rows: int = 3, *, decision: Decision | None = None) -> Execution:
    """A simple-protocol SELECT with a sentinel literal in its WHERE clause."""
    server = row_description("id", "name")
    server += b"".join(data_row(str(i), f"item {i}") for i in range(rows))
    server += command_complete(f"SELECT {rows}") + m.build_ready_for_query("I")
    sql = f"SELECT id, name FROM items WHERE name <> '{SENTINEL}'"
    [execution] = run_query(m.build_query(sql), server, decision)
    return execution


def extended_execution() -> Execution:
    """An extended-protocol UPDATE whose Bind parameter is the sentinel."""
    client = (
        m.build_parse("", "UPDATE items SET name = $1 WHERE id = 7")
        + m.build_bind("", "", [SENTINEL.encode()])
        + m.build_execute("")
        + m.build_sync()
    )
    server = (
        m.frame(b"1", b"")
        + m.frame(b"2", b"")
        + command_complete("UPDATE 1")
        + m.build_ready_for_query("I")
    )
    [execution] = run_query(client, server)
    return execution
