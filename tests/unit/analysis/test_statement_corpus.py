"""The statement corpus (``analysis_corpus.py``): every case's facts, exactly."""

from __future__ import annotations

from typing import Any

import pytest
from analysis_corpus import CASES, CATALOG, Case, expected_facts

from pgwarden.proxy.analysis import Analyzer
from pgwarden.proxy.analysis.document import problems

_COMPARED = (
    "command",
    "protocol",
    "read_only",
    "relations",
    "columns",
    "outputs",
    "star",
    "functions",
    "copy",
    "limit",
    "has_where",
    "set",
    "nested",
    "unresolved",
)


def analyze_case(case: Case) -> Any:
    analyzer = Analyzer(CATALOG)
    state = analyzer.new_session(search_path=case.search_path)
    for setup in case.setup:
        for analyzed in analyzer.analyze_query(setup, state):
            assert analyzed.parse_error is None
            state.apply(analyzed)
    results = analyzer.analyze_query(case.sql, state, case.protocol)
    return results[case.extra.get("statement", 0)]


def _actual(facts: Any) -> dict[str, Any]:
    actual = {key: facts[key] for key in _COMPARED}
    actual["nested"] = [n["command"] for n in facts["nested"]]
    return actual


@pytest.mark.parametrize("case", CASES, ids=[c.sql[:60] for c in CASES])
def test_case_facts_are_exact(case: Case) -> None:
    analyzed = analyze_case(case)
    assert analyzed.parse_error is None
    assert problems(analyzed.facts) == []
    assert _actual(analyzed.facts) == expected_facts(case)
    assert analyzed.limit_param == case.limit_param
    if case.norm is not None:
        assert analyzed.facts["sql_normalized"] == case.norm
    assert analyzed.facts["fingerprint"]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert sum(c.attack for c in CASES) >= 40
    assert len({(c.sql, c.setup, c.protocol, c.search_path) for c in CASES}) == len(CASES)
