"""The relay core, fed bytes by hand: refusals in both protocols, marker errors and the
transaction status the client ends up seeing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from pgwarden.proxy.decision import Action, Decision, Statement
from pgwarden.proxy.masking import MaskKey
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer
from pgwarden.proxy.relay import (
    Analysis,
    DecisionRequest,
    Execution,
    Refusal,
    Refused,
    RelayCore,
)


@dataclass(frozen=True)
class Analyzed:
    statement: Statement


class WordAnalyzer:
    """Facts are just the SQL; ``BAD`` in the SQL makes it unparseable; ``set path`` changes
    name resolution."""

    def changes_resolution(self, analysis: object) -> bool:
        return str(analysis.statement.facts["sql"]).startswith("set path")  # type: ignore[attr-defined]

    def parsed(self, name: str, sql: str) -> None:
        pass

    def closed(self, name: str) -> None:
        pass

    def completed(self, analysis: object, *, rolled_back: bool = False) -> None:
        pass

    def ready(self, status: str, *, failed: bool) -> None:
        pass

    def portal_bound(self, portal: str, sql: str | None, params: object, formats: object) -> None:
        pass

    def parameter_status(self, name: str, value: str) -> None:
        pass

    def simple_query(self, sql: str) -> list[Analysis]:
        return [self._one(s.strip()) for s in sql.split(";") if s.strip()]

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis:
        return self._one(sql)

    def preparation(self, sql: str) -> Analysis:
        return self._one(f"prepare {sql}")

    def unknown_portal(self, portal: str) -> Analysis:
        return self._one(f"FETCH {portal}")

    def unknown_statement(self, name: str) -> Analysis:
        return self._one(f"EXECUTE {name}")

    def _one(self, sql: str) -> Analysis:
        if "BAD" in sql:
            return Refusal("42601", "syntax error")
        return Analyzed(Statement.of({"sql": sql}))


def decide(request: DecisionRequest) -> list[Decision]:
    return [
        Decision(
            Action.DENY if "secret" in str(s.facts["sql"]) else Action.ALLOW,
            ("secret stuff",),
            f"id-{i}",
        )
        for i, s in enumerate(request.statements)
    ]


def run(relay: RelayCore, data: bytes) -> None:
    request = relay.client_data(data)
    while request is not None:
        request = relay.resolve(decide(request))


def messages(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    buf = FrameBuffer(1 << 20)
    buf.feed(b"".join(chunks))
    out = []
    while (msg := buf.next_message()) is not None:
        out.append(msg)
    return out


def types(chunks: list[bytes]) -> bytes:
    return b"".join(t for t, _ in messages(chunks))


def new_relay() -> RelayCore:
    return RelayCore(WordAnalyzer(), max_message_size=1 << 20)


def server_error_for(relay: RelayCore) -> bytes:
    return m.build_error_response("26000", f'prepared statement "{relay.marker}" does not exist')


def test_allowed_query_is_forwarded_unchanged() -> None:
    relay = new_relay()
    run(relay, m.build_query("select 1"))
    assert relay.to_server == [m.build_query("select 1")]


def test_refused_query_never_reaches_the_server() -> None:
    relay = new_relay()
    run(relay, m.build_query("select 1; select secret"))
    sent = messages(relay.to_server)
    assert [t for t, _ in sent] == [b"B", b"S"]
    assert m.parse_bind(sent[0][1]).statement == relay.marker
    assert b"secret" not in b"".join(relay.to_server)


def test_marker_error_is_replaced_and_ready_for_query_passes() -> None:
    relay = new_relay()
    run(relay, m.build_query("select secret"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    (error, rfq) = messages(relay.to_client)
    fields = m.parse_error_response(error[1])
    assert (fields.sqlstate, fields.message) == ("42501", "pgwarden: secret stuff")
    assert fields.fields["D"] == "decision_id=id-0"
    assert rfq == (b"Z", b"I")


def test_refusal_inside_a_block_leaves_the_transaction_failed() -> None:
    relay = new_relay()
    relay.tx_status = "T"
    run(relay, m.build_query("select secret"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("E"))
    assert relay.tx_status == "E"
    assert types(relay.to_client) == b"EZ"


def test_unparseable_statement_is_refused_with_its_sqlstate() -> None:
    relay = new_relay()
    run(relay, m.build_query("BAD sql"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    assert m.parse_error_response(messages(relay.to_client)[0][1]).sqlstate == "42601"


def test_extended_refusal_sends_the_prefix_and_skips_to_sync() -> None:
    relay = new_relay()
    batch = [
        m.build_parse("", "select 1"),
        m.build_bind("", ""),
        m.build_execute(""),
        m.build_parse("", "select secret"),
        m.build_bind("", ""),
        m.build_execute(""),
        m.build_parse("", "select 2"),
        m.build_bind("", ""),
        m.build_execute(""),
        m.build_sync(),
    ]
    run(relay, b"".join(batch))
    # The allowed statement's messages, then the marker Bind and Sync: the refused
    # statement's Parse and Bind are held back too, and nothing after it is sent.
    assert relay.to_server[:3] == batch[:3]
    assert types(relay.to_server) == b"PBEBS"
    assert b"secret" not in b"".join(relay.to_server)


def test_a_statement_prepared_on_its_own_is_decided_before_the_server_parses_it() -> None:
    relay = new_relay()
    prepare = m.build_parse("s1", "select secret") + m.build_describe("S", "s1") + m.build_sync()
    request = relay.client_data(prepare)
    assert request is not None
    assert [s.facts["sql"] for s in request.statements] == ["prepare select secret"]
    relay.resolve(decide(request))
    assert types(relay.to_server) == b"BS"  # marker Bind, Sync: no Parse, no Describe
    assert b"secret" not in b"".join(relay.to_server)
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    (error, _) = messages(relay.to_client)
    assert m.parse_error_response(error[1]).sqlstate == "42501"


def test_an_allowed_preparation_goes_on_and_its_execution_is_decided_again() -> None:
    relay = new_relay()
    prepare = m.build_parse("s1", "select 1") + m.build_describe("S", "s1") + m.build_sync()
    request = relay.client_data(prepare)
    assert request is not None
    assert len(request.statements) == 1
    relay.resolve(decide(request))
    assert b"".join(relay.to_server) == prepare
    relay.to_server.clear()
    relay.server_data(m.frame(b"1", b"") + m.frame(b"n", b"") + m.build_ready_for_query("I"))
    request = relay.client_data(m.build_bind("", "s1") + m.build_execute("") + m.build_sync())
    assert request is not None
    assert [s.facts["sql"] for s in request.statements] == ["select 1"]


def test_a_parse_no_execute_starts_from_is_decided_in_message_order() -> None:
    relay = new_relay()
    batch = [
        m.build_parse("", "select 1"),
        m.build_bind("", ""),
        # Parse again of the unnamed statement: the portal keeps "select 1".
        m.build_parse("", "select secret"),
        m.build_execute(""),
        m.build_sync(),
    ]
    request = relay.client_data(b"".join(batch))
    assert request is not None
    assert [s.facts["sql"] for s in request.statements] == [
        "prepare select secret",
        "select 1",
    ]
    relay.resolve(decide(request))
    # The refused Parse fails the batch where it stands, as a failing Parse would.
    assert relay.to_server[:2] == batch[:2]
    assert types(relay.to_server) == b"PBBS"
    assert b"secret" not in b"".join(relay.to_server)


def test_refusal_before_flush_discards_until_the_clients_sync() -> None:
    relay = new_relay()
    run(
        relay,
        m.build_parse("", "select secret")
        + m.build_bind("", "")
        + m.build_execute("")
        + m.build_flush(),
    )
    assert types(relay.to_server) == b"BH"  # marker Bind, Flush
    relay.to_server.clear()
    run(
        relay,
        m.build_parse("", "select 3") + m.build_bind("", "") + m.build_execute("") + m.build_sync(),
    )
    assert relay.to_server == [m.build_sync()]
    relay.server_data(server_error_for(relay))
    relay.server_data(m.build_ready_for_query("I"))
    assert types(relay.to_client) == b"EZ"


def test_an_earlier_real_error_wins_and_the_refusal_is_dropped() -> None:
    relay = new_relay()
    run(relay, m.build_query("select secret"))
    real = m.build_error_response("25P02", "current transaction is aborted")
    relay.server_data(real + m.build_ready_for_query("E"))
    assert relay.to_client == [real + m.build_ready_for_query("E")]
    # The next real error is passed as is.
    relay.to_client.clear()
    relay.server_data(m.build_error_response("22012", "division by zero"))
    assert m.parse_error_response(messages(relay.to_client)[0][1]).sqlstate == "22012"


def test_server_bytes_pass_through_split_anywhere() -> None:
    relay = new_relay()
    rows = b"".join(m.frame(b"D", b"\x00\x01\x00\x00\x00\x03abc") for _ in range(50))
    stream = (
        m.frame(b"T", b"\x00\x00")
        + rows
        + m.frame(b"C", b"SELECT 50\0")
        + m.build_ready_for_query("T")
    )
    for i in range(0, len(stream), 7):
        relay.server_data(stream[i : i + 7])
    assert b"".join(relay.to_client) == stream
    assert relay.tx_status == "T"


def test_function_call_is_refused() -> None:
    relay = new_relay()
    run(relay, m.frame(b"F", b"\x00\x00\x04\xd2\x00\x00\x00\x00\x00\x00"))
    assert types(relay.to_server) == b"BS"
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    assert b"FunctionCall" in relay.to_client[0]


def test_copy_data_is_relayed_as_is() -> None:
    relay = new_relay()
    data = m.frame(b"d", b"1\tx\n") + m.frame(b"c", b"")
    run(relay, data)
    assert b"".join(relay.to_server) == data


def test_decision_pauses_later_client_messages() -> None:
    relay = new_relay()
    request = relay.client_data(m.build_query("select 1") + m.build_query("select 2"))
    assert request is not None
    assert relay.to_server == []
    assert relay.client_data(m.build_query("select 3")) is None  # still waiting
    second = relay.resolve(decide(request))
    assert relay.to_server == [m.build_query("select 1")]
    assert second is not None
    third = relay.resolve(decide(second))
    assert third is not None
    relay.resolve(decide(third))
    assert relay.to_server == [m.build_query(f"select {i}") for i in (1, 2, 3)]


# -- results: executions, masks, row limits --------------------------------------------------


def row_description(*fields: tuple[str, int, int, int]) -> bytes:
    body = len(fields).to_bytes(2, "big")
    for name, table_oid, attnum, type_oid in fields:
        body += name.encode() + b"\0" + table_oid.to_bytes(4, "big") + attnum.to_bytes(2, "big")
        body += type_oid.to_bytes(4, "big") + (-1).to_bytes(2, "big", signed=True)
        body += (-1).to_bytes(4, "big", signed=True) + b"\0\0"
    return m.frame(b"T", body)


def data_row(*values: bytes | None) -> bytes:
    body = len(values).to_bytes(2, "big")
    for v in values:
        body += (-1).to_bytes(4, "big", signed=True) if v is None else len(v).to_bytes(4, "big") + v
    return m.frame(b"D", body)


def row_values(body: bytes) -> list[bytes | None]:
    count, pos, out = int.from_bytes(body[:2], "big"), 2, []
    for _ in range(count):
        size = int.from_bytes(body[pos : pos + 4], "big", signed=True)
        pos += 4
        out.append(None if size < 0 else body[pos : pos + size])
        pos += max(size, 0)
    return out


CUSTOMERS = 16500
COLUMNS = {(CUSTOMERS, 2): "public.customers.email", (CUSTOMERS, 1): "public.customers.id"}


class PolicyRelay:
    """A relay whose decisions carry masks and row limits."""

    def __init__(
        self,
        *,
        mask: dict[str, str] | None = None,
        row_limit: int | None = None,
        outputs: list[dict[str, object]] | None = None,
    ) -> None:
        self.completed: list[Execution] = []
        self.relay = RelayCore(
            WordAnalyzer(),
            max_message_size=1 << 20,
            column_name=lambda oid, att: COLUMNS.get((oid, att)),
            mask_key=MaskKey(b"k" * 32),
            on_complete=self.completed.append,
        )
        self.mask, self.row_limit, self.outputs = mask or {}, row_limit, outputs

    def send(self, data: bytes) -> None:
        request = self.relay.client_data(data)
        while request is not None:
            decisions = [
                Decision(Action.ALLOW, (), f"id-{i}", mask=self.mask, row_limit=self.row_limit)
                for i, _ in enumerate(request.statements)
            ]
            if self.outputs is not None:
                for s in request.statements:
                    s.facts["outputs"] = self.outputs  # type: ignore[index]
            request = self.relay.resolve(decisions)


def test_direct_column_is_masked_in_every_row() -> None:
    p = PolicyRelay(mask={"public.customers.email": "partial_email"})
    p.send(m.build_query("select id, email from customers"))
    p.relay.server_data(
        row_description(("id", CUSTOMERS, 1, 25), ("email", CUSTOMERS, 2, 25))
        + data_row(b"1", b"alice@example.com")
        + data_row(b"2", None)
        + m.frame(b"C", b"SELECT 2\0")
        + m.build_ready_for_query("I")
    )
    rows = [row_values(b) for t, b in messages(p.relay.to_client) if t == b"D"]
    assert rows == [[b"1", b"a***@example.com"], [b"2", None]]
    (done,) = p.completed
    assert (done.rows, done.rows_affected, done.status) == (2, 2, "complete")


def test_derived_output_is_masked_whole_and_non_text_becomes_null() -> None:
    outputs = [
        {"name": "lower", "sources": ["public.customers.email"], "direct": False},
        {
            "name": "j",
            "sources": ["public.customers.email", "public.customers.id"],
            "direct": False,
        },
    ]
    p = PolicyRelay(mask={"public.customers.email": "last4"}, outputs=outputs)
    p.send(m.build_query("select lower(email), row_to_json(c) from customers c"))
    p.relay.server_data(
        row_description(("lower", 0, 0, 25), ("j", 0, 0, 114))
        + data_row(b"alice@example.com", b'{"email": "alice@example.com"}')
        + m.frame(b"C", b"SELECT 1\0")
        + m.build_ready_for_query("I")
    )
    rows = [row_values(b) for t, b in messages(p.relay.to_client) if t == b"D"]
    assert rows == [[b"[redacted]", None]]
    assert b"alice" not in b"".join(p.relay.to_client)


def test_unknown_lineage_masks_every_expression() -> None:
    p = PolicyRelay(mask={"public.customers.email": "hash"})
    p.send(m.build_query("select something from somewhere"))
    p.relay.server_data(row_description(("x", 0, 0, 25)) + data_row(b"alice@example.com"))
    rows = [row_values(b) for t, b in messages(p.relay.to_client) if t == b"D"]
    assert rows[0][0] is not None
    assert b"alice" not in rows[0][0]


def test_extended_execution_gets_a_describe_of_its_own_for_masks() -> None:
    p = PolicyRelay(mask={"public.customers.email": "redact"})
    p.send(
        m.build_parse("", "select email from customers")
        + m.build_bind("", "")
        + m.build_execute("")
        + m.build_sync()
    )
    assert types(p.relay.to_server) == b"PBDES"  # our Describe before Execute
    p.relay.server_data(
        m.frame(b"1", b"")
        + m.frame(b"2", b"")
        + row_description(("email", CUSTOMERS, 2, 25))
        + data_row(b"alice@example.com")
        + m.frame(b"C", b"SELECT 1\0")
        + m.build_ready_for_query("I")
    )
    assert types(p.relay.to_client) == b"12DCZ"  # the RowDescription we asked for is ours
    rows = [row_values(b) for t, b in messages(p.relay.to_client) if t == b"D"]
    assert rows == [[b"[redacted]"]]


def test_row_limit_stops_forwarding_cancels_and_ends_with_an_error() -> None:
    p = PolicyRelay(row_limit=2)
    p.send(m.build_query("select id from items"))
    p.relay.server_data(
        row_description(("id", 0, 0, 23)) + b"".join(data_row(str(i).encode()) for i in range(3))
    )
    assert p.relay.cancel_requested
    p.relay.server_data(
        data_row(b"4")
        + m.build_error_response("57014", "canceling statement")
        + m.build_ready_for_query("I")
    )
    got = messages(p.relay.to_client)
    assert [t for t, _ in got] == [b"T", b"D", b"D", b"E", b"Z"]
    error = m.parse_error_response(got[3][1])
    assert (error.sqlstate, "row limit of 2 rows" in error.message) == ("54000", True)
    (done,) = p.completed
    assert (done.rows, done.limit_reached, done.status) == (2, True, "failed")


def test_row_limit_when_the_query_finished_first() -> None:
    p = PolicyRelay(row_limit=1)
    p.send(m.build_query("select id from items"))
    p.relay.server_data(
        row_description(("id", 0, 0, 23))
        + data_row(b"1")
        + data_row(b"2")
        + m.frame(b"C", b"SELECT 2\0")
        + m.build_ready_for_query("I")
    )
    assert types(p.relay.to_client) == b"TDEZ"


def test_rows_under_the_limit_pass_untouched() -> None:
    p = PolicyRelay(row_limit=10)
    p.send(m.build_query("select id from items"))
    stream = row_description(("id", 0, 0, 23)) + data_row(b"1") + m.frame(b"C", b"SELECT 1\0")
    p.relay.server_data(stream + m.build_ready_for_query("I"))
    assert b"".join(p.relay.to_client) == stream + m.build_ready_for_query("I")


def test_masks_cannot_apply_to_copy_so_it_is_refused() -> None:
    class CopyAnalyzer(WordAnalyzer):
        def _one(self, sql: str) -> Analysis:
            return Analyzed(
                Statement.of({"sql": sql, "copy": {"direction": "to", "target": "stdout"}})
            )

    relay = RelayCore(CopyAnalyzer(), max_message_size=1 << 20)
    request = relay.client_data(m.build_query("copy customers to stdout"))
    assert request is not None
    relay.resolve([Decision(Action.ALLOW, (), "d1", mask={"public.customers.email": "null"})])
    assert types(relay.to_server) == b"BS"  # refused: marker Bind and Sync


def test_executions_after_an_error_are_skipped() -> None:
    p = PolicyRelay()
    p.send(m.build_query("select 1; select 2"))
    p.relay.server_data(
        m.build_error_response("22012", "division by zero") + m.build_ready_for_query("I")
    )
    assert [(e.status, e.sqlstate) for e in p.completed] == [("failed", "22012"), ("skipped", "")]


def test_an_error_at_bind_fails_the_execution_it_was_for() -> None:
    # psycopg and JDBC send Parse/Bind/Describe/Execute/Sync; SELECT 1/0 fails at Bind
    # (the planner folds the constant), before the Describe is answered.
    p = PolicyRelay()
    p.send(
        m.build_parse("", "select 1/0")
        + m.build_bind("", "")
        + m.build_describe("P", "")
        + m.build_execute("")
        + m.build_sync()
    )
    p.relay.server_data(
        b"1\0\0\0\x04"  # ParseComplete
        + m.build_error_response("22012", "division by zero")
        + m.build_ready_for_query("I")
    )
    assert [(e.status, e.sqlstate) for e in p.completed] == [("failed", "22012")]


def test_a_session_that_ends_mid_result_reports_what_was_sent() -> None:
    p = PolicyRelay()
    p.send(m.build_query("select 1; select 2"))
    rows = data_row(b"1") + data_row(b"2")
    p.relay.server_data(row_description(("id", 0, 0, 23)) + rows)
    p.relay.abandon()
    assert [(e.status, e.rows, e.bytes_sent) for e in p.completed] == [
        ("interrupted", 2, len(rows)),
        ("skipped", 0, 0),
    ]
    p.relay.abandon()  # nothing is reported twice
    assert len(p.completed) == 2


def test_refusals_are_reported_with_their_decision_or_the_proxys_reason() -> None:
    refused: list[Refused] = []
    relay = RelayCore(WordAnalyzer(), max_message_size=1 << 20, on_refused=refused.append)
    run(relay, m.build_query("select secret") + m.build_query("BAD sql"))
    policy, proxy_own = refused
    assert policy.decision is not None
    assert (policy.decision.decision_id, policy.sqlstate) == ("id-0", "42501")
    assert policy.analysis is not None
    assert policy.analysis.statement.facts == {"sql": "select secret"}
    assert (proxy_own.decision, proxy_own.sqlstate, proxy_own.message) == (
        None,
        "42601",
        "syntax error",
    )


# -- names: what a statement or portal holds is what the server confirmed ---------------------

PARSE_COMPLETE, BIND_COMPLETE = m.frame(b"1", b""), m.frame(b"2", b"")


def decided(relay: RelayCore, data: bytes) -> list[object]:
    """The SQL of each statement ``data`` asks a decision for (then resolved)."""
    request = relay.client_data(data)
    sqls: list[object] = []
    while request is not None:
        sqls += [s.facts["sql"] for s in request.statements]
        request = relay.resolve(decide(request))
    return sqls


def execute(portal: str = "") -> bytes:
    return m.build_execute(portal) + m.build_sync()


def test_a_parse_the_server_rejects_leaves_the_statement_as_it_was() -> None:
    relay = new_relay()
    decided(relay, m.build_parse("s1", "select a") + m.build_sync())
    relay.server_data(PARSE_COMPLETE + m.build_ready_for_query("I"))
    decided(relay, m.build_parse("s1", "select b") + m.build_sync())
    relay.server_data(
        m.build_error_response("42P05", 'prepared statement "s1" already exists')
        + m.build_ready_for_query("I")
    )
    assert decided(relay, m.build_bind("", "s1") + execute()) == ["select a"]


def test_a_parse_skipped_after_an_error_leaves_the_unnamed_statement_as_it_was() -> None:
    relay = new_relay()
    decided(relay, m.build_parse("", "select a") + m.build_sync())
    relay.server_data(PARSE_COMPLETE + m.build_ready_for_query("I"))
    decided(relay, m.build_bind("", "nosuch") + m.build_parse("", "select b") + m.build_sync())
    relay.server_data(
        m.build_error_response("26000", 'prepared statement "nosuch" does not exist')
        + m.build_ready_for_query("I")
    )
    assert decided(relay, m.build_bind("", "") + execute()) == ["select a"]


def test_a_bind_the_server_rejects_leaves_the_portal_as_it_was() -> None:
    relay = new_relay()
    decided(
        relay, m.build_parse("sa", "select a") + m.build_parse("sb", "select b") + m.build_sync()
    )
    relay.server_data(PARSE_COMPLETE * 2 + m.build_ready_for_query("T"))
    decided(relay, m.build_bind("p", "sa") + m.build_sync())
    relay.server_data(BIND_COMPLETE + m.build_ready_for_query("T"))
    decided(relay, m.build_bind("p", "sb") + m.build_sync())
    relay.server_data(
        m.build_error_response("42P03", 'portal "p" already exists') + m.build_ready_for_query("E")
    )
    assert decided(relay, execute("p")) == ["select a"]


def test_a_name_used_before_the_server_confirmed_it_is_refused() -> None:
    relay = new_relay()
    decided(relay, m.build_parse("s1", "select a") + m.build_sync())  # no answer yet
    relay.to_server.clear()
    assert decided(relay, m.build_bind("", "s1") + execute()) == []
    assert types(relay.to_server) == b"BS"  # the marker Bind: nothing of it was sent
    relay.server_data(PARSE_COMPLETE + m.build_ready_for_query("I"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    assert "before the server confirmed its Parse" in m.parse_error_response(error).message
    assert decided(relay, m.build_bind("", "s1") + execute()) == ["select a"]


def test_a_name_set_earlier_in_the_same_segment_is_used_before_its_answer() -> None:
    # pg-cursor: Parse, Bind, Describe, Flush, then Execute, Flush before any answer. Had
    # the Bind failed, the server would skip this Execute too (nothing until Sync runs).
    relay = new_relay()
    submit = m.build_parse("", "select a") + m.build_bind("C_1", "") + m.build_describe("P", "C_1")
    assert decided(relay, submit + m.build_flush()) == ["prepare select a"]
    assert decided(relay, m.build_execute("C_1", 5) + m.build_flush()) == ["select a"]


def test_portals_end_with_their_transaction() -> None:
    relay = new_relay()
    decided(relay, m.build_parse("s1", "select a") + m.build_bind("c", "s1") + m.build_sync())
    relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.build_ready_for_query("I"))
    # "c" is a cursor's now, if anything's: decided as a FETCH from it.
    assert decided(relay, execute("c")) == ["FETCH c"]


def test_chunks_of_one_portal_in_one_batch_share_the_row_limit() -> None:
    p = PolicyRelay(row_limit=3)
    p.send(m.build_parse("", "select id from items") + m.build_bind("p", "") + m.build_sync())
    p.relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.build_ready_for_query("T"))
    p.relay.to_client.clear()
    p.send(m.build_execute("p", 2) * 3 + m.build_sync())
    suspended = m.frame(b"s", b"")
    p.relay.server_data(data_row(b"1") + data_row(b"2") + suspended)
    p.relay.server_data(data_row(b"3") + data_row(b"4") + suspended)
    assert p.relay.cancel_requested
    # The third chunk ran before the cancel arrived: the client has its error already.
    p.relay.server_data(data_row(b"5") + data_row(b"6") + suspended)
    p.relay.server_data(m.build_ready_for_query("T"))
    got = messages(p.relay.to_client)
    assert [t for t, _ in got] == [b"D", b"D", b"s", b"D", b"E", b"Z"]
    assert m.parse_error_response(got[4][1]).sqlstate == "54000"


# -- SQL the server could read otherwise than the proxy ---------------------------------------

BACKSLASH_QUERY = "select 'a\\', 1"  # with standard_conforming_strings off: an open string


def refusal_message(relay: RelayCore) -> str:
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    relay.to_client.clear()
    return m.parse_error_response(error).message


def test_backslashes_are_refused_while_standard_conforming_strings_is_off() -> None:
    relay = new_relay()
    relay.server_data(m.build_parameter_status("standard_conforming_strings", "off"))
    run(relay, m.build_query(BACKSLASH_QUERY))
    assert types(relay.to_server) == b"BS"
    assert "standard_conforming_strings is off" in refusal_message(relay)
    relay.to_server.clear()
    run(relay, m.build_query("select 'plain'"))  # the same reading either way
    assert relay.to_server == [m.build_query("select 'plain'")]
    relay.server_data(m.frame(b"C", b"SELECT 1\0") + m.build_ready_for_query("I"))
    relay.to_server.clear()
    relay.server_data(m.build_parameter_status("standard_conforming_strings", "on"))
    run(relay, m.build_query(BACKSLASH_QUERY))
    assert relay.to_server == [m.build_query(BACKSLASH_QUERY)]


def test_under_another_client_encoding_only_ascii_without_backslashes_is_read() -> None:
    relay = new_relay()
    relay.parameter_status("client_encoding", "GBK")  # as reported at start
    for sql in ("select e'\u4e2d\\'", "select '\u4e2d'"):
        run(relay, m.build_query(sql))
        assert types(relay.to_server) == b"BS"
        assert "client_encoding is GBK" in refusal_message(relay)
        relay.to_server.clear()
    run(relay, m.build_query("select 'ascii'"))
    assert relay.to_server == [m.build_query("select 'ascii'")]


def test_a_backslash_behind_unfinished_statements_is_refused() -> None:
    relay = new_relay()
    run(relay, m.build_query("select 1") + m.build_query(BACKSLASH_QUERY))
    assert types(relay.to_server) == b"QBS"
    relay.server_data(m.frame(b"C", b"SELECT 1\0") + m.build_ready_for_query("I"))
    assert "statements sent before it have not finished" in refusal_message(relay)
    # In a batch, behind an Execute: refused though it is executed itself.
    relay.to_server.clear()
    batch = (
        m.build_parse("", "select 1")
        + m.build_bind("", "")
        + m.build_execute("")
        + m.build_parse("", BACKSLASH_QUERY)
        + m.build_bind("", "")
        + m.build_execute("")
        + m.build_sync()
    )
    run(relay, batch)
    assert types(relay.to_server) == b"PBEBS"


def test_a_setting_changed_in_a_flush_segment_is_unsettled_until_ready_for_query() -> None:
    relay = new_relay()
    decided(
        relay,
        m.build_parse("", "set standard_conforming_strings = off")
        + m.build_bind("", "")
        + m.build_execute("")
        + m.build_flush(),
    )
    # The SET completed; its ParameterStatus comes only before a ReadyForQuery.
    relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.frame(b"C", b"SET\0"))
    relay.to_server.clear()
    decided(relay, m.build_parse("", BACKSLASH_QUERY) + m.build_bind("", "") + execute())
    assert types(relay.to_server) == b"BS"  # refused: the marker Bind


def test_a_parse_sent_after_an_error_of_its_segment_is_never_credited() -> None:
    relay = new_relay()
    decided(relay, m.build_parse("x", "select a") + m.build_sync())
    relay.server_data(PARSE_COMPLETE + m.build_ready_for_query("I"))
    decided(relay, m.build_bind("", "x") + m.build_execute("") + m.build_flush())
    relay.server_data(BIND_COMPLETE + m.build_error_response("22012", "division by zero"))
    # Sent after the error, in the same segment: the server skips it.
    decided(relay, m.build_parse("x", "select b") + m.build_flush())
    decided(relay, m.build_sync())
    relay.server_data(m.build_ready_for_query("I"))
    decided(relay, m.build_parse("y", "select c") + m.build_sync())
    relay.server_data(PARSE_COMPLETE + m.build_ready_for_query("I"))
    assert decided(relay, m.build_bind("", "x") + execute()) == ["select a"]


FLUSHED_SELECT = (
    m.build_parse("", "select 1") + m.build_bind("", "") + m.build_execute("") + m.build_flush()
)


def test_a_query_before_the_extended_messages_were_answered_is_a_protocol_violation() -> None:
    relay = new_relay()
    decided(relay, FLUSHED_SELECT)
    with pytest.raises(m.ProtocolViolation, match="send Sync first"):
        relay.client_data(m.build_query("select 2"))


def test_after_an_error_in_an_extended_sequence_the_relay_skips_to_sync_as_the_server() -> None:
    relay = new_relay()
    decided(relay, FLUSHED_SELECT)
    relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.build_error_response("22012", "x"))
    relay.to_server.clear()
    # Skipped without an answer by the server; not sent at all by the relay.
    assert relay.client_data(m.build_query("select 2") + m.build_parse("x", "select 3")) is None
    assert relay.to_server == []
    relay.client_data(m.build_sync())
    assert relay.to_server == [m.build_sync()]
    relay.server_data(m.build_ready_for_query("I"))
    assert decided(relay, m.build_query("select 4")) == ["select 4"]


def test_a_query_after_the_extended_messages_were_answered_runs() -> None:
    relay = new_relay()
    decided(relay, FLUSHED_SELECT)
    relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.frame(b"C", b"SELECT 1\0"))
    assert decided(relay, m.build_query("select 2")) == ["select 2"]


# -- replies the server gives without a decision: empty statements, COPY FROM STDIN ---------


class CopyAnalyzer(WordAnalyzer):
    """``copy in`` is a COPY FROM STDIN; an empty statement runs nothing."""

    def _one(self, sql: str) -> Analysis:
        if sql.startswith("copy in"):
            facts = {"sql": sql, "copy": {"direction": "from", "target": "stdin"}}
            return Analyzed(Statement.of(facts))
        return super()._one(sql)

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis | None:
        return self._one(sql) if sql else None


def test_an_empty_statement_is_answered_in_its_place_not_by_the_next_one() -> None:
    p = PolicyRelay(row_limit=1)
    p.relay.analyzer = CopyAnalyzer()
    p.send(
        m.build_parse("s0", "")
        + m.build_bind("e", "s0")
        + m.build_execute("e")
        + m.build_parse("s1", "select g")
        + m.build_bind("b", "s1")
        + m.build_execute("b")
        + m.build_sync()
    )
    p.relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.frame(b"I", b""))
    p.relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + data_row(b"1") + data_row(b"2"))
    assert p.relay.cancel_requested  # the row limit of "select g" counts its rows
    assert [t for t, _ in messages(p.relay.to_client)].count(b"D") == 1


def test_sync_and_flush_sent_during_copy_from_stdin_are_not_counted() -> None:
    relay = RelayCore(CopyAnalyzer(), max_message_size=1 << 20)
    run(relay, m.build_query("copy in orders"))
    relay.server_data(m.frame(b"G", b"\0\0\0"))
    relay.to_server.clear()
    run(relay, m.build_sync() + m.frame(b"d", b"1\n") + m.frame(b"c", b""))
    assert types(relay.to_server) == b"dc"  # the server would ignore the Sync
    relay.server_data(m.frame(b"C", b"COPY 1\0") + m.build_ready_for_query("I"))
    run(relay, m.build_query("select a"))
    relay.server_data(data_row(b"1") + data_row(b"2"))
    assert relay._head is not None  # the next result has its execution at the head


def test_copy_from_stdin_in_the_extended_protocol_is_refused() -> None:
    relay = RelayCore(CopyAnalyzer(), max_message_size=1 << 20)
    run(relay, m.build_parse("", "copy in orders") + m.build_bind("", "") + execute())
    assert types(relay.to_server) == b"BS"  # the marker Bind
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    assert "simple Query only" in m.parse_error_response(error).message


def test_anything_but_copy_data_during_copy_from_stdin_is_a_protocol_violation() -> None:
    relay = RelayCore(CopyAnalyzer(), max_message_size=1 << 20)
    run(relay, m.build_query("copy in orders"))
    with pytest.raises(m.ProtocolViolation, match="COPY FROM STDIN"):
        relay.client_data(m.build_query("select 1"))


# -- name resolution: what the server resolves names under is what they were analyzed under


def ran(sql: str) -> bytes:
    return m.build_parse("", sql) + m.build_bind("", "") + m.build_execute("")


def completed(tag: bytes) -> bytes:
    return PARSE_COMPLETE + BIND_COMPLETE + m.frame(b"C", tag + b"\0")


def test_a_statement_behind_a_change_of_name_resolution_in_its_batch_is_refused() -> None:
    relay = new_relay()
    assert decided(relay, ran("set path x") + ran("select a") + m.build_sync()) == ["set path x"]
    assert types(relay.to_server) == b"PBEBS"  # the SET, then the marker Bind
    relay.server_data(completed(b"SET") + server_error_for(relay) + m.build_ready_for_query("I"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    assert "may change what names refer to" in m.parse_error_response(error).message


def test_a_statement_pipelined_behind_a_change_of_name_resolution_waits_for_its_answer() -> None:
    relay = new_relay()
    decided(relay, ran("set path x") + m.build_sync())
    relay.to_server.clear()
    assert decided(relay, ran("select a") + m.build_sync()) == []  # refused: not decided
    assert types(relay.to_server) == b"BS"
    # Its CommandComplete is not enough: the implicit transaction can still roll back.
    relay.server_data(completed(b"SET"))
    relay.to_server.clear()
    assert decided(relay, m.build_query("select b")) == []
    relay.server_data(m.build_ready_for_query("I"))  # the SET's segment
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    assert decided(relay, ran("select a") + m.build_sync()) == ["select a"]


def test_a_query_behind_a_change_of_name_resolution_is_refused_until_it_is_final() -> None:
    relay = new_relay()
    decided(relay, m.build_query("set path x"))
    relay.to_server.clear()
    assert decided(relay, m.build_query("select a")) == []
    relay.server_data(m.frame(b"C", b"SET\0") + m.build_ready_for_query("I"))
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    assert decided(relay, m.build_query("select a")) == ["select a"]


def test_a_portal_bound_under_other_names_is_refused_and_one_bound_under_these_runs() -> None:
    relay = new_relay()
    bind = m.build_parse("s1", "select a") + m.build_bind("c", "s1") + m.build_sync()
    decided(relay, m.build_query("begin"))
    relay.server_data(m.frame(b"C", b"BEGIN\0") + m.build_ready_for_query("T"))
    decided(relay, bind)
    relay.server_data(PARSE_COMPLETE + BIND_COMPLETE + m.build_ready_for_query("T"))
    assert decided(relay, execute("c")) == ["select a"]  # bound under the names of now
    relay.server_data(m.frame(b"C", b"SELECT 0\0") + m.build_ready_for_query("T"))
    decided(relay, m.build_query("set path x"))
    relay.server_data(m.frame(b"C", b"SET\0") + m.build_ready_for_query("T"))
    relay.to_server.clear()
    assert decided(relay, execute("c")) == []
    assert types(relay.to_server) == b"BS"
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("E"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    assert 'portal "c" was bound under another search_path' in m.parse_error_response(error).message


class RecordingAnalyzer(WordAnalyzer):
    """Remembers the SQL it analyzed."""

    def __init__(self) -> None:
        self.analyzed: list[str] = []

    def simple_query(self, sql: str) -> list[Analysis]:
        self.analyzed.append(sql)
        return super().simple_query(sql)

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis:
        self.analyzed.append(sql)
        return super().execution(sql, params, param_formats)


def test_sql_longer_than_the_proxy_analyzes_is_refused_before_analysis() -> None:
    analyzer = RecordingAnalyzer()
    relay = RelayCore(analyzer, max_message_size=1 << 20, max_statement_bytes=1024)
    long_sql = "select " + "1," * 600 + "1"  # 1,208 bytes
    assert decided(relay, m.build_query(long_sql)) == []
    assert types(relay.to_server) == b"BS"  # the marker Bind, nothing of it
    error = refusal_error_of(relay)
    assert (error.sqlstate, "max_statement_bytes = 1024" in error.message) == ("54000", True)
    relay.to_server.clear()
    assert decided(relay, ran(long_sql) + m.build_sync()) == []
    assert types(relay.to_server) == b"BS"
    assert refusal_error_of(relay).sqlstate == "54000"
    # Multibyte: 300 characters of 4 bytes each are 1,200 bytes.
    assert decided(relay, m.build_query("select '" + "\U0001f600" * 300 + "'")) == []
    assert refusal_error_of(relay).sqlstate == "54000"
    assert decided(relay, m.build_query("select a")) == ["select a"]
    assert analyzer.analyzed == ["select a"]


def refusal_error_of(relay: RelayCore) -> m.ErrorResponse:
    relay.server_data(server_error_for(relay) + m.build_ready_for_query("I"))
    error = next(b for t, b in messages(relay.to_client) if t == b"E")
    relay.to_client.clear()
    return m.parse_error_response(error)
