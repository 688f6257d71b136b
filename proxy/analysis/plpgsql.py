"""SQL hidden in PL/pgSQL: the statements and expressions of a ``DO`` block or a function
body, from pglast's PL/pgSQL parser (``parse_plpgsql_json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pglast import parser as pg_parser

# PLpgSQL_expr.parseMode (RawParseMode): 0 is a whole statement, 2 an expression, 3-5 an
# assignment ``target := expression``.
_STATEMENT_MODE = 0
_EXPRESSION_MODE = 2

# Statement types whose "query"/"dynquery" is a string evaluated as SQL at run time.
_DYNAMIC_KEYS = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_open": "dynquery",
    "PLpgSQL_stmt_return_query": "dynquery",
}


_BODIES = frozenset({"body", "then_body", "else_body", "elsif_list", "exceptions", "action"})


@dataclass(frozen=True, slots=True)
class EmbeddedSql:
    """One piece of SQL in a PL/pgSQL body.

    ``kind`` is ``"statement"`` (run as written), ``"expression"`` (evaluated as
    ``SELECT expression``) or ``"dynamic"`` (``text`` is the expression whose *value* is
    the SQL run by ``EXECUTE``)."""

    kind: str
    text: str


def embedded_sql(source: str) -> list[EmbeddedSql]:
    """The SQL inside a ``DO`` statement or ``CREATE FUNCTION … LANGUAGE plpgsql``;
    raises ``pglast.parser.ParseError`` when the body does not parse."""
    tree = json.loads(pg_parser.parse_plpgsql_json(source))
    found: list[EmbeddedSql] = []
    for function in tree:
        found.extend(_walk(function, None))
    return found


def _walk(node: Any, owner: str | None) -> Iterator[EmbeddedSql]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, owner)
        return
    if not isinstance(node, dict):
        return
    # statements' own SQL before the statements nested in their bodies: source order
    for key, value in sorted(node.items(), key=lambda kv: kv[0] in _BODIES):
        if key == "PLpgSQL_expr" and isinstance(value, dict):
            yield _expression(value, dynamic=False)
        elif key in _DYNAMIC_KEYS and isinstance(value, dict):
            dynamic_key = _DYNAMIC_KEYS[key]
            for inner_key, inner in value.items():
                if inner_key == dynamic_key and isinstance(inner, dict) and "PLpgSQL_expr" in inner:
                    yield _expression(inner["PLpgSQL_expr"], dynamic=True)
                else:
                    yield from _walk(inner, key)
        elif key == "datums":
            # variable declarations: their default expressions are expressions too
            yield from _walk(value, owner)
        else:
            yield from _walk(value, key if key.startswith("PLpgSQL_") else owner)


def _expression(expr: dict[str, Any], *, dynamic: bool) -> EmbeddedSql:
    query = str(expr.get("query", ""))
    mode = int(expr.get("parseMode", _EXPRESSION_MODE))
    if dynamic:
        return EmbeddedSql("dynamic", query)
    if mode == _STATEMENT_MODE:
        return EmbeddedSql("statement", query)
    if mode > _EXPRESSION_MODE:
        query = _assignment_value(query)
    return EmbeddedSql("expression", query)


def _assignment_value(text: str) -> str:
    """The expression of ``target := expression`` (or ``target = expression``)."""
    for token in pg_parser.scan(text):
        if token.name in ("COLON_EQUALS", "ASCII_61"):
            return text[token.end + 1 :]
    return text
