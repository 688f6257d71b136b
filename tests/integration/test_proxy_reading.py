"""The proxy decides what the server will run, not something it read otherwise: SQL the
server would read differently (standard_conforming_strings off, a client encoding whose
characters can swallow a backslash), names whose Parse or Bind the server refused, and a
portal read in pipelined chunks. Each attack is sent by hand, message by message."""

from __future__ import annotations

from pgwarden.proxy.protocol import messages as m
from pgwarden.stack import local
from tests.integration.conftest import TEST_DB, ProxyUnderTest
from tests.integration.rawpg import RawClient

# With standard_conforming_strings on (how the proxy reads it) one string literal; with it
# off the literal ends after "a\'" and the server runs the statement hidden behind it.
HIDDEN = "SELECT 'a\\'', 1; SELECT secret FROM forbidden_table; --'"
JEWELS = b"the crown jewels"


def replies(client: RawClient, *messages: bytes) -> list[tuple[bytes, bytes]]:
    client.send(b"".join(messages))
    return client.read_until(b"Z")


def error_of(answer: list[tuple[bytes, bytes]]) -> m.ErrorResponse:
    (error,) = [body for type_, body in answer if type_ == b"E"]
    return m.parse_error_response(error)


def test_a_statement_hidden_by_standard_conforming_strings_off_never_runs(
    proxy: ProxyUnderTest,
) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB)
        answer = replies(c, m.build_query("SET standard_conforming_strings = off"))
        assert b"S" in [t for t, _ in answer]  # the server reports the change
        answer = replies(c, m.build_query(HIDDEN))
        assert JEWELS not in b"".join(body for _, body in answer)
        error = error_of(answer)
        assert (error.sqlstate, "standard_conforming_strings is off" in error.message) == (
            "42501",
            True,
        )
        # Without a backslash both read the same; with the setting back, the literal is one.
        assert [t for t, _ in replies(c, m.build_query("SELECT 'plain'"))] == [
            b"T",
            b"D",
            b"C",
            b"Z",
        ]
        replies(c, m.build_query("RESET standard_conforming_strings"))
        answer = replies(c, m.build_query(HIDDEN))
        assert [t for t, _ in answer] == [b"T", b"D", b"C", b"Z"]
        assert JEWELS not in b"".join(body for _, body in answer)


def test_a_backslash_swallowed_by_a_gbk_character_hides_nothing(proxy: ProxyUnderTest) -> None:
    # E4 B8 AD is UTF-8 for U+4E2D; in GBK, AD 5C is one character: the backslash is gone
    # and the quote after it ends the literal.
    hidden = "SELECT E'\u4e2d\\'', 1; SELECT secret FROM forbidden_table; --'"
    for startup, set_it in (({"client_encoding": "GBK"}, False), ({}, True)):
        with RawClient(proxy.host, proxy.port) as c:
            c.login("a", proxy.tokens["agent:reporting"], TEST_DB, **startup)
            if set_it:
                replies(c, m.build_query("SET client_encoding = 'GBK'"))
            answer = replies(c, m.build_query(hidden))
            assert JEWELS not in b"".join(body for _, body in answer)
            assert "client_encoding is GBK" in error_of(answer).message
            assert [t for t, _ in replies(c, m.build_query("SELECT 'ascii'"))][-2:] == [
                b"C",
                b"Z",
            ]


def test_a_backslash_pipelined_behind_a_setting_change_is_refused(proxy: ProxyUnderTest) -> None:
    with RawClient(proxy.host, proxy.port) as c:
        c.login("a", proxy.tokens["agent:reporting"], TEST_DB)
        # Both at once: the proxy reads the second before the server reports the change.
        c.send(m.build_query("SET standard_conforming_strings = off") + m.build_query(HIDDEN))
        first, second = c.read_until(b"Z"), c.read_until(b"Z")
        assert b"E" not in [t for t, _ in first]
        assert JEWELS not in b"".join(body for _, body in second)
        assert "statements sent before it have not finished" in error_of(second).message


def tls_client(stack: local.Stack, subject: str) -> RawClient:
    proxy = stack.info["proxy"]
    c = RawClient(proxy["host"], proxy["port"])
    c.start_tls(proxy["ca_file"], proxy["host"])
    c.login(subject, stack.info["tokens"][subject], proxy["database"])
    return c


def test_a_parse_the_server_refused_does_not_change_what_the_statement_runs(
    stack: local.Stack,
) -> None:
    # Bounded at prepare time (LIMIT $2 counts as 0), a bulk read of PII once bound.
    bulk = "SELECT id, email FROM customers WHERE id > $1 ORDER BY id LIMIT $2"
    harmless = "SELECT id, status FROM orders WHERE id > $1 ORDER BY id LIMIT $2"
    with tls_client(stack, "agent:reporting") as c:
        assert [t for t, _ in replies(c, m.build_parse("s1", bulk), m.build_sync())] == [
            b"1",
            b"Z",
        ]
        # The server refuses the second Parse (42P05): s1 still runs the first SQL.
        answer = replies(c, m.build_parse("s1", harmless), m.build_sync())
        assert error_of(answer).sqlstate == "42P05"
        answer = replies(
            c,
            m.build_bind("", "s1", [b"0", b"2000"]),
            m.build_execute(""),
            m.build_sync(),
        )
        assert b"@example" not in b"".join(body for _, body in answer)
        error = error_of(answer)
        assert error.sqlstate == "42501"
        assert "unbounded read" in error.message


def test_pipelined_chunks_of_a_portal_share_its_row_limit(stack: local.Stack) -> None:
    with tls_client(stack, "agent:reporting") as c:  # a row limit of 1,000
        answer = replies(
            c,
            m.build_parse("", "SELECT id, customer_id, total FROM orders ORDER BY id"),
            m.build_bind("p", ""),
            *[m.build_execute("p", 600)] * 4,
            m.build_sync(),
        )
        types = [t for t, _ in answer]
        assert types.count(b"D") == 1000
        assert error_of(answer).sqlstate == "54000"


CLEAR_EMAIL = b"radia.allen42@example.com"  # customer 42's, masked for agent:reporting
READ_42 = "SELECT id, email FROM customers WHERE id = 42 LIMIT 1"


def simple(client: RawClient, *sqls: str) -> list[tuple[bytes, bytes]]:
    answer: list[tuple[bytes, bytes]] = []
    for sql in sqls:
        answer += replies(client, m.build_query(sql))
    return answer


def test_the_search_path_follows_what_the_server_undid(stack: local.Stack) -> None:
    undo = {
        "ROLLBACK TO SAVEPOINT": (
            "BEGIN",
            "SAVEPOINT s",
            "SET search_path = pg_catalog",
            "ROLLBACK TO SAVEPOINT s",
        ),
        "a failed implicit transaction": ("SET search_path = pg_catalog; SELECT 1/0",),
        "COMMIT of a failed block": (
            "BEGIN",
            "SET search_path = pg_catalog",
            "SELECT 1/0",
            "COMMIT",
        ),
    }
    for how, sqls in undo.items():
        with tls_client(stack, "agent:reporting") as c:
            simple(c, *sqls)
            answer = simple(c, READ_42)
            rows = [body for type_, body in answer if type_ == b"D"]
            assert len(rows) == 1, how
            assert CLEAR_EMAIL not in rows[0], how  # public.customers, masked


def test_sql_fetch_from_a_protocol_portal_is_decided_as_its_statement(stack: local.Stack) -> None:
    with tls_client(stack, "agent:reporting") as c:
        # A cursor named c ends with its transaction ...
        simple(c, "BEGIN", "DECLARE c CURSOR FOR SELECT id, status FROM orders", "COMMIT")
        simple(c, "BEGIN")
        # ... and a portal bound under its name is what FETCH reads.
        replies(c, m.build_parse("", READ_42), m.build_bind("c", ""), m.build_sync())
        answer = simple(c, "FETCH 1 FROM c")
        rows = [body for type_, body in answer if type_ == b"D"]
        assert len(rows) == 1
        assert CLEAR_EMAIL not in rows[0]
        simple(c, "ROLLBACK")


def test_a_setting_changed_in_a_flush_segment_hides_nothing(stack: local.Stack) -> None:
    # The server reports the change only before a ReadyForQuery, which a Flush never gets.
    hidden = "SELECT 'a\\' -- ', id, email, ssn FROM customers WHERE id < 4"
    with tls_client(stack, "agent:reporting") as c:
        c.send(
            m.build_parse("", "SET standard_conforming_strings = off")
            + m.build_bind("", "")
            + m.build_execute("")
            + m.build_flush()
        )
        assert [t for t, _ in c.read_until(b"C")] == [b"1", b"2", b"C"]
        answer = replies(
            c, m.build_parse("", hidden), m.build_bind("", ""), m.build_execute(""), m.build_sync()
        )
        assert b"901-07-0013" not in b"".join(body for _, body in answer)  # customer 1 ssn
        assert "statements sent before it have not finished" in error_of(answer).message


def test_a_set_config_that_never_runs_does_not_move_the_search_path(stack: local.Stack) -> None:
    with tls_client(stack, "agent:reporting") as c:
        simple(c, "SELECT set_config('search_path', 'pg_catalog', false) WHERE false")
        answer = simple(c, READ_42)
        assert CLEAR_EMAIL not in b"".join(body for _, body in answer)


def test_a_query_the_server_skips_after_an_error_leaves_the_relay_in_step(
    stack: local.Stack,
) -> None:
    failing = (
        m.build_parse("", "SELECT 1/0") + m.build_bind("", "") + m.build_execute("")
    ) + m.build_flush()
    masked = "SELECT id, email FROM customers WHERE id < 4 LIMIT 3"
    with tls_client(stack, "agent:reporting") as c:
        c.send(failing)
        assert [t for t, _ in c.read_until(b"E")][-1] == b"E"
        # PostgreSQL skips it until Sync, without an answer; so does the relay.
        c.send(m.build_query("SELECT 1") + m.build_sync())
        assert [t for t, _ in c.read_until(b"Z")] == [b"Z"]
        answer = simple(c, masked)
        rows = [body for type_, body in answer if type_ == b"D"]
        assert len(rows) == 3
        assert b"grace.backus1@" not in b"".join(rows)
        assert all(b"***@" in row for row in rows)  # masked: g***@example.org
        # Sent before those messages are answered, it is ambiguous: the session ends.
        c.send(failing + m.build_query("SELECT 1"))
        error = c.error()
        while error.sqlstate == "22012":
            error = c.error()
        assert (error.fields["V"], error.sqlstate) == ("FATAL", "08P01")
        assert "send Sync first" in error.message


def test_an_empty_statement_does_not_lift_the_next_ones_row_limit(stack: local.Stack) -> None:
    with tls_client(stack, "agent:reporting") as c:  # a row limit of 1,000
        answer = replies(
            c,
            m.build_parse("s0", ""),
            m.build_bind("e", "s0"),
            m.build_execute("e"),
            m.build_parse("s1", "SELECT g FROM generate_series(1, 5000) g"),
            m.build_bind("b", "s1"),
            m.build_execute("b"),
            m.build_sync(),
        )
        types = [t for t, _ in answer]
        assert types.count(b"D") == 1000
        assert error_of(answer).sqlstate == "54000"


def test_a_sync_sent_during_copy_from_stdin_leaves_the_relay_in_step(stack: local.Stack) -> None:
    with tls_client(stack, "agent:etl") as c:
        c.send(m.build_query("COPY orders FROM STDIN"))
        assert [t for t, _ in c.read_until(b"G")] == [b"G"]
        c.send(m.build_sync() + m.frame(b"c", b""))  # the server ignores the Sync
        assert [t for t, _ in c.read_until(b"Z")] == [b"C", b"Z"]
        answer = simple(c, "SELECT email FROM customers WHERE id < 3 ORDER BY id LIMIT 2")
        rows = [body for type_, body in answer if type_ == b"D"]
        assert len(rows) == 2
        assert b"grace.backus1@" not in b"".join(rows)  # hashed for agent:etl
