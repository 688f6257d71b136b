"""The relay's view of statement analysis (``pgwarden.proxy.analysis``) for one session."""

from __future__ import annotations

from collections.abc import Sequence

from pgwarden.proxy.analysis import AnalyzedStatement, Analyzer, SessionAnalysisState
from pgwarden.proxy.analysis.facts import RESOLUTION_EFFECTS
from pgwarden.proxy.decision import DecisionCode
from pgwarden.proxy.relay import Analysis, Analyzed, Refusal

SYNTAX_ERROR = "42601"
REFUSED = "42501"
# Effects that end a transaction (or roll back to a savepoint): they change what names
# resolve to when the transaction had changed it.
_ENDS = frozenset({"commit", "rollback", "rollback_to"})


def _refusal_or(analyzed: AnalyzedStatement) -> Analysis:
    if analyzed.parse_error is not None:
        return Refusal(SYNTAX_ERROR, analyzed.parse_error.message)
    if analyzed.analysis_error is not None:
        # A statement the analyzer could not read is never passed on (fail closed).
        return Refusal(
            REFUSED,
            f"pgwarden: the statement could not be analyzed ({DecisionCode.ANALYSIS_FAILED})",
        )
    return analyzed


class SessionStatements:
    """Analysis for one session: the database's memoizing :class:`Analyzer` and the
    session's own state (search_path, prepared statements, cursors, temp relations)."""

    def __init__(self, analyzer: Analyzer, state: SessionAnalysisState) -> None:
        self.analyzer = analyzer
        self.state = state
        self._parsed: dict[str, AnalyzedStatement] = {}

    def simple_query(self, sql: str) -> list[Analysis]:
        return [_refusal_or(a) for a in self.analyzer.analyze_query(sql, self.state, "simple")]

    def _one(self, sql: str) -> AnalyzedStatement | None:
        """The one statement of a Parse; None for an empty one or several (the server
        refuses those: "cannot insert multiple commands into a prepared statement")."""
        analyzed = self.analyzer.analyze_query(sql, self.state, "extended")
        return analyzed[0] if len(analyzed) == 1 else None

    def parsed(self, name: str, sql: str) -> None:
        analyzed = self._one(sql)
        if name and analyzed is not None:
            self.state.register_prepared(name, analyzed)

    def closed(self, name: str) -> None:
        if name:
            self.state.forget_prepared(name)

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis | None:
        analyzed = self._one(sql)
        if analyzed is None:
            if not self.analyzer.analyze_query(sql, self.state, "extended"):
                return None  # an empty statement: nothing runs (EmptyQueryResponse)
            return Refusal(
                SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement"
            )
        if analyzed.parse_error is None and analyzed.analysis_error is None:
            analyzed = analyzed.bind(params, param_formats)
        return _refusal_or(analyzed)

    def preparation(self, sql: str) -> Analysis | None:
        # Bound parameters change nothing a policy sees but a LIMIT $n: one not bound yet
        # counts as LIMIT 0, the fewest rows a Bind can ask for, so that a policy that bounds
        # LIMIT refuses no preparation an execution of it could pass. The execution is
        # decided again with its parameters.
        analysis = self.execution(sql, (), ())
        if isinstance(analysis, AnalyzedStatement) and analysis.limit_param is not None:
            return analysis.with_limit(0)
        return analysis

    def unknown_portal(self, portal: str) -> Analysis | None:
        # A portal the client did not Bind is a SQL-level cursor: decide it as a FETCH.
        quoted = portal.replace('"', '""')
        return self.execution(f'FETCH ALL FROM "{quoted}"', (), ())

    def unknown_statement(self, name: str) -> Analysis | None:
        # A statement the client did not Parse is a SQL-level PREPARE: decide an EXECUTE.
        quoted = name.replace('"', '""')
        return self.execution(f'EXECUTE "{quoted}"', (), ())

    def parameter_status(self, name: str, value: str) -> None:
        self.state.parameter_status(name, value)

    def changes_resolution(self, analysis: Analyzed) -> bool:
        if not isinstance(analysis, AnalyzedStatement) or not analysis.effects:
            return False  # the common case: nothing to look at
        for effect in analysis.effects:
            if effect.kind in RESOLUTION_EFFECTS:
                return True
            if effect.kind in _ENDS and self.state.ending_changes_resolution():
                return True
        return False

    def completed(self, analysis: Analyzed, *, rolled_back: bool = False) -> None:
        if isinstance(analysis, AnalyzedStatement):
            self.state.apply(analysis, rolled_back=rolled_back)

    def ready(self, status: str, *, failed: bool) -> None:
        self.state.ready(status, failed=failed)

    def portal_bound(
        self,
        portal: str,
        sql: str | None,
        params: Sequence[bytes | None],
        param_formats: Sequence[int],
    ) -> None:
        analysis = None if sql is None else self.execution(sql, params, param_formats)
        query = analysis.prepared() if isinstance(analysis, AnalyzedStatement) else None
        self.state.bind_portal(portal, query)
