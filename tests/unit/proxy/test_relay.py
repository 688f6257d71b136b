"""The relay core, fed bytes by hand: refusals in both protocols, marker errors and the
transaction status the client ends up seeing."""

from __future__ import annotations

from collections.abc import Sequence

from pgwarden.proxy.decision import Action, Decision, Statement
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer
from pgwarden.proxy.relay import Analysis, DecisionRequest, Refusal, RelayCore


class WordAnalyzer:
    """Facts are just the SQL; ``BAD`` in the SQL makes it unparseable."""

    def simple_query(self, sql: str) -> list[Analysis]:
        return [self._one(s.strip()) for s in sql.split(";") if s.strip()]

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis:
        return self._one(sql)

    def unknown_portal(self, portal: str) -> Analysis:
        return self._one(f"FETCH {portal}")

    def unknown_statement(self, name: str) -> Analysis:
        return self._one(f"EXECUTE {name}")

    def _one(self, sql: str) -> Analysis:
        if "BAD" in sql:
            return Refusal("42601", "syntax error")
        return Statement.of({"sql": sql})


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
    assert relay.rows_relayed == 50
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
