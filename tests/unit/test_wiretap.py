"""The integration suites' wiretap (tests/integration/wiretap.py): its reading of the
protocol, and that reconciling it with audit records finds what does not match."""

from __future__ import annotations

from typing import Any

from pgwarden.proxy.protocol import messages as m
from tests.integration.wiretap import WireView, reconcile

READY = m.build_ready_for_query("I")


def data_row(*values: bytes) -> bytes:
    body = len(values).to_bytes(2, "big")
    for value in values:
        body += len(value).to_bytes(4, "big") + value
    return m.frame(b"D", body)


def complete(tag: str) -> bytes:
    return m.frame(b"C", tag.encode() + b"\0")


def view_after_login() -> WireView:
    view = WireView(kind="startup")
    view.server_data(m.build_authentication(0) + READY)
    return view


def feed(view: WireView, client: bytes, server: bytes, *, chunk: int = 0) -> None:
    view.client_data(client)
    if chunk:
        for i in range(0, len(server), chunk):
            view.server_data(server[i : i + chunk])
    else:
        view.server_data(server)


def test_simple_query_rows_and_bytes_are_counted_even_when_split_anywhere() -> None:
    rows = data_row(b"1", b"one") + data_row(b"2", b"two")
    for chunk in (0, 1, 3, 7):
        view = view_after_login()
        feed(view, m.build_query("SELECT"), rows + complete("SELECT 2") + READY, chunk=chunk)
        assert view.ready
        assert view.events == [{"k": "complete", "rows": 2, "bytes": len(rows), "tag": "SELECT 2"}]


def test_an_error_ends_its_statement_and_the_server_skips_the_rest_of_the_segment() -> None:
    view = view_after_login()
    client = b"".join(
        [m.build_parse("", "x"), m.build_bind("", ""), m.build_execute("")] * 2 + [m.build_sync()]
    )
    error = m.build_error_response("22012", "division by zero")
    row = data_row(b"7")
    feed(view, client, b"1\0\0\0\x042\0\0\0\x04" + row + error + READY)
    assert view.events == [
        {"k": "error", "rows": 1, "bytes": len(row), "sqlstate": "22012", "decision": ""}
    ]


def test_the_servers_error_at_a_parse_with_no_execution_is_not_a_statement() -> None:
    view = view_after_login()
    feed(
        view,
        m.build_parse("", "SELECT * FROM nosuch") + m.build_describe("S", "") + m.build_sync(),
        m.build_error_response("42P01", 'relation "nosuch" does not exist') + READY,
    )
    feed(view, m.build_query("SELECT 1"), data_row(b"1") + complete("SELECT 1") + READY)
    assert [e["k"] for e in view.events] == ["complete"]


def test_the_proxys_refusal_of_a_parse_with_no_execution_is_a_statement() -> None:
    view = view_after_login()
    prepare = m.build_parse("", "SELEC") + m.build_describe("S", "") + m.build_sync()
    feed(view, prepare, m.build_error_response("42601", "syntax error") + READY)
    refused = m.build_error_response("42501", "pgwarden: no", detail="decision_id=d1")
    feed(view, prepare, refused + READY)
    assert [(e["k"], e["sqlstate"]) for e in view.events] == [
        ("error", "42601"),
        ("error", "42501"),
    ]


def test_a_protocol_violation_ends_the_connection_not_a_statement() -> None:
    view = view_after_login()
    error = m.build_error_response("08P01", "message too large", severity="FATAL")
    feed(view, m.build_query("SELECT 'x'"), error)
    assert (view.fatal, view.events) == ("08P01", [])


def test_errors_before_login_are_fatal_not_statements() -> None:
    view = WireView(kind="startup")
    view.server_data(m.build_error_response("28P01", "bad token", severity="FATAL"))
    assert (view.ready, view.fatal, view.events) == (False, "28P01", [])


def record(kind: str, session: str = "s1", **outcome: Any) -> dict[str, Any]:
    full = {"status": "complete", "rows": 0, "bytes_sent": 0, "rows_affected": None}
    full.update({"sqlstate": "", "row_limit_reached": False, **outcome})
    return {
        "kind": kind,
        "session_id": session,
        "client_port": 5000,
        "outcome": full if kind in ("statement", "refusal") else None,
    }


def connection(*events: dict[str, Any], port: int = 5000) -> dict[str, Any]:
    return {"port": port, "kind": "startup", "ready": True, "fatal": "", "opaque": ""} | {
        "events": list(events)
    }


SELECTED = {"k": "complete", "rows": 2, "bytes": 30, "tag": "SELECT 2"}
REFUSED = {"k": "error", "rows": 0, "bytes": 0, "sqlstate": "42501", "decision": "d"}
AUDITED = [
    record("session_open"),
    record("statement", rows=2, bytes_sent=30, rows_affected=2),
    record("refusal", status="refused", sqlstate="42501"),
    record("session_close"),
]


def test_reconcile_accepts_a_trail_that_matches() -> None:
    assert reconcile([connection(SELECTED, REFUSED)], AUDITED) == []


def test_reconcile_names_wrong_counts_missing_and_extra_records() -> None:
    [wrong] = reconcile([connection(SELECTED | {"bytes": 31}, REFUSED)], AUDITED)
    assert "completed statements" in wrong
    [missing] = reconcile([connection(SELECTED, REFUSED, REFUSED)], AUDITED)
    assert "ended in an error" in missing
    [twice] = reconcile([connection(SELECTED, REFUSED)], [*AUDITED, AUDITED[1]])
    assert "completed statements" in twice
    [phantom] = reconcile([], AUDITED)
    assert "no client connection had it" in phantom
    [unopened] = reconcile([connection(port=6000)], [])
    assert "no session_open" in unopened
