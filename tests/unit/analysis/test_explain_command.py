"""``pgwarden explain``: the input document as JSON."""

from __future__ import annotations

import json

import pytest

from pgwarden import cli
from pgwarden.proxy.analysis import explain


def test_explain_prints_the_input_document(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "explain",
            "--identity",
            "agent:reporting",
            "--groups",
            "analytics,etl",
            "--database",
            "shop",
            "SELECT email FROM customers WHERE id = 7 LIMIT 10",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["identity"]["subject"] == "agent:reporting"
    assert document["identity"]["groups"] == ["analytics", "etl"]
    assert document["session"]["database"] == "shop"
    statement = document["statement"]
    assert statement["sql_normalized"] == "SELECT email FROM customers WHERE id = $1 LIMIT $2"
    assert statement["limit"] == 10
    assert statement["outputs"] == [
        {"name": "email", "sources": ["public.customers.email"], "direct": True}
    ]


def test_explain_prints_one_document_per_statement(capsys: pytest.CaptureFixture[str]) -> None:
    code = explain.main(
        ["--identity", "human:dba", "--search-path", "analytics", "BEGIN; TABLE daily_sales"]
    )
    assert code == 0
    documents = json.loads(capsys.readouterr().out)
    assert [d["statement"]["command"] for d in documents] == ["BEGIN", "SELECT"]
    assert documents[1]["session"]["in_transaction"] is True
    assert documents[1]["statement"]["relations"][0]["schema"] == "analytics"


def test_explain_reports_a_parse_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = explain.main(["--identity", "agent:etl", "SELEC 1"])
    assert code == 1
    document = json.loads(capsys.readouterr().out)
    assert document["parse_error"] == {"message": 'syntax error at or near "SELEC"', "position": 1}
