"""The analyzer the proxy calls: memoized statement analysis and per-session state.

Memo layers, cheapest first:

1. the exact query text (with protocol, effective search path and catalog version):
   a repeated statement costs one dictionary lookup and returns the very same
   :class:`AnalyzedStatement` objects, digests included;
2. the query's *shape*: the text with every literal token blanked, from one scanner
   pass. Statements that differ only in literal values share one analysis; the LIMIT
   constant, the one literal the facts carry, is read back from the new text's tokens.
   Statements whose facts depend on other literals (``DO`` bodies, ``set_config``,
   ``SET search_path``, SQL text passed to functions, ``ORDER BY 2``) skip this layer.

The fingerprint is not a memo key: pglast's fingerprint ignores aliases and the order of
the select list (``SELECT a, b`` and ``SELECT b AS x, a`` share one), so statements with
different outputs would share facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pglast import parser as pg_parser

from pgwarden.proxy.analysis import sqltext
from pgwarden.proxy.analysis.catalog import Catalog
from pgwarden.proxy.analysis.commands import COMMANDS
from pgwarden.proxy.analysis.facts import (
    CreatedRelation,
    Environment,
    PreparedQuery,
    SessionEffect,
    StatementAnalysis,
    analyze_sql,
    apply_relation_effect,
    resolution_key,
)
from pgwarden.proxy.decision import Statement

DEFAULT_SEARCH_PATH = '"$user", public'
#: Relations a session may create before the analyzer stops trusting name resolution.
MAX_CREATED_RELATIONS = 10_000
_BOUND_CACHE = 64


@dataclass(frozen=True, slots=True)
class ParseErrorInfo:
    """PostgreSQL's own complaint about a statement that does not parse."""

    message: str
    position: int  # 1-based character position, 0 when unknown (ErrorResponse 'P')


@dataclass(frozen=True, slots=True, eq=False)
class AnalyzedStatement:
    """One statement ready for a decision: its facts and their digest (computed once)."""

    facts: Mapping[str, Any]
    statement: Statement
    sql: str
    #: the ``$n`` (1-based) whose Bind value is the statement's LIMIT, if any
    limit_param: int | None = None
    parse_error: ParseErrorInfo | None = None
    #: an internal analyzer failure (a bug): refuse with DecisionCode.ANALYSIS_FAILED
    analysis_error: str | None = None
    effects: tuple[SessionEffect, ...] = ()
    changes_catalog: bool = False
    _bound: dict[int | None, AnalyzedStatement] = field(default_factory=dict, repr=False)

    @property
    def command(self) -> str:
        return str(self.facts["command"])

    def with_limit(self, limit: int | None) -> AnalyzedStatement:
        """The same statement with ``limit`` set (digest recomputed once per value)."""
        if limit == self.facts.get("limit"):
            return self
        cached = self._bound.get(limit)
        if cached is not None:
            return cached
        if self.command == "DECLARE CURSOR":
            # DECLARE returns no rows: the LIMIT is its cursor's, which FETCH reads
            effects = tuple(_with_query_limit(effect, limit) for effect in self.effects)
            bound = replace(self, effects=effects, _bound={})
        else:
            facts = dict(self.facts)
            facts["limit"] = limit
            bound = replace(self, facts=facts, statement=Statement.of(facts), _bound={})
        if len(self._bound) >= _BOUND_CACHE:
            self._bound.clear()
        self._bound[limit] = bound
        return bound

    def bind(
        self, values: Sequence[bytes | None], formats: Sequence[int] = ()
    ) -> AnalyzedStatement:
        """Fill ``limit`` from a Bind message's parameter values and format codes."""
        if self.limit_param is None or self.limit_param > len(values):
            return self
        index = self.limit_param - 1
        raw = values[index]
        if len(formats) == 0:
            binary = False
        elif len(formats) == 1:
            binary = formats[0] == 1
        else:
            binary = index < len(formats) and formats[index] == 1
        limit: int | None
        if raw is None:
            limit = None
        elif binary:
            limit = int.from_bytes(raw, "big", signed=True) if len(raw) in (2, 4, 8) else None
        else:
            limit = sqltext.parse_int(raw.decode("utf-8", "replace"))
        return self.with_limit(limit)

    def prepared(self) -> PreparedQuery:
        return PreparedQuery(self.facts, self.limit_param)


@dataclass(slots=True)
class _Template:
    analyzed: AnalyzedStatement
    limit_rank: int | None  # index of the LIMIT constant among the query's literal tokens


class Analyzer:
    """Statement analysis for one upstream database: the memo and the catalog.

    ``catalog_ttl_s``: after that long, :meth:`catalog_due` says the catalog should be
    reloaded; so it does after a statement that changes the schema succeeded."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        max_memo: int = 20_000,
        catalog_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_memo = max_memo
        self.catalog_ttl_s = catalog_ttl_s
        self._clock = clock
        self._exact: dict[tuple[Any, ...], tuple[AnalyzedStatement, ...]] = {}
        self._shape: dict[tuple[Any, ...], tuple[_Template, ...]] = {}
        self._view_trees: dict[int, Any] = {}
        self.catalog: Catalog | None = None
        self.catalog_loaded_at = 0.0
        self.schema_changed = False
        self.set_catalog(catalog)

    # catalog -------------------------------------------------------------------

    def set_catalog(self, catalog: Catalog | None) -> None:
        """Use a (re)loaded catalog; memoized analyses of the old one are dropped."""
        self.catalog = catalog
        self.catalog_loaded_at = self._clock()
        self.schema_changed = False
        self._exact.clear()
        self._shape.clear()
        self._view_trees = {}

    def catalog_due(self) -> bool:
        """Whether the catalog should be reloaded (schema change seen, or TTL passed)."""
        return self.schema_changed or (self._clock() - self.catalog_loaded_at >= self.catalog_ttl_s)

    @property
    def memo_size(self) -> int:
        """Memoized query strings (both layers)."""
        return len(self._exact) + len(self._shape)

    @property
    def catalog_version(self) -> int:
        return self.catalog.version if self.catalog is not None else 0

    # sessions ------------------------------------------------------------------

    def new_session(
        self, *, user: str | None = None, search_path: str = DEFAULT_SEARCH_PATH
    ) -> SessionAnalysisState:
        return SessionAnalysisState(self, user=user, search_path=search_path)

    # analysis ------------------------------------------------------------------

    def analyze_query(
        self, sql: str, state: SessionAnalysisState, protocol: str = "simple"
    ) -> list[AnalyzedStatement]:
        """The statements of one Query (simple protocol) or Parse (extended) message."""
        version = self.catalog_version
        if state.catalog_version != version:
            state.catalog_changed(version)
        path = state.search_path_key
        exact_key = (sql, protocol, path, version)
        hit = self._exact.get(exact_key)
        if hit is not None:
            return list(hit)
        try:
            tokens = sqltext.scan(sql)
        except pg_parser.ParseError as exc:
            # the parser meets a grammar error before a later lexical one: report
            # whichever PostgreSQL reports
            error: pg_parser.ParseError = exc
            try:
                pg_parser.parse_sql_json(sql)
            except pg_parser.ParseError as parse_exc:
                error = parse_exc
            failed = (self._parse_error(sql, error, protocol, None),)
            self._remember(self._exact, exact_key, failed)
            return list(failed)
        shape_key = (sqltext.memo_key_text(sql, tokens), protocol, path, version)
        templates = self._shape.get(shape_key)
        if templates is not None:
            literals = sqltext.literal_tokens(tokens)
            result = tuple(self._instantiate(t, sql, literals) for t in templates)
            self._remember(self._exact, exact_key, result)
            return list(result)
        env = Environment(
            self.catalog,
            state.search_path,
            state.user,
            protocol,
            dict(state.prepared),
            dict(state.cursors),
            self._view_trees,
            search_path_known=state.search_path_known,
            created=dict(state.created),
            default_search_path=state.default_search_path,
            created_version=state.created_version,
        )
        try:
            analyses = analyze_sql(sql, env, tokens)
        except pg_parser.ParseError as exc:
            failed = (self._parse_error(sql, exc, protocol, tokens),)
            self._remember(self._exact, exact_key, failed)
            return list(failed)
        except Exception as exc:  # a bug must fail closed, never take the proxy down
            facts = empty_facts(
                command=_guess_command(sql, tokens),
                protocol=protocol,
                sql_normalized=sqltext.normalize_tokens(sql, tokens),
            )
            return [
                AnalyzedStatement(
                    facts, Statement.of(facts), sql, analysis_error=f"{type(exc).__name__}: {exc}"
                )
            ]
        result = tuple(_analyzed(a) for a in analyses)
        if not any(a.session_dependent for a in analyses):
            self._remember(self._exact, exact_key, result)
            if not any(a.literal_dependent for a in analyses):
                literals = sqltext.literal_tokens(tokens)
                shaped = tuple(
                    _Template(r, _rank(literals, a.limit_literal))
                    for r, a in zip(result, analyses, strict=True)
                )
                if all(
                    t.limit_rank is not None or a.limit_literal is None
                    for t, a in zip(shaped, analyses, strict=True)
                ):
                    self._remember(self._shape, shape_key, shaped)
        return list(result)

    def _instantiate(
        self, template: _Template, sql: str, literals: Sequence[sqltext.Token]
    ) -> AnalyzedStatement:
        if template.limit_rank is None:
            return template.analyzed
        token = literals[template.limit_rank]
        return template.analyzed.with_limit(sqltext.parse_int(sqltext.literal_value(sql, token)))

    def _remember(self, memo: dict[Any, Any], key: Any, value: Any) -> None:
        if len(memo) >= self.max_memo:
            # first in, first out: dicts keep insertion order
            for _ in range(max(1, self.max_memo // 10)):
                memo.pop(next(iter(memo)))
        memo[key] = value

    def _parse_error(
        self,
        sql: str,
        exc: pg_parser.ParseError,
        protocol: str,
        tokens: list[sqltext.Token] | None,
    ) -> AnalyzedStatement:
        message = str(exc.args[0]) if exc.args else str(exc)
        # pglast reports a 0-based character index; ErrorResponse 'P' is 1-based
        index = exc.args[1] if len(exc.args) > 1 else None
        position = index + 1 if isinstance(index, int) else 0
        normalized = sqltext.normalize_tokens(sql, tokens) if tokens is not None else ""
        facts = empty_facts(
            command=_guess_command(sql, tokens), protocol=protocol, sql_normalized=normalized
        )
        facts["unresolved"] = True
        facts["read_only"] = False
        return AnalyzedStatement(
            facts, Statement.of(facts), sql, parse_error=ParseErrorInfo(message, position)
        )


class SessionAnalysisState:
    """What analysis needs to remember about one client session: the search path (from
    ParameterStatus and successful SETs), prepared statements and cursors by name.

    Nothing here changes until the proxy calls :meth:`apply` for a statement the upstream
    completed: a denied or failed statement leaves the session as it was. What a
    transaction changed (the search path, created relations, cursors) is undone as the
    server undoes it: at ROLLBACK, at a COMMIT the server reports as ROLLBACK, at ROLLBACK
    TO SAVEPOINT, and when an implicit transaction fails (:meth:`ready`)."""

    def __init__(
        self,
        analyzer: Analyzer,
        *,
        user: str | None = None,
        search_path: str = DEFAULT_SEARCH_PATH,
    ) -> None:
        self.analyzer = analyzer
        self.user = user
        self._default = sqltext.split_search_path(search_path)
        self._session = self._default
        self._local: tuple[str, ...] | None = None
        self.search_path_known = True
        self.in_transaction = False
        self.prepared: dict[str, PreparedQuery] = {}  # not transactional
        self.cursors: dict[str, PreparedQuery] = {}
        self._transaction_cursors: set[str] = set()  # those that end with the transaction
        #: relations created by this session that the catalog does not have
        self.created: dict[tuple[str, str], CreatedRelation] = {}
        # The transactional state as the current transaction found it (None: unchanged
        # since), and at each savepoint, innermost last.
        self._before: _Snapshot | None = None
        self._savepoints: list[tuple[str, _Snapshot]] = []
        self.created_version = 0
        self.catalog_version = analyzer.catalog_version
        self.search_path_key: tuple[Any, ...] = ()
        self._update_key()

    @property
    def search_path(self) -> tuple[str, ...]:
        return self._local if self._local is not None else self._session

    @property
    def default_search_path(self) -> tuple[str, ...]:
        """What RESET search_path goes back to."""
        return self._default

    def _update_key(self) -> None:
        # everything name resolution depends on, for the memo key
        self.search_path_key = resolution_key(
            self.search_path, self.user, self.search_path_known, self.created_version
        )

    def catalog_changed(self, version: int) -> None:
        """A new catalog has the session's permanent creations: keep only temporary ones."""
        self.catalog_version = version
        kept = {k: v for k, v in self.created.items() if k[0] == "pg_temp"}
        if len(kept) != len(self.created):
            self.created = kept
            self.created_version += 1
            self._update_key()

    def parameter_status(self, name: str, value: str) -> None:
        """ParameterStatus from the upstream (it reports ``search_path`` changes)."""
        if name == "search_path":
            self._session = sqltext.split_search_path(value)
            self._local = None
            self.search_path_known = True
            self._update_key()

    def apply(self, analyzed: AnalyzedStatement, *, rolled_back: bool = False) -> None:
        """Apply a statement's effects after the upstream completed it successfully
        (``rolled_back``: its CommandComplete said ROLLBACK)."""
        if analyzed.changes_catalog:
            self.analyzer.schema_changed = True
        if not analyzed.effects:
            return  # most statements: nothing changes
        for effect in analyzed.effects:
            # COMMIT of a failed transaction block rolls it back
            self._apply(_ROLLBACK if effect.kind == "commit" and rolled_back else effect)
        self._update_key()

    def ready(self, status: str, *, failed: bool) -> None:
        """ReadyForQuery with transaction ``status``; ``failed``: an error since the one
        before. Out of any transaction block after an error, the implicit transaction (a
        multi-statement query, an extended-protocol batch up to Sync) was rolled back;
        out of it otherwise, it committed."""
        if status == "I" and (self._before is not None or self._transaction_cursors):
            self._end_transaction(committed=not failed)
            self._update_key()

    def _snapshot(self) -> _Snapshot:
        return (
            self._session,
            self._local,
            self.search_path_known,
            dict(self.created),
            dict(self.cursors),
            frozenset(self._transaction_cursors),
        )

    def _restore(self, snapshot: _Snapshot) -> None:
        self._session, self._local, self.search_path_known = snapshot[:3]
        self.created, self.cursors = dict(snapshot[3]), dict(snapshot[4])
        self._transaction_cursors = set(snapshot[5])
        self.created_version += 1

    def ending_changes_resolution(self) -> bool:
        """Whether ending the transaction, or rolling back to one of its savepoints, may
        change what names resolve to: a SET LOCAL, or a search path or created relations
        changed since the transaction or a savepoint began."""
        if self._local is not None:
            return True
        snapshots = [snapshot for _, snapshot in self._savepoints]
        if self._before is not None:
            snapshots.append(self._before)
        return any(
            (snapshot[0], snapshot[2], snapshot[3])
            != (self._session, self.search_path_known, self.created)
            for snapshot in snapshots
        )

    def _changing(self) -> None:
        """A transactional change is about to apply: keep what the transaction found."""
        if self._before is None:
            self._before = self._snapshot()

    def _end_transaction(self, *, committed: bool) -> None:
        if not committed and self._before is not None:
            self._restore(self._before)
        for name in self._transaction_cursors:
            self.cursors.pop(name, None)
        self._transaction_cursors.clear()
        self._before = None
        self._savepoints.clear()
        self._local = None
        self.in_transaction = False

    def _apply(self, effect: SessionEffect) -> None:
        kind = effect.kind
        if kind in _TRANSACTIONAL:
            self._changing()
        if kind == "search_path":
            value = (
                self._default if effect.value is None else sqltext.split_search_path(effect.value)
            )
            if effect.local:
                if self.in_transaction:
                    self._local = value
            else:
                self._session = value
                self._local = None
            self.search_path_known = True
        elif kind == "unknown_search_path":
            self.search_path_known = False
        elif kind == "begin":
            self.in_transaction = True
        elif kind in ("commit", "rollback"):
            self._end_transaction(committed=kind == "commit")
        elif kind == "savepoint" and effect.name is not None:
            self._savepoints.append((effect.name, self._snapshot()))
        elif kind in ("release", "rollback_to"):
            names = [name for name, _ in self._savepoints]
            if effect.name in names:
                at = len(names) - 1 - names[::-1].index(effect.name)
                if kind == "rollback_to":
                    self._restore(self._savepoints[at][1])
                    del self._savepoints[at + 1 :]  # the savepoint itself stays
                else:
                    del self._savepoints[at:]
        elif apply_relation_effect(self.created, effect):
            self.created_version += 1
            if len(self.created) > MAX_CREATED_RELATIONS:
                # memory stays bounded; name resolution is then no longer trusted
                self.created.clear()
                self.search_path_known = False
        elif kind == "prepare" and effect.name is not None and effect.query is not None:
            self.prepared[effect.name] = effect.query
        elif kind == "declare" and effect.name is not None and effect.query is not None:
            self.cursors[effect.name] = effect.query
            if effect.local:  # not WITH HOLD: it ends with its transaction
                self._transaction_cursors.add(effect.name)
        elif kind == "deallocate":
            if effect.name is None:
                self.prepared.clear()
            else:
                self.prepared.pop(effect.name, None)
        elif kind == "close":
            if effect.name is None:
                self.cursors.clear()
            else:
                self.cursors.pop(effect.name, None)

    def bind_portal(self, name: str, query: PreparedQuery | None) -> None:
        """An extended-protocol Bind of portal ``name`` (SQL FETCH reads from it), to
        ``query`` (None: a statement analysis does not know)."""
        self._changing()
        if query is None:
            self.cursors.pop(name, None)
        else:
            self.cursors[name] = query
        self._transaction_cursors.add(name)
        self._update_key()

    def register_prepared(self, name: str, analyzed: AnalyzedStatement) -> None:
        """A named statement from an extended-protocol Parse (SQL EXECUTE can run it)."""
        if name:
            self.prepared[name] = replace(analyzed.prepared(), resolution=self.search_path_key)

    def forget_prepared(self, name: str) -> None:
        """Close (statement) from the extended protocol."""
        self.prepared.pop(name, None)


# The transactional state: search path (session, local, known), created relations,
# cursors and the cursors that end with the transaction.
_Snapshot = tuple[
    tuple[str, ...],
    tuple[str, ...] | None,
    bool,
    dict[tuple[str, str], CreatedRelation],
    dict[str, PreparedQuery],
    frozenset[str],
]
_TRANSACTIONAL = frozenset(
    {"search_path", "unknown_search_path", "created", "dropped", "discard_temp", "declare", "close"}
)
_ROLLBACK = SessionEffect("rollback")


def empty_facts(
    *, command: str = "unknown", protocol: str = "simple", sql_normalized: str = ""
) -> dict[str, Any]:
    """A facts document with nothing in it (parse errors)."""
    return {
        "fingerprint": "",
        "sql_normalized": sql_normalized,
        "command": command,
        "protocol": protocol,
        "read_only": False,
        "relations": [],
        "columns": [],
        "outputs": [],
        "star": [],
        "functions": [],
        "copy": None,
        "limit": None,
        "has_where": False,
        "set": None,
        "nested": [],
        "unresolved": True,
    }


def _with_query_limit(effect: SessionEffect, limit: int | None) -> SessionEffect:
    if effect.query is None:
        return effect
    facts = dict(effect.query.facts)
    facts["limit"] = limit
    return replace(effect, query=PreparedQuery(facts))


def _analyzed(analysis: StatementAnalysis) -> AnalyzedStatement:
    return AnalyzedStatement(
        analysis.facts,
        Statement.of(analysis.facts),
        analysis.sql,
        limit_param=analysis.limit_param,
        effects=analysis.effects,
        changes_catalog=analysis.changes_catalog,
    )


def _rank(literals: Sequence[sqltext.Token], offset: int | None) -> int | None:
    if offset is None:
        return None
    for index, token in enumerate(literals):
        if token.start >= offset:
            return index
    return None


_FIRST_WORDS = {
    "SELECT": "SELECT",
    "VALUES": "SELECT",
    "TABLE": "SELECT",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE_P": "DELETE",
    "MERGE": "MERGE",
    "COPY": "COPY",
    "SET": "SET",
    "RESET": "RESET",
    "SHOW": "SHOW",
    "BEGIN_P": "BEGIN",
    "START": "START TRANSACTION",
    "COMMIT": "COMMIT",
    "END_P": "COMMIT",
    "ROLLBACK": "ROLLBACK",
    "ABORT_P": "ROLLBACK",
    "SAVEPOINT": "SAVEPOINT",
    "RELEASE": "RELEASE",
    "DO": "DO",
    "CALL": "CALL",
    "PREPARE": "PREPARE",
    "EXECUTE": "EXECUTE",
    "DECLARE": "DECLARE CURSOR",
    "FETCH": "FETCH",
    "MOVE": "MOVE",
    "CLOSE": "CLOSE CURSOR",
    "EXPLAIN": "EXPLAIN",
    "GRANT": "GRANT",
    "REVOKE": "REVOKE",
    "VACUUM": "VACUUM",
    "ANALYZE": "ANALYZE",
    "TRUNCATE": "TRUNCATE TABLE",
    "LOCK_P": "LOCK TABLE",
    "LISTEN": "LISTEN",
    "NOTIFY": "NOTIFY",
    "DEALLOCATE": "DEALLOCATE",
    "CHECKPOINT": "CHECKPOINT",
    "CLUSTER": "CLUSTER",
    "REINDEX": "REINDEX",
    "COMMENT": "COMMENT",
}


def _guess_command(sql: str, tokens: list[sqltext.Token] | None) -> str:
    """The command of a statement that does not parse, from its first words."""
    if not tokens:
        return "unknown"
    words = [t for t in tokens if t.name not in ("C_COMMENT", "SQL_COMMENT")]
    if not words:
        return "unknown"
    first = words[0].name
    if first in ("CREATE", "ALTER", "DROP") and len(words) > 1:
        verb = sql[words[0].start : words[0].end].upper()
        for count in (3, 2, 1):
            phrase = " ".join(sql[w.start : w.end].upper() for w in words[1 : 1 + count])
            if f"{verb} {phrase}" in COMMANDS:
                return f"{verb} {phrase}"
        return "unknown"
    return _FIRST_WORDS.get(first, "unknown")
