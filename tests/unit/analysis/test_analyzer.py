"""The analyzer the proxy calls: memo layers, Bind, session state, parse errors."""

from __future__ import annotations

import json
import struct

import pytest
from analysis_corpus import CATALOG
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.proxy.analysis import Analyzer, SessionAnalysisState, catalog_of
from pgwarden.proxy.analysis.document import problems


def analyzer_and_state(**session: str) -> tuple[Analyzer, object]:
    analyzer = Analyzer(CATALOG)
    return analyzer, analyzer.new_session(**session)


def one(analyzer: Analyzer, state: object, sql: str, protocol: str = "simple") -> object:
    [analyzed] = analyzer.analyze_query(sql, state, protocol)  # type: ignore[arg-type]
    return analyzed


# ---------------------------------------------------------------------------- memo


def test_a_repeated_statement_returns_the_same_analysis_and_digest() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    first = analyzer.analyze_query("SELECT email FROM customers WHERE id = 1", state)
    again = analyzer.analyze_query("SELECT email FROM customers WHERE id = 1", state)
    assert again[0] is first[0]
    assert again[0].statement.digest == first[0].statement.digest


def test_statements_differing_in_literals_share_facts_but_keep_their_limit() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    ten = analyzer.analyze_query("SELECT id FROM orders WHERE total > 5 LIMIT 10", state)[0]
    twenty = analyzer.analyze_query("SELECT id FROM orders WHERE total > 7 LIMIT 20", state)[0]
    assert ten.facts["limit"] == 10
    assert twenty.facts["limit"] == 20
    assert ten.statement.digest != twenty.statement.digest
    assert {**ten.facts, "limit": 20} == dict(twenty.facts)
    again = analyzer.analyze_query("SELECT id FROM orders WHERE total > 9 LIMIT 10", state)[0]
    assert again.statement.digest == ten.statement.digest


def test_a_limit_that_is_not_a_plain_number_does_not_borrow_another_value() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    analyzer.analyze_query("SELECT id FROM orders LIMIT 10", state)
    quoted = analyzer.analyze_query("SELECT id FROM orders LIMIT '25'", state)[0]
    assert quoted.facts["limit"] == 25


def test_literal_dependent_facts_are_never_shared_between_literal_variants() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    by_id = analyzer.analyze_query("SELECT id, ssn FROM customers ORDER BY 1", state)[0]
    by_ssn = analyzer.analyze_query("SELECT id, ssn FROM customers ORDER BY 2", state)[0]
    assert {"relation": "public.customers", "column": "id", "usage": "order"} in by_id.facts[
        "columns"
    ]
    assert {"relation": "public.customers", "column": "ssn", "usage": "order"} in by_ssn.facts[
        "columns"
    ]
    quiet = analyzer.analyze_query("DO $$ BEGIN PERFORM 1; END $$", state)[0]
    loud = analyzer.analyze_query("DO $$ BEGIN PERFORM ssn FROM customers; END $$", state)[0]
    assert quiet.facts["relations"] == []
    assert loud.facts["relations"][0]["name"] == "customers"
    timeout = analyzer.analyze_query("SELECT set_config('statement_timeout', '1', false)", state)
    role = analyzer.analyze_query("SELECT set_config('role', 'admin', false)", state)
    assert timeout[0].facts["set"]["name"] == "statement_timeout"
    assert role[0].facts["set"]["name"] == "role"


def test_the_memo_is_keyed_by_search_path_and_protocol() -> None:
    analyzer = Analyzer(CATALOG)
    public = analyzer.new_session()
    analytics = analyzer.new_session(search_path="analytics")
    sql = "SELECT total FROM daily_sales"
    assert analyzer.analyze_query(sql, public)[0].facts["relations"][0]["schema"] == "public"
    assert analyzer.analyze_query(sql, analytics)[0].facts["relations"][0]["schema"] == (
        "analytics"
    )
    simple = analyzer.analyze_query("SELECT 1", public, "simple")[0]
    extended = analyzer.analyze_query("SELECT 1", public, "extended")[0]
    assert (simple.facts["protocol"], extended.facts["protocol"]) == ("simple", "extended")


def test_the_memo_is_bounded() -> None:
    analyzer = Analyzer(CATALOG, max_memo=10)
    state = analyzer.new_session()
    for i in range(50):
        analyzer.analyze_query(f"SELECT id AS c{i} FROM orders", state)
    assert analyzer.memo_size <= 20


def test_a_new_catalog_drops_the_memo_and_changes_the_facts() -> None:
    analyzer = Analyzer(None)
    state = analyzer.new_session()
    before = analyzer.analyze_query("SELECT * FROM customers", state)[0]
    assert before.facts["outputs"][0]["name"] == "*"
    analyzer.set_catalog(CATALOG)
    after = analyzer.analyze_query("SELECT * FROM customers", state)[0]
    assert [o["name"] for o in after.facts["outputs"]][:2] == ["id", "full_name"]


def test_ddl_that_succeeded_makes_the_catalog_due_and_the_ttl_too() -> None:
    now = [0.0]
    analyzer = Analyzer(CATALOG, catalog_ttl_s=60, clock=lambda: now[0])
    state = analyzer.new_session()
    assert not analyzer.catalog_due()
    create = analyzer.analyze_query("CREATE TABLE t (x int)", state)[0]
    assert not analyzer.catalog_due()  # analyzed but not yet run
    state.apply(create)
    assert analyzer.catalog_due()
    analyzer.set_catalog(CATALOG)
    assert not analyzer.catalog_due()
    now[0] = 61.0
    assert analyzer.catalog_due()


# ---------------------------------------------------------------------------- Bind


def test_bind_fills_the_limit_from_text_and_binary_parameters() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    sql = "SELECT id FROM orders WHERE status = $1 LIMIT $2"
    parsed = one(analyzer, state, sql, "extended")
    assert parsed.limit_param == 2
    assert parsed.facts["limit"] is None
    text = parsed.bind([b"open", b"25"])
    assert text.facts["limit"] == 25
    assert text.statement.digest != parsed.statement.digest
    assert parsed.bind([b"open", b"25"]) is text  # one digest per value
    binary = parsed.bind([b"open", struct.pack(">q", 7)], [0, 1])
    assert binary.facts["limit"] == 7
    all_binary = parsed.bind([b"\x00\x00\x00\x03", struct.pack(">i", 3)], [1])
    assert all_binary.facts["limit"] == 3
    assert parsed.bind([b"open", None]).facts["limit"] is None
    assert parsed.bind([b"open", b"many"]).facts["limit"] is None


def test_bind_leaves_a_statement_without_limit_parameter_alone() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    parsed = one(analyzer, state, "SELECT id FROM orders WHERE id = $1", "extended")
    assert parsed.limit_param is None
    assert parsed.bind([b"1"]) is parsed


# ---------------------------------------------------------------------------- state


def test_session_state_changes_only_when_the_proxy_applies_a_statement() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    set_path = one(analyzer, state, "SET search_path = analytics")
    sql = "SELECT total FROM daily_sales"
    assert one(analyzer, state, sql).facts["relations"][0]["schema"] == "public"
    state.apply(set_path)
    assert one(analyzer, state, sql).facts["relations"][0]["schema"] == "analytics"
    state.apply(one(analyzer, state, "RESET search_path"))
    assert one(analyzer, state, sql).facts["relations"][0]["schema"] == "public"


def test_set_local_lasts_until_the_transaction_ends_and_rollback_restores() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    for sql in ("BEGIN", "SET LOCAL search_path = analytics"):
        state.apply(one(analyzer, state, sql))
    assert state.search_path == ("analytics",)
    state.apply(one(analyzer, state, "COMMIT"))
    assert state.search_path == ("$user", "public")
    for sql in ("BEGIN", "SET search_path = analytics"):
        state.apply(one(analyzer, state, sql))
    assert state.search_path == ("analytics",)
    state.apply(one(analyzer, state, "ROLLBACK"))
    assert state.search_path == ("$user", "public")


def run(
    analyzer: Analyzer,
    state: SessionAnalysisState,
    *sqls: str,
    status: str = "",
    failed: bool = False,
) -> None:
    """Statements the server completed, then (``status``) its ReadyForQuery."""
    for sql in sqls:
        state.apply(one(analyzer, state, sql))
    if status:
        state.ready(status, failed=failed)


def test_rollback_to_savepoint_undoes_what_followed_the_savepoint() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    run(analyzer, state, "BEGIN", "SET search_path = analytics", "SAVEPOINT a", status="T")
    run(analyzer, state, "SET search_path = pg_catalog", "SAVEPOINT b", "SET search_path = x")
    run(analyzer, state, "ROLLBACK TO SAVEPOINT b", status="T")
    assert state.search_path == ("pg_catalog",)
    run(analyzer, state, "ROLLBACK TO SAVEPOINT a", status="T")
    assert state.search_path == ("analytics",)
    run(analyzer, state, "RELEASE a", "COMMIT", status="I")
    assert state.search_path == ("analytics",)


def test_a_failed_implicit_transaction_undoes_its_set() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    # SET search_path = pg_catalog; SELECT 1/0 -- the SET completed, the string failed
    run(analyzer, state, "SET search_path = pg_catalog", status="I", failed=True)
    assert state.search_path == ("$user", "public")
    # ... but what a COMMIT in the string committed stays.
    run(analyzer, state, "BEGIN", "SET search_path = analytics", "COMMIT", status="I", failed=True)
    assert state.search_path == ("analytics",)
    run(analyzer, state, "SET search_path = pg_catalog", status="I")
    assert state.search_path == ("pg_catalog",)


def test_commit_of_a_failed_block_rolls_it_back() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    run(analyzer, state, "BEGIN", "SET search_path = pg_catalog", status="E", failed=True)
    state.apply(one(analyzer, state, "COMMIT"), rolled_back=True)  # the server said ROLLBACK
    state.ready("I", failed=False)
    assert state.search_path == ("$user", "public")


def test_cursors_without_hold_end_with_their_transaction() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    run(analyzer, state, "BEGIN", "DECLARE c CURSOR FOR SELECT id FROM orders")
    run(analyzer, state, "DECLARE h CURSOR WITH HOLD FOR SELECT id FROM orders")
    run(analyzer, state, "COMMIT", status="I")
    assert set(state.cursors) == {"h"}
    assert one(analyzer, state, "FETCH ALL c").facts["unresolved"] is True


def test_a_set_config_the_server_may_not_call_leaves_the_search_path_unknown() -> None:
    analyzer = Analyzer(CATALOG)
    for sql in (
        "SELECT set_config('search_path', 'analytics', false) WHERE false",
        "SELECT CASE WHEN false THEN set_config('search_path', 'analytics', false) END",
        "SELECT length(set_config('search_path', 'analytics', false))",
        "SELECT set_config('search_path', 'analytics', false) FROM orders",
    ):
        state = analyzer.new_session()
        run(analyzer, state, sql, status="I")
        facts = one(analyzer, state, "SELECT total FROM daily_sales").facts
        assert facts["unresolved"] is True, sql
    state = analyzer.new_session()  # called once, as pg_dump does: followed
    run(analyzer, state, "SELECT set_config('search_path', 'analytics', false)", status="I")
    assert state.search_path == ("analytics",)


def test_parameter_status_sets_the_search_path() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    state.parameter_status("search_path", '"$user", analytics')
    assert state.search_path == ("$user", "analytics")
    facts = one(analyzer, state, "SELECT total FROM daily_sales").facts
    assert facts["relations"][0]["schema"] == "analytics"


def test_a_search_path_from_an_unseen_value_makes_unqualified_names_unresolved() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    hidden = one(
        analyzer, state, "SELECT set_config('search_path', current_setting('my.path'), false)"
    )
    assert hidden.facts["unresolved"] is True
    state.apply(hidden)
    assert one(analyzer, state, "SELECT id FROM customers").facts["unresolved"] is True
    assert one(analyzer, state, "SELECT id FROM public.customers").facts["unresolved"] is False
    state.parameter_status("search_path", "public")
    assert one(analyzer, state, "SELECT id FROM customers").facts["unresolved"] is False


def test_prepare_execute_and_deallocate() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    prepare = one(analyzer, state, "PREPARE q AS SELECT ssn FROM customers LIMIT $1")
    assert one(analyzer, state, "EXECUTE q(5)").facts["unresolved"] is True
    state.apply(prepare)
    executed = one(analyzer, state, "EXECUTE q(5)")
    assert executed.facts["limit"] == 5
    assert executed.facts["outputs"] == [
        {"name": "ssn", "sources": ["public.customers.ssn"], "direct": True}
    ]
    state.apply(one(analyzer, state, "DEALLOCATE q"))
    assert one(analyzer, state, "EXECUTE q(5)").facts["unresolved"] is True


def test_a_named_extended_protocol_statement_can_be_executed_from_sql() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    parsed = one(analyzer, state, "SELECT card_number FROM payments LIMIT $1", "extended")
    state.register_prepared("s1", parsed)
    executed = one(analyzer, state, "EXECUTE s1(3)")
    assert executed.facts["limit"] == 3
    assert executed.facts["nested"][0]["protocol"] == "extended"
    state.forget_prepared("s1")
    assert one(analyzer, state, "EXECUTE s1(3)").facts["unresolved"] is True


STAGED = catalog_of(
    {
        "public.customers": ["id", "email"],
        "staging.customers": ["id", "email"],
    }
)


def executed(state: object, analyzer: Analyzer, *statements: str) -> dict[str, object]:
    """Apply ``statements`` as completed; the facts of the last (not applied)."""
    *done, last = statements
    for sql in done:
        state.apply(one(analyzer, state, sql))  # type: ignore[attr-defined]
    return one(analyzer, state, last).facts  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("path", ["staging", "staging, public", "pg_temp, public"])
def test_an_execute_under_another_search_path_than_its_prepare_is_unresolved(
    path: str,
) -> None:
    """The server analyzes a prepared statement again under the new search path: its
    names may stand for other relations than the ones PREPARE resolved."""
    analyzer = Analyzer(STAGED)
    state = analyzer.new_session()
    prepare = "PREPARE p AS SELECT email FROM customers WHERE id = 42"
    facts = executed(state, analyzer, prepare, f"SET search_path = {path}", "EXECUTE p")
    assert facts["unresolved"] is True
    assert facts["outputs"][0]["sources"] == ["public.customers.email"]  # type: ignore[index]


def test_an_execute_under_its_prepares_search_path_is_resolved() -> None:
    analyzer = Analyzer(STAGED)
    state = analyzer.new_session()
    prepare = "PREPARE p AS SELECT email FROM customers WHERE id = 42"
    facts = executed(
        state, analyzer, prepare, "SET search_path = staging", "RESET search_path", "EXECUTE p"
    )
    assert facts["unresolved"] is False
    staged = executed(
        state, analyzer, "SET search_path = staging", prepare.replace("p", "q"), "EXECUTE q"
    )
    assert staged["unresolved"] is False
    assert staged["outputs"][0]["sources"] == ["staging.customers.email"]  # type: ignore[index]


def test_an_execute_after_its_relation_was_created_again_is_unresolved() -> None:
    """PostgreSQL plans the statement again over the new view; the facts kept from
    PREPARE name the old one's columns."""
    analyzer = Analyzer(STAGED)
    state = analyzer.new_session()
    facts = executed(
        state,
        analyzer,
        "CREATE TEMP VIEW v AS SELECT id AS x FROM customers",
        "PREPARE p AS SELECT x FROM v",
        "DROP VIEW v",
        "CREATE TEMP VIEW v AS SELECT email AS x FROM customers",
        "EXECUTE p",
    )
    assert facts["unresolved"] is True


def test_a_protocol_statement_executed_by_sql_under_another_search_path_is_unresolved() -> None:
    analyzer = Analyzer(STAGED)
    state = analyzer.new_session()
    parsed = one(analyzer, state, "SELECT email FROM customers WHERE id = $1", "extended")
    state.register_prepared("s1", parsed)  # type: ignore[arg-type]
    assert one(analyzer, state, "EXECUTE s1(42)").facts["unresolved"] is False  # type: ignore[attr-defined]
    facts = executed(state, analyzer, "SET search_path = staging", "EXECUTE s1(42)")
    assert facts["unresolved"] is True


def test_discard_all_forgets_prepared_statements_cursors_and_the_search_path() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    for sql in (
        "SET search_path = analytics",
        "PREPARE q AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    ):
        state.apply(one(analyzer, state, sql))
    assert (state.search_path, set(state.prepared), set(state.cursors)) == (
        ("analytics",),
        {"q"},
        {"c"},
    )
    state.apply(one(analyzer, state, "DISCARD ALL"))
    assert (state.search_path, state.prepared, state.cursors) == (("$user", "public"), {}, {})


def test_temporary_relations_shadow_and_go_away_with_rollback_or_discard() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    sql = "SELECT email FROM customers"
    shadow = "CREATE TEMP VIEW customers AS SELECT ssn AS email FROM public.customers"
    for statement in ("BEGIN", shadow):
        state.apply(one(analyzer, state, statement))
    assert one(analyzer, state, sql).facts["outputs"][0]["sources"] == ["public.customers.ssn"]
    state.apply(one(analyzer, state, "ROLLBACK"))
    assert one(analyzer, state, sql).facts["outputs"][0]["sources"] == ["public.customers.email"]
    state.apply(one(analyzer, state, shadow))
    state.apply(one(analyzer, state, "DISCARD TEMP"))
    assert one(analyzer, state, sql).facts["outputs"][0]["sources"] == ["public.customers.email"]
    state.apply(one(analyzer, state, shadow))
    state.apply(one(analyzer, state, "DROP VIEW customers"))
    assert one(analyzer, state, sql).facts["outputs"][0]["sources"] == ["public.customers.email"]


def test_a_session_creating_too_many_relations_loses_trust_in_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgwarden.proxy.analysis import analyzer as analyzer_module

    monkeypatch.setattr(analyzer_module, "MAX_CREATED_RELATIONS", 3)
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    for i in range(4):
        state.apply(one(analyzer, state, f"CREATE TEMP TABLE t{i} (x int)"))
    assert state.created == {}
    assert one(analyzer, state, "SELECT id FROM customers").facts["unresolved"] is True


def test_statements_that_do_not_run_create_nothing() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    for statement in (
        "EXPLAIN CREATE TEMP TABLE customers AS SELECT id FROM public.customers",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$"
        " BEGIN CREATE TEMP TABLE customers (id int); END $$",
    ):
        analyzed = one(analyzer, state, statement)
        assert analyzed.effects == ()
        state.apply(analyzed)
    facts = one(analyzer, state, "SELECT ssn FROM customers").facts
    assert facts["outputs"][0]["sources"] == ["public.customers.ssn"]
    ran = one(analyzer, state, "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT ssn FROM customers")
    state.apply(ran)
    assert one(analyzer, state, "TABLE t").facts["outputs"][0]["sources"] == [
        "public.customers.ssn"
    ]


def test_a_new_catalog_replaces_the_sessions_permanent_creations() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    state.apply(one(analyzer, state, "CREATE VIEW v AS SELECT ssn FROM customers"))
    state.apply(one(analyzer, state, "CREATE TEMP VIEW w AS SELECT email FROM customers"))
    view = {"schema": "public", "name": "v", "kind": "view", "access": "read"}
    assert view in one(analyzer, state, "TABLE v").facts["relations"]
    analyzer.set_catalog(catalog_of({"public.v": ["ssn"]}))
    assert one(analyzer, state, "TABLE v").facts["relations"] == [
        {"schema": "public", "name": "v", "kind": "table", "access": "read"}
    ]
    assert one(analyzer, state, "TABLE w").facts["relations"][0]["schema"] == "pg_temp"


def test_cursors_are_remembered_until_closed() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    state.apply(one(analyzer, state, "DECLARE c CURSOR FOR SELECT ssn FROM customers"))
    fetched = one(analyzer, state, "FETCH FORWARD 20 FROM c")
    assert (fetched.facts["limit"], fetched.facts["outputs"][0]["name"]) == (20, "ssn")
    state.apply(one(analyzer, state, "CLOSE c"))
    assert one(analyzer, state, "FETCH 1 FROM c").facts["unresolved"] is True


@pytest.mark.parametrize(
    ("fetch", "rows"),
    [
        ("FETCH FORWARD 2000 FROM c", 50),
        ("FETCH ALL FROM c", 50),
        ("FETCH 10 FROM c", 10),
        ("FETCH BACKWARD ALL FROM c", 50),
        ("FETCH ABSOLUTE 7 FROM c", 1),
    ],
)
def test_a_fetch_returns_no_more_rows_than_its_cursor_query(fetch: str, rows: int) -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    declared = one(
        analyzer, state, "DECLARE c SCROLL CURSOR FOR SELECT ssn FROM customers LIMIT 50"
    )
    state.apply(declared)
    fetched = one(analyzer, state, fetch).facts
    # the query as this FETCH runs it, in nested, returns as many
    assert (fetched["limit"], fetched["nested"][0]["limit"]) == (rows, rows)


def test_an_execute_returns_the_rows_of_its_limit_argument() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    sql = "PREPARE q(int, int) AS SELECT ssn FROM customers WHERE id < $1 LIMIT $2"
    state.apply(one(analyzer, state, sql))
    executed = one(analyzer, state, "EXECUTE q(100, 10)").facts
    assert (executed["limit"], executed["nested"][0]["limit"]) == (10, 10)
    assert one(analyzer, state, "PREPARE q2 AS SELECT 1").facts["nested"][0]["limit"] is None


def test_a_bound_limit_of_a_declared_query_bounds_its_fetches() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    sql = "DECLARE c CURSOR FOR SELECT ssn FROM customers WHERE id < $1 LIMIT $2"
    declared = one(analyzer, state, sql, "extended")
    bound = declared.bind([b"100", b"50"])  # type: ignore[attr-defined]
    assert bound.facts == declared.facts  # type: ignore[attr-defined]
    state.apply(bound)  # type: ignore[attr-defined]
    assert one(analyzer, state, "FETCH ALL FROM c").facts["limit"] == 50


def test_a_fetch_all_from_a_cursor_without_limit_is_unbounded() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    state.apply(one(analyzer, state, "DECLARE c CURSOR FOR SELECT ssn FROM customers WHERE id > 3"))
    assert one(analyzer, state, "FETCH ALL FROM c").facts["limit"] is None
    assert one(analyzer, state, "MOVE 5 IN c").facts["limit"] is None


# ---------------------------------------------------------------------------- query strings


def test_a_multi_statement_query_is_split_and_later_statements_see_earlier_ones() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    results = analyzer.analyze_query(
        "BEGIN; SET search_path = analytics; SELECT total FROM daily_sales LIMIT 3; COMMIT",
        state,
    )
    assert [r.command for r in results] == ["BEGIN", "SET", "SELECT", "COMMIT"]
    assert [r.sql for r in results][2] == "SELECT total FROM daily_sales LIMIT 3"
    assert results[2].facts["sql_normalized"] == "SELECT total FROM daily_sales LIMIT $1"
    assert results[2].facts["relations"][0]["schema"] == "analytics"
    assert state.search_path == ("$user", "public")  # nothing applied yet


def test_statements_in_a_do_block_see_the_effects_of_earlier_ones() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    [block, after] = analyzer.analyze_query(
        "DO $$ BEGIN SET search_path = analytics; PERFORM total FROM daily_sales;"
        " CREATE TEMP VIEW x AS SELECT card_number FROM public.payments; END $$;"
        " SELECT * FROM x",
        state,
    )
    assert [n["relations"][0]["schema"] for n in block.facts["nested"][1:2]] == ["analytics"]
    assert after.facts["outputs"][0]["sources"] == ["public.payments.card_number"]
    state.apply(block)
    assert state.search_path == ("analytics",)
    [_, select] = analyzer.analyze_query("RESET search_path; TABLE daily_sales", state)
    assert select.facts["relations"][0]["schema"] == "public"


def test_a_parse_error_carries_postgresql_message() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    typo = one(analyzer, state, "SELEC 1")
    assert typo.parse_error is not None
    assert typo.parse_error.message == 'syntax error at or near "SELEC"'
    assert typo.parse_error.position == 1
    assert typo.facts["command"] == "unknown"
    assert typo.facts["unresolved"] is True
    assert problems(typo.facts) == []
    broken = one(analyzer, state, "SELECT * FROM WHERE x = 'secret'")
    assert broken.facts["command"] == "SELECT"
    assert "secret" not in json.dumps(broken.facts)
    unterminated = one(analyzer, state, "SELECT 'abc")
    assert unterminated.parse_error is not None
    assert unterminated.parse_error.message.startswith("unterminated quoted string")
    drop = one(analyzer, state, "DROP TABLE")
    assert drop.facts["command"] == "DROP TABLE"


def test_an_internal_failure_is_a_fail_closed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgwarden.proxy.analysis import analyzer as analyzer_module

    def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("stmts")

    monkeypatch.setattr(analyzer_module, "analyze_sql", broken)
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    [result] = analyzer.analyze_query("SELECT ssn FROM customers WHERE id = 1", state)
    assert result.analysis_error == "KeyError: 'stmts'"
    assert result.parse_error is None
    assert result.facts["command"] == "SELECT"
    assert result.facts["unresolved"] is True
    assert result.facts["read_only"] is False
    assert result.facts["sql_normalized"] == "SELECT ssn FROM customers WHERE id = $1"
    assert problems(result.facts) == []


def test_a_statement_in_a_multi_statement_query_that_fails_fails_the_query() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    results = analyzer.analyze_query("SELECT 1; SELEC 2", state)
    assert len(results) == 1
    assert results[0].parse_error is not None


def test_the_statement_is_built_from_the_facts() -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    analyzed = one(analyzer, state, "SELECT id FROM orders")
    assert analyzed.statement.facts is analyzed.facts


def test_without_a_catalog_star_stays_unexpanded_and_kind_unknown() -> None:
    analyzer = Analyzer(None)
    state = analyzer.new_session()
    facts = one(analyzer, state, "SELECT * FROM customers c JOIN orders o ON o.id = c.id").facts
    assert facts["relations"] == [
        {"schema": "public", "name": "customers", "kind": "unknown", "access": "read"},
        {"schema": "public", "name": "orders", "kind": "unknown", "access": "read"},
    ]
    assert [o["sources"] for o in facts["outputs"]] == [
        ["public.customers.*"],
        ["public.orders.*"],
    ]
    assert facts["star"] == ["public.customers", "public.orders"]


def test_functions_are_qualified_through_the_catalog() -> None:
    catalog = catalog_of({"public.t": ["x"]}, functions=["pg_catalog.lower", "public.leak"])
    analyzer = Analyzer(catalog)
    state = analyzer.new_session()
    facts = one(analyzer, state, "SELECT lower(x), leak(x), audit.f() FROM t").facts
    assert facts["functions"] == ["audit.f", "pg_catalog.lower", "public.leak"]


# ---------------------------------------------------------------------------- literals

_SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12).map(
    lambda s: "zq" + s
)
_TEMPLATES = (
    "SELECT id FROM customers WHERE email = '{v}'",
    "SELECT id FROM customers WHERE email = E'{v}\\n'",
    "SELECT $${v}$$ AS x",
    "SET application_name = '{v}'",
    "SET search_path = {v}",
    "SET ROLE {v}",
    "SET SESSION AUTHORIZATION '{v}'",
    "COPY orders TO PROGRAM 'curl {v}'",
    "COPY orders FROM '/tmp/{v}'",
    "CREATE ROLE r PASSWORD '{v}'",
    "ALTER ROLE r SET work_mem = '{v}'",
    "PREPARE p AS SELECT '{v}' FROM orders LIMIT 3",
    "DO $$ BEGIN PERFORM '{v}'; EXECUTE 'SELECT ''{v}'''; END $$",
    "SELECT query_to_xml('SELECT ''{v}''', true, false, '')",
    "CREATE TABLE t (x text DEFAULT '{v}')",
    "SELECT set_config('my.var', '{v}', false)",
    "INSERT INTO orders (status) VALUES ('{v}') RETURNING status",
    "SELECT id FROM orders WHERE status = '{v}' -- {v}",
)


_WORDS = st.sampled_from(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "customers",
        "ssn",
        "*",
        ",",
        "(",
        ")",
        ";",
        "'x'",
        "1",
        "$1",
        "DO",
        "$$",
        "BEGIN",
        "END",
        "EXECUTE",
        "WITH",
        "AS",
        "COPY",
        "TO",
        "STDOUT",
        "INSERT",
        "INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "=",
        "c.*",
        "row_to_json(c)",
        "c",
        "JOIN",
        "ON",
        "USING",
        "LATERAL",
        "UNION",
        "PREPARE",
        "p",
        "FETCH",
        "DECLARE",
        "CURSOR",
        "FOR",
        "search_path",
        "LIMIT",
        "::text",
        "/*",
        "*/",
        "--",
        "\n",
        "E'\\'",
    ]
)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(_WORDS, max_size=25), protocol=st.sampled_from(["simple", "extended"]))
def test_any_text_gives_complete_documents_and_never_raises(
    words: list[str], protocol: str
) -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    sql = " ".join(words).replace("\\n", "\n")
    for analyzed in analyzer.analyze_query(sql, state, protocol):
        assert problems(analyzed.facts) == []
        state.apply(analyzed)


@settings(max_examples=60, deadline=None)
@given(secret=_SECRET, template=st.sampled_from(_TEMPLATES))
def test_no_literal_value_reaches_the_document(secret: str, template: str) -> None:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session()
    for analyzed in analyzer.analyze_query(template.format(v=secret), state):
        assert analyzed.parse_error is None
        assert problems(analyzed.facts) == []
        assert secret not in json.dumps(analyzed.facts)
