"""What the relay's analysis decides for a statement prepared in a round trip of its own
(a Parse that no Execute of its batch follows), with the real analyzer."""

from __future__ import annotations

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
