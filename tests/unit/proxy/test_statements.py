"""What the relay's analysis decides for a statement prepared in a round trip of its own
(a Parse that no Execute of its batch follows), and which statements may change what names
refer to, with the real analyzer."""

from __future__ import annotations

import pytest

from pgwarden.proxy.analysis import AnalyzedStatement, Analyzer
from pgwarden.proxy.relay import Refusal
from pgwarden.proxy.statements import SessionStatements


def statements() -> SessionStatements:
    analyzer = Analyzer()
    return SessionStatements(analyzer, analyzer.new_session(user="reporting"))


def test_a_preparation_is_decided_as_its_execution_would_be() -> None:
    session = statements()
    sql = "SELECT email FROM customers WHERE id = $1"
    prepared = session.preparation(sql)
    executed = session.execution(sql, [b"42"], [0])
    assert isinstance(prepared, AnalyzedStatement)
    assert isinstance(executed, AnalyzedStatement)
    assert prepared.statement == executed.statement


def test_an_unbound_limit_counts_as_limit_0_and_the_execution_has_its_own() -> None:
    session = statements()
    sql = "SELECT email FROM customers WHERE id > $1 LIMIT $2"
    prepared = session.preparation(sql)
    executed = session.execution(sql, [b"1", b"5000"], [0, 0])
    assert isinstance(prepared, AnalyzedStatement)
    assert isinstance(executed, AnalyzedStatement)
    assert (prepared.facts["limit"], executed.facts["limit"]) == (0, 5000)


def test_a_preparation_the_analyzer_cannot_parse_is_refused_as_a_syntax_error() -> None:
    refusal = statements().preparation("SELEC email FROM customers")
    assert isinstance(refusal, Refusal)
    assert refusal.sqlstate == "42601"
    assert statements().preparation("") is None


def run(session: SessionStatements, sql: str) -> AnalyzedStatement:
    """Analyze ``sql`` (one statement) and apply it as the server completed it."""
    [analyzed] = session.analyzer.analyze_query(sql, session.state)
    session.completed(analyzed)
    return analyzed


@pytest.mark.parametrize(
    "sql",
    [
        "SET search_path = staging",
        "RESET search_path",
        "SELECT set_config('search_path', 'staging', false)",
        "DISCARD ALL",
        "CREATE TEMP TABLE t (a int)",
    ],
)
def test_changes_of_search_path_and_temporary_relations_change_resolution(sql: str) -> None:
    session = statements()
    [analyzed] = session.analyzer.analyze_query(sql, session.state)
    assert session.changes_resolution(analyzed)


def test_a_transaction_end_changes_resolution_only_when_it_undoes_a_change() -> None:
    session = statements()
    for sql in ("BEGIN", "SELECT 1"):
        run(session, sql)
    [commit] = session.analyzer.analyze_query("COMMIT", session.state)
    [rollback] = session.analyzer.analyze_query("ROLLBACK", session.state)
    assert not session.changes_resolution(commit)
    assert not session.changes_resolution(rollback)
    run(session, "SET LOCAL search_path = staging")  # COMMIT ends it too
    assert session.changes_resolution(commit)
    run(session, "COMMIT")
    for sql in ("BEGIN", "SAVEPOINT a", "SET search_path = staging"):
        run(session, sql)
    [back] = session.analyzer.analyze_query("ROLLBACK TO SAVEPOINT a", session.state)
    assert session.changes_resolution(back)
    assert session.changes_resolution(rollback)
    assert not session.changes_resolution(run(session, "SELECT 1"))
