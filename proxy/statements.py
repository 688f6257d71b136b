"""Statement facts for the relay, from pglast: one :class:`Statement` per statement."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from pglast import parser

from pgwarden.proxy.decision import Statement
from pgwarden.proxy.relay import Analysis, Refusal

SYNTAX_ERROR = "42601"


@lru_cache(maxsize=4096)
def _facts(sql: str, protocol: str) -> Statement | Refusal:
    try:
        normalized = parser.normalize(sql)
        fingerprint = parser.fingerprint(sql)
    except parser.ParseError as exc:
        return Refusal(SYNTAX_ERROR, f"pgwarden could not parse the statement: {exc}")
    words = normalized.split(None, 2)
    command = words[0].upper() if words else ""
    return Statement.of(
        {
            "fingerprint": fingerprint,
            "sql_normalized": normalized,
            "command": command,
            "protocol": protocol,
        }
    )


class BasicAnalyzer:
    """Fingerprint, normalized SQL and command word; memoized on the statement text."""

    def simple_query(self, sql: str) -> list[Analysis]:
        try:
            parts = parser.split(sql)
        except parser.ParseError as exc:
            return [Refusal(SYNTAX_ERROR, f"pgwarden could not parse the statement: {exc}")]
        return [_facts(part, "simple") for part in parts]

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis:
        return _facts(sql, "extended")

    def unknown_portal(self, portal: str) -> Analysis:
        return _facts(f'FETCH ALL FROM "{portal}"', "extended")

    def unknown_statement(self, name: str) -> Analysis:
        return _facts(f'EXECUTE "{name}"', "extended")
