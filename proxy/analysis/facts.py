"""Statement facts from pglast's JSON parse tree (``input.statement``, contract v1).

No pglast Python AST objects: the tree is ``json.loads(parse_sql_json(text))``, plain
dicts and lists, walked here. :func:`analyze_sql` is the entry point; the
:class:`~pgwarden.proxy.analysis.analyzer.Analyzer` adds memoization and session state.

Lineage model: every value carries the set of base columns it was computed from
(``Source`` = ``("schema.relation", "column")``). Relations seen through views are
resolved to their base tables by analyzing the view's definition from the catalog.
Columns are recorded with a usage where they are *used*: a column that a subquery or CTE
projects is recorded only where the enclosing query uses it (so ``SELECT id FROM (SELECT
id, ssn FROM customers) s`` records ``id`` as output, and ``ssn`` nowhere).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg_parser

from pgwarden.proxy.analysis import plpgsql, sqltext
from pgwarden.proxy.analysis.catalog import Catalog, CatalogRelation
from pgwarden.proxy.analysis.commands import (
    READ_ONLY_COMMANDS,
    SCHEMA_CHANGING_PREFIXES,
    command_tag,
)

Node = dict[str, Any]
Source = tuple[str, str]

#: The largest value of a FETCH count: ``FETCH ALL``.
FETCH_ALL = 9223372036854775807
_MAX_VIEW_DEPTH = 8
_CURSOR_OPT_HOLD = 0x0020  # DeclareCursorStmt.options: WITH HOLD
_MAX_NESTING = 16

#: Functions (pg_catalog) that run the SQL text in their argument at that position, with
#: that many arguments (None: any number).
SQL_TEXT_FUNCTIONS: Mapping[str, tuple[int, int | None]] = {
    "query_to_xml": (0, None),
    "query_to_xmlschema": (0, None),
    "query_to_xml_and_xmlschema": (0, None),
    "ts_stat": (0, None),
    "ts_rewrite": (1, 2),  # ts_rewrite(query, select): its three-argument form runs none
}
#: Functions (pg_catalog) that dump the relation named by their first argument.
RELATION_DUMP_FUNCTIONS = frozenset(
    {"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema"}
)
#: Functions whose effect the analyzer cannot see: whole schemas or databases, other
#: servers, cursors opened elsewhere.
OPAQUE_FUNCTIONS = frozenset(
    {
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "dblink",
        "dblink_exec",
        "dblink_open",
        "dblink_fetch",
        "dblink_send_query",
        "dblink_get_result",
    }
)
_QUALIFIED_NAME = re.compile(
    r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+")(?:\.(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+")){0,2}'
)


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """What a session remembers of a prepared statement or a cursor: the facts of its
    query, and which ``$n`` is its LIMIT. ``resolution``: for a prepared statement, what
    its names were resolved under (:func:`resolution_key`); the server analyzes it again
    when the search path has changed since, so EXECUTE under another one is not judged
    by these facts. None for a cursor or portal, whose plan is fixed."""

    facts: Mapping[str, Any]
    limit_param: int | None = None
    resolution: tuple[Any, ...] | None = None


def resolution_key(
    search_path: tuple[str, ...], user: str | None, known: bool, created_version: int
) -> tuple[Any, ...]:
    """What name resolution depends on: the search path, the user (``$user``), whether
    the path is known, and which version of the relations the session created (each
    creation, drop or undoing of one makes a new version)."""
    return (search_path, user, known, created_version)


@dataclass(frozen=True, slots=True)
class CreatedRelation:
    """A relation this session created that the catalog does not (yet) have: temporary
    relations (never in the catalog; they shadow others of the same name) and any
    relation created since the catalog was loaded. ``columns``: (name, sources, direct)
    lineage, from the defining query for views and ``CREATE TABLE AS``; ``reads``: the
    relations a view reads, as (schema, name, kind)."""

    schema: str
    name: str
    kind: str
    columns: tuple[tuple[str, tuple[str, ...], bool], ...] | None
    reads: tuple[tuple[str, str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.schema, self.name


@dataclass(frozen=True, slots=True)
class SessionEffect:
    """A change to session state that a statement makes when it succeeds.

    ``kind``: ``search_path`` (``value``; ``None`` = back to the session default),
    ``prepare``/``declare`` (``name``, ``query``; for ``declare``, ``local``: not WITH
    HOLD), ``deallocate``/``close`` (``name``; ``None`` = all), ``begin``, ``commit``,
    ``rollback``, ``savepoint``/``release``/``rollback_to`` (``name``), ``unknown_search_path``,
    ``created`` (``relation``), ``dropped`` (``name``: ``schema.relation``),
    ``discard_temp``."""

    kind: str
    name: str | None = None
    value: str | None = None
    local: bool = False
    query: PreparedQuery | None = None
    relation: CreatedRelation | None = None


@dataclass
class Environment:
    """What the analysis of one query string reads: the catalog, the session's search
    path and its prepared statements and cursors."""

    catalog: Catalog | None
    search_path: tuple[str, ...] = ("$user", "public")
    user: str | None = None
    protocol: str = "simple"
    prepared: dict[str, PreparedQuery] = field(default_factory=dict)
    cursors: dict[str, PreparedQuery] = field(default_factory=dict)
    view_trees: dict[int, Node | None] = field(default_factory=dict)
    search_path_known: bool = True
    created: dict[tuple[str, str], CreatedRelation] = field(default_factory=dict)
    default_search_path: tuple[str, ...] = ("$user", "public")
    created_version: int = 0  # the session's, then one more for each creation met here

    def resolution(self) -> tuple[Any, ...]:
        return resolution_key(
            self.search_path, self.user, self.search_path_known, self.created_version
        )

    def schemas(self) -> tuple[str, ...]:
        """The explicit search path with ``$user`` substituted (when it exists)."""
        out: list[str] = []
        for name in self.search_path:
            if name == "$user":
                if self.user and self.catalog is not None and self.catalog.has_schema(self.user):
                    out.append(self.user)
                continue
            if name not in out:
                out.append(name)
        return tuple(out)


@dataclass(slots=True)
class StatementAnalysis:
    """The analysis of one statement of a query string."""

    facts: dict[str, Any]
    sql: str
    limit_param: int | None = None
    limit_literal: int | None = None  # character offset of the LIMIT constant in the query
    literal_dependent: bool = False
    session_dependent: bool = False
    effects: tuple[SessionEffect, ...] = ()
    changes_catalog: bool = False


@dataclass(slots=True)
class Column:
    name: str
    sources: frozenset[Source]
    direct: bool


@dataclass(slots=True, eq=False)
class RangeEntry:
    """A FROM-clause item as the query sees it."""

    refname: str | None
    schema: str | None = None
    relation: str | None = None
    columns: list[Column] | None = None
    fallback: frozenset[Source] | None = None
    children: list[RangeEntry] = field(default_factory=list)
    merged_away: set[str] = field(default_factory=set)  # USING columns of a join side
    roots: tuple[str, ...] = ()  # the tables a partition or inheritance child descends from

    def flat(self) -> Iterator[RangeEntry]:
        yield self
        for child in self.children:
            yield from child.flat()


@dataclass(slots=True)
class Cte:
    name: str
    columns: list[Column] | None


class Scope:
    __slots__ = ("ctes", "entries", "parent")

    def __init__(self, parent: Scope | None) -> None:
        self.parent = parent
        self.entries: list[RangeEntry] = []
        self.ctes: dict[str, Cte] = {}

    def chain(self) -> Iterator[Scope]:
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def find_cte(self, name: str) -> Cte | None:
        for scope in self.chain():
            if name in scope.ctes:
                return scope.ctes[name]
        return None


@dataclass(slots=True)
class FactsBuilder:
    """The facts of one statement while it is walked."""

    command: str = "unknown"
    relations: set[tuple[str, str, str, str]] = field(default_factory=set)
    columns: set[tuple[str, str, str]] = field(default_factory=set)
    outputs: list[Column] = field(default_factory=list)
    star: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    copy: dict[str, Any] | None = None
    limit: int | None = None
    limit_param: int | None = None
    limit_literal: int | None = None
    has_where: bool = False
    set_fact: dict[str, Any] | None = None
    nested: list[dict[str, Any]] = field(default_factory=list)
    unresolved: bool = False
    nested_read_only: bool = True
    locking: bool = False
    hidden: set[int] = field(default_factory=set)
    literal_dependent: bool = False
    session_dependent: bool = False
    effects: list[SessionEffect] = field(default_factory=list)

    def merge(self, child: FactsBuilder, child_facts: Mapping[str, Any]) -> None:
        """Roll a nested statement's facts up into this one."""
        self.relations |= child.relations
        self.columns |= child.columns
        self.star |= child.star
        self.functions |= child.functions
        self.unresolved |= child.unresolved
        self.literal_dependent |= child.literal_dependent
        self.session_dependent |= child.session_dependent
        self.nested_read_only &= bool(child_facts["read_only"])
        self.effects.extend(e for e in child.effects if e.kind in RESOLUTION_EFFECTS)
        if child_facts not in self.nested:
            self.nested.append(dict(child_facts))

    def read_only(self) -> bool:
        if self.command not in READ_ONLY_COMMANDS or self.locking or self.unresolved:
            return False
        if any(access != "read" for _, _, _, access in self.relations):
            return False
        if self.copy is not None and self.copy["direction"] == "from":
            return False
        return self.nested_read_only

    def document(self, fingerprint: str, sql_normalized: str, protocol: str) -> dict[str, Any]:
        return {
            "fingerprint": fingerprint,
            "sql_normalized": sql_normalized,
            "command": self.command,
            "protocol": protocol,
            "read_only": self.read_only(),
            "relations": [
                {"schema": s, "name": n, "kind": k, "access": a}
                for s, n, k, a in sorted(self.relations)
            ],
            "columns": [
                {"relation": r, "column": c, "usage": u} for r, c, u in sorted(self.columns)
            ],
            "outputs": [
                {
                    "name": o.name,
                    "sources": sorted(f"{r}.{c}" for r, c in o.sources),
                    "direct": o.direct,
                }
                for o in self.outputs
            ],
            "star": sorted(self.star),
            "functions": sorted(self.functions),
            "copy": self.copy,
            "limit": self.limit,
            "has_where": self.has_where,
            "set": self.set_fact,
            "nested": self.nested,
            "unresolved": self.unresolved,
        }


class TextContext:
    """One SQL text being analyzed, with its scanner tokens and offset map."""

    __slots__ = ("_tokens", "offsets", "text")

    def __init__(self, text: str, tokens: list[sqltext.Token] | None = None) -> None:
        self.text = text
        self.offsets = sqltext.Offsets(text)
        self._tokens = tokens

    @property
    def tokens(self) -> list[sqltext.Token]:
        if self._tokens is None:
            self._tokens = sqltext.scan(self.text)
        return self._tokens

    def char(self, byte_offset: int) -> int:
        return self.offsets.char(byte_offset)


def _unwrap(value: Any, kind: str) -> Node:
    """A node's body: pglast's JSON wraps a node in ``{kind: body}`` where the field's
    type is a generic Node, and gives the body directly where the field is typed."""
    if not isinstance(value, dict):
        return {}
    inner = value.get(kind)
    if isinstance(inner, dict) and len(value) == 1:
        return inner
    return value


def _node(value: Any) -> tuple[str, Node] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        if kind[:1].isupper() and isinstance(body, dict):
            return kind, body
    return None


def _string(value: Any) -> str | None:
    """The text of a ``String`` node."""
    if isinstance(value, dict):
        inner = value.get("String")
        if isinstance(inner, dict):
            sval = inner.get("sval")
            return str(sval) if sval is not None else ""
    return None


def _names(values: Iterable[Any]) -> list[str]:
    return [s for s in (_string(v) for v in values) if s is not None]


def constant_text(value: Any) -> str | None:
    """The value of a string/integer constant node (through casts), else None."""
    typed = _node(value)
    if typed is None:
        return None
    kind, body = typed
    if kind == "TypeCast":
        return constant_text(body.get("arg"))
    if kind == "String":
        return str(body.get("sval", ""))
    if kind == "A_Const":
        if "sval" in body:
            return str(body["sval"].get("sval", ""))
        if "ival" in body:
            return str(body["ival"].get("ival", 0))
        if "fval" in body:
            return str(body["fval"].get("fval", ""))
        if "boolval" in body:
            return "true" if body["boolval"].get("boolval") else "false"
    return None


def _param_number(value: Any) -> int | None:
    typed = _node(value)
    if typed is None:
        return None
    kind, body = typed
    if kind == "TypeCast":
        return _param_number(body.get("arg"))
    if kind == "ParamRef":
        return int(body.get("number", 0)) or None
    return None


class Walker:
    """Walks the statements of one query string and builds their facts."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.catalog = env.catalog
        self.facts = FactsBuilder()
        self.top_facts: FactsBuilder | None = None
        self.tc = TextContext("")
        self.depth = 0
        self.view_depth = 0
        self.in_cte_dml = False
        self.deferred = 0  # inside a statement whose nested statements do not run now
        self.schemas = env.schemas()

    # ------------------------------------------------------------------ statements

    def analyze_text(
        self, text: str, *, top: bool, tokens: list[sqltext.Token] | None = None
    ) -> list[StatementAnalysis]:
        """Parse ``text`` and analyze each of its statements; raises ParseError."""
        tree = json.loads(pg_parser.parse_sql_json(text))
        saved_tc = self.tc
        self.tc = TextContext(text, tokens)
        results: list[StatementAnalysis] = []
        try:
            for raw in tree.get("stmts", ()):
                results.append(self._raw_statement(raw, top=top))
        finally:
            self.tc = saved_tc
        return results

    def _raw_statement(self, raw: Node, *, top: bool) -> StatementAnalysis:
        stmt = _node(raw.get("stmt"))
        start_b = int(raw.get("stmt_location", 0))
        length_b = int(raw.get("stmt_len", 0))
        start = self.tc.char(start_b)
        end = self.tc.char(start_b + length_b) if length_b else len(self.tc.text)
        saved = (self.facts, self.top_facts)
        builder = FactsBuilder()
        self.facts = builder
        if top:
            self.top_facts = builder
        try:
            if stmt is None:
                builder.command = "unknown"
                builder.unresolved = True
            else:
                self.statement(stmt[0], stmt[1], start, end)
            sql = self.tc.text[start:end].strip()
            document = builder.document(
                _fingerprint(sql),
                sqltext.normalize_tokens(self.tc.text, self.tc.tokens, start, end, builder.hidden),
                self.env.protocol,
            )
        finally:
            self.facts, self.top_facts = saved
        if top:
            self._apply_effects(builder.effects)
        elif self.deferred == 0:
            # statements run in sequence inside a DO block too
            self._apply_effects(e for e in builder.effects if e.kind in RESOLUTION_EFFECTS)
        return StatementAnalysis(
            facts=document,
            sql=sql,
            limit_param=builder.limit_param,
            limit_literal=builder.limit_literal,
            literal_dependent=builder.literal_dependent,
            session_dependent=builder.session_dependent,
            effects=tuple(builder.effects),
            changes_catalog=builder.command.startswith(SCHEMA_CHANGING_PREFIXES),
        )

    def _apply_effects(self, effects: Iterable[SessionEffect]) -> None:
        """Later statements of the same query string see earlier ones' effects."""
        for effect in effects:
            if effect.kind == "search_path":
                self.env.search_path = (
                    self.env.default_search_path
                    if effect.value is None
                    else sqltext.split_search_path(effect.value)
                )
                self.env.search_path_known = True
                self.schemas = self.env.schemas()
            elif effect.kind == "unknown_search_path":
                self.env.search_path_known = False
            elif effect.kind == "prepare" and effect.name and effect.query:
                self.env.prepared[effect.name] = effect.query
            elif effect.kind == "declare" and effect.name and effect.query:
                self.env.cursors[effect.name] = effect.query
            elif effect.kind == "deallocate":
                if effect.name is None:
                    self.env.prepared.clear()
                else:
                    self.env.prepared.pop(effect.name, None)
            elif effect.kind == "close":
                if effect.name is None:
                    self.env.cursors.clear()
                else:
                    self.env.cursors.pop(effect.name, None)
            elif apply_relation_effect(self.env.created, effect):
                self.env.created_version += 1

    def nested(
        self,
        kind: str,
        body: Node,
        span: tuple[int, int] | None,
        scope: Scope | None = None,
    ) -> tuple[FactsBuilder, dict[str, Any]]:
        """Analyze a statement embedded in the current one (same text) as a nested
        statement; its facts are rolled up into the current statement's."""
        parent = self.facts
        child = FactsBuilder()
        self.facts = child
        self.depth += 1
        try:
            if self.depth > _MAX_NESTING:
                child.unresolved = True
            else:
                self.statement(kind, body, span[0] if span else 0, span[1] if span else 0, scope)
        finally:
            self.facts = parent
            self.depth -= 1
        if span is not None:
            sql = self.tc.text[span[0] : span[1]]
            normalized = sqltext.normalize_tokens(
                self.tc.text, self.tc.tokens, span[0], span[1], child.hidden
            )
        else:
            sql = normalized = ""
        document = child.document(_fingerprint(sql.strip()), normalized, self.env.protocol)
        parent.merge(child, document)
        parent.hidden |= child.hidden
        return child, document

    def nested_text(self, text: str) -> list[dict[str, Any]]:
        """Analyze SQL text found inside the current statement (a DO body, a constant
        passed to EXECUTE) as nested statements."""
        parent = self.facts
        self.depth += 1
        saved_top = self.top_facts
        self.top_facts = None
        try:
            if self.depth > _MAX_NESTING:
                parent.unresolved = True
                return []
            try:
                results = self.analyze_text(text, top=False)
            except pg_parser.ParseError:
                parent.unresolved = True
                return []
        finally:
            self.depth -= 1
            self.top_facts = saved_top
        documents = []
        for result in results:
            child = _builder_of(result.facts)
            child.literal_dependent = True
            child.session_dependent = result.session_dependent
            child.effects = list(result.effects)
            parent.merge(child, result.facts)
            documents.append(result.facts)
        return documents

    def statement(
        self, kind: str, body: Node, start: int, end: int, scope: Scope | None = None
    ) -> None:
        self.facts.command = command_tag(kind, body)
        handler = _STATEMENTS.get(kind)
        before = len(self.facts.effects)
        deferred = kind in _NOT_RUN_NOW or (kind == "ExplainStmt" and not _explain_analyze(body))
        self.deferred += deferred
        try:
            if handler is not None:
                handler(self, body, start, end, scope)
            else:
                self.generic_statement(body)
        finally:
            self.deferred -= deferred
        if deferred:
            # the nested statements are stored or planned, not run: no session effects
            effects = self.facts.effects
            effects[before:] = [e for e in effects[before:] if e.kind in ("prepare", "declare")]

    def generic_statement(self, body: Node) -> None:
        """DDL and utility statements: the relations they name, the functions and
        subqueries in their expressions."""
        access = "ddl"
        for rv in _find_rangevars(body):
            self.add_relation_rv(rv, access, kind_hint=None)
        self.expr(_without_rangevars(body), None, None)

    # SELECT ------------------------------------------------------------------

    def st_select(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        into = body.get("intoClause")
        if into:
            inner = {k: v for k, v in body.items() if k != "intoClause"}
            self.into_target(into)
            child, _ = self.nested("SelectStmt", inner, (start, end), scope)
            self.created_into(into, child, "table")
            return
        before = len(facts.effects)
        facts.outputs = self.select(body, scope, "output", top=True)
        if not _runs_each_target_once(body):
            # A set_config the server may never call (WHERE false, CASE, one call per
            # row): where the search path is now, the analyzer cannot know.
            effects = facts.effects[before:]
            if any(e.kind == "search_path" for e in effects):
                kept = [e for e in effects if e.kind != "search_path"]
                facts.effects[before:] = [*kept, SessionEffect("unknown_search_path")]
        facts.has_where = _has_where(body)
        if body.get("lockingClause"):
            facts.locking = True

    def select(
        self, body: Node, parent: Scope | None, usage: str | None, *, top: bool = False
    ) -> list[Column]:
        scope = Scope(parent)
        if body.get("withClause"):
            self.with_clause(_unwrap(body["withClause"], "WithClause"), scope)
        op = body.get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self.select(_unwrap(body["larg"], "SelectStmt"), scope, usage)
            right = self.select(_unwrap(body["rarg"], "SelectStmt"), scope, usage)
            if _compares_rows(body):
                for column in (*left, *right):
                    self.use(column.sources, "group")
            columns = _union_columns(left, right)
            self.sort_clause(body.get("sortClause"), scope, columns)
            self.limit_clause(body, scope, top)
            return columns
        if body.get("valuesLists"):
            return self.values_lists(body["valuesLists"], scope, usage)
        for item in body.get("fromClause", ()):
            self.from_item(item, scope)
        if body.get("whereClause") is not None:
            self.expr(body["whereClause"], scope, "filter")
        columns = self.targets(body.get("targetList", ()), scope, usage)
        for group in body.get("groupClause", ()):
            self.group_item(group, scope, columns)
        if body.get("havingClause") is not None:
            self.expr(body["havingClause"], scope, "filter")
        for window in body.get("windowClause", ()):
            self.window_def(window.get("WindowDef", {}), scope)
        for distinct in body.get("distinctClause", ()):
            if distinct:
                self.by_output_or_expr(distinct, scope, columns, "group")
            else:  # plain DISTINCT (an empty item): rows are compared whole, as GROUP BY
                for column in columns:
                    self.use(column.sources, "group")
        self.sort_clause(body.get("sortClause"), scope, columns)
        self.limit_clause(body, scope, top)
        return columns

    def limit_clause(self, body: Node, scope: Scope, top: bool) -> None:
        count = body.get("limitCount")
        offset = body.get("limitOffset")
        # How many rows come back is itself an answer: LIMIT (SELECT ascii(ssn) ...) spells
        # out a value a row count at a time. (PostgreSQL refuses this level's columns
        # there, not an outer query's.)
        self.expr(offset, scope, "limit")
        if count is None:
            return
        self.expr(count, scope, "limit")
        if not top:
            return
        facts = self.facts
        param = _param_number(count)
        if param is not None:
            facts.limit_param = param
            return
        typed = _node(count)
        if typed is None or typed[0] not in ("A_Const", "TypeCast"):
            return
        value = sqltext.parse_int(constant_text(count))
        facts.limit = value
        location = _first_location(count)
        if value is not None and location is not None:
            if facts is self.top_facts:
                facts.limit_literal = self.tc.char(location)
            else:
                facts.literal_dependent = True

    def values_lists(self, lists: list[Any], scope: Scope, usage: str | None) -> list[Column]:
        columns: list[Column] = []
        for row in lists:
            items = row.get("List", {}).get("items", ())
            for index, item in enumerate(items):
                sources = frozenset(self.expr(item, scope, usage))
                if index < len(columns):
                    columns[index] = Column(
                        columns[index].name, columns[index].sources | sources, False
                    )
                else:
                    columns.append(Column(f"column{index + 1}", sources, False))
        return columns

    def targets(self, targets: Iterable[Any], scope: Scope, usage: str | None) -> list[Column]:
        columns: list[Column] = []
        for target in targets:
            res = target.get("ResTarget", {})
            value = res.get("val")
            name = res.get("name")
            expanded = self.star_target(value, scope, usage)
            if expanded is not None:
                columns.extend(expanded)
                continue
            sources, direct = self.value(value, scope, usage)
            columns.append(Column(name or _column_name(value), frozenset(sources), direct))
        return columns

    def star_target(self, value: Any, scope: Scope, usage: str | None) -> list[Column] | None:
        """``*``, ``t.*`` and ``(t).*`` in a target list: one output per column."""
        typed = _node(value)
        if typed is None:
            return None
        kind, body = typed
        if kind == "ColumnRef":
            fields = body.get("fields", ())
            if not fields or "A_Star" not in fields[-1]:
                return None
            names = _names(fields[:-1])
            if names:
                entry = self.find_entry(names, scope)
                entries = [entry] if entry is not None else []
            else:
                entries = list(scope.entries)
            if not entries:
                return []
            columns: list[Column] = []
            for entry in entries:
                columns.extend(self.expand(entry, unqualified=not names))
            for column in columns:
                self.use(column.sources, usage)
            return columns
        if kind == "A_Indirection":
            indirection = body.get("indirection", ())
            if indirection and "A_Star" in indirection[-1] and len(indirection) == 1:
                entry = self.whole_row_entry(body.get("arg"), scope)
                if entry is not None:
                    columns = self.expand(entry)
                    for column in columns:
                        self.use(column.sources, usage)
                    return [Column(c.name, c.sources, False) for c in columns]
        return None

    def value(self, node: Any, scope: Scope, usage: str | None) -> tuple[set[Source], bool]:
        """The sources of an output expression and whether it is a bare column."""
        typed = _node(node)
        if typed is not None and typed[0] == "ColumnRef":
            sources, direct = self.column_ref(typed[1], scope, usage)
            return sources, direct
        return self.expr(node, scope, usage), False

    def sort_clause(self, items: Any, scope: Scope, columns: list[Column]) -> None:
        for item in items or ():
            sort = item.get("SortBy", {})
            self.by_output_or_expr(sort.get("node"), scope, columns, "order")

    def group_item(self, item: Any, scope: Scope, columns: list[Column]) -> None:
        typed = _node(item)
        if typed is not None and typed[0] == "GroupingSet":
            for content in typed[1].get("content", ()):
                self.group_item(content, scope, columns)
            return
        self.by_output_or_expr(item, scope, columns, "group")

    def by_output_or_expr(self, node: Any, scope: Scope, columns: list[Column], usage: str) -> None:
        """ORDER BY / GROUP BY / DISTINCT ON items: an output position, an output name,
        or an expression over the input."""
        typed = _node(node)
        if typed is not None:
            kind, body = typed
            if kind == "A_Const" and "ival" in body:
                position = int(body["ival"].get("ival", 0))
                self.facts.literal_dependent = True
                if 1 <= position <= len(columns):
                    self.use(columns[position - 1].sources, usage)
                return
            if kind == "ColumnRef":
                names = _names(body.get("fields", ()))
                if len(names) == 1 and len(body.get("fields", ())) == 1:
                    name = names[0]
                    if not self.resolves(name, scope):
                        for column in columns:
                            if column.name == name:
                                self.use(column.sources, usage)
                                return
        self.expr(node, scope, usage)

    def resolves(self, name: str, scope: Scope) -> bool:
        for s in scope.chain():
            for entry in s.entries:
                for e in entry.flat():
                    if e.columns is None or any(c.name == name for c in e.columns):
                        return True
        return False

    def window_def(self, window: Node, scope: Scope) -> None:
        for item in window.get("partitionClause", ()):
            self.expr(item, scope, "group")
        for item in window.get("orderClause", ()):
            self.expr(item.get("SortBy", {}).get("node"), scope, "order")
        # ROWS BETWEEN n PRECEDING ...: how many rows each window function sees
        self.expr(window.get("startOffset"), scope, "limit")
        self.expr(window.get("endOffset"), scope, "limit")

    def with_clause(self, with_clause: Node, scope: Scope) -> None:
        recursive = bool(with_clause.get("recursive"))
        for item in with_clause.get("ctes", ()):
            cte = item.get("CommonTableExpr", {})
            name = str(cte.get("ctename", ""))
            aliases = _names(cte.get("aliascolnames", ()))
            query = _node(cte.get("ctequery"))
            if query is None:
                continue
            kind, body = query
            if kind == "SelectStmt":
                if recursive and body.get("op", "SETOP_NONE") != "SETOP_NONE":
                    columns = self.recursive_cte(name, aliases, body, scope)
                else:
                    columns = self.select(body, scope, None)
                self.computed(columns)
            else:
                span = self.cte_span(cte)
                self.in_cte_dml = True
                try:
                    child, _ = self.nested(kind, body, span, scope)
                finally:
                    self.in_cte_dml = False
                columns = child.outputs
            columns = _rename(columns, aliases)
            scope.ctes[name] = Cte(name, columns + self.search_and_cycle(cte, columns))

    def search_and_cycle(self, cte: Node, columns: list[Column]) -> list[Column]:
        """The columns a CTE's SEARCH and CYCLE clauses add: the search order and the
        cycle path hold the values of the columns they name (an array of rows that no
        mask covers), the cycle mark the result of comparing them."""
        added: list[Column] = []
        for key, names_key, usage, added_keys in (
            ("search_clause", "search_col_list", "order", ("search_seq_column",)),
            ("cycle_clause", "cycle_col_list", "group", ("cycle_mark_column", "cycle_path_column")),
        ):
            clause = cte.get(key)
            if not isinstance(clause, dict):
                continue
            named = set(_names(clause.get(names_key, ())))
            sources: frozenset[Source] = frozenset()
            for column in columns:
                if column.name in named:
                    sources |= column.sources
            self.use(sources, usage)
            added.extend(Column(str(clause.get(k, "")), sources, False) for k in added_keys)
        return added

    def computed(self, columns: list[Column]) -> None:
        """A subquery's or CTE's computed columns are read where they are computed, whether
        or not the statement reads them: a set-returning function there decides how many
        rows there are (SELECT count(*) FROM (SELECT generate_series(1, ascii(ssn)) ...)),
        a volatile one runs all the same."""
        for column in columns:
            if not column.direct:
                self.use(column.sources, "from")

    def recursive_cte(
        self, name: str, aliases: list[str], body: Node, scope: Scope
    ) -> list[Column]:
        left = self.select(_unwrap(body["larg"], "SelectStmt"), scope, None)
        columns = _rename(left, aliases)
        right: list[Column] = []
        for _ in range(6):
            scope.ctes[name] = Cte(name, columns)
            right = self.select(_unwrap(body["rarg"], "SelectStmt"), scope, None)
            merged = _rename(_union_columns(left, right), aliases)
            if [c.sources for c in merged] == [c.sources for c in columns]:
                break
            left = merged
            columns = merged
        if _compares_rows(body):  # UNION without ALL drops rows equal to earlier ones
            for column in (*columns, *right):
                self.use(column.sources, "group")
        return columns

    # FROM --------------------------------------------------------------------

    def from_item(self, item: Any, scope: Scope) -> list[RangeEntry]:
        typed = _node(item)
        if typed is None:
            return []
        kind, body = typed
        entries: list[RangeEntry]
        if kind == "RangeVar":
            entries = [self.range_var(body, scope)]
        elif kind == "RangeSubselect":
            sub = _unwrap(body.get("subquery"), "SelectStmt")
            columns = self.select(sub, scope, None)
            self.computed(columns)
            alias = _unwrap(body.get("alias"), "Alias")
            entries = [
                RangeEntry(
                    alias.get("aliasname"),
                    columns=_rename(columns, _names(alias.get("colnames", ()))),
                )
            ]
        elif kind == "JoinExpr":
            entries = self.join(body, scope)
        elif kind == "RangeFunction":
            entries = [self.range_function(body, scope)]
        elif kind == "RangeTableSample":
            entries = self.from_item(body.get("relation"), scope)
            # the sampling percentage and seed decide which rows there are
            self.expr(body.get("args"), scope, "from")
            self.expr(body.get("repeatable"), scope, "from")
            return entries  # already in scope
        elif kind in ("RangeTableFunc", "JsonTable"):
            entries = [self.table_function(kind, body, scope)]
        else:
            sources = self.expr(body, scope, "from")
            entries = [RangeEntry(None, fallback=frozenset(sources))]
        scope.entries.extend(entries)
        return entries

    def range_var(self, rv: Node, scope: Scope, access: str = "read") -> RangeEntry:
        name = str(rv.get("relname", ""))
        schema = rv.get("schemaname")
        alias = _unwrap(rv.get("alias"), "Alias")
        refname = alias.get("aliasname") or name
        colnames = _names(alias.get("colnames", ()))
        if not schema and access == "read":
            cte = scope.find_cte(name)
            if cte is not None:
                return RangeEntry(
                    refname,
                    columns=_rename(cte.columns, colnames) if cte.columns is not None else None,
                )
        relation = self.resolve_relation(schema, name)
        qualified = f"{relation[0]}.{relation[1]}"
        created = self.env.created.get(relation) if self.view_depth == 0 else None
        if created is not None:
            return self.created_entry(created, access, refname, alias, colnames)
        catalog_rel = self.catalog.relation(*relation) if self.catalog else None
        kind = catalog_rel.kind if catalog_rel else "unknown"
        self.facts.relations.add((relation[0], relation[1], kind, access))
        columns: list[Column] | None = None
        roots: tuple[CatalogRelation, ...] = ()
        if catalog_rel is not None:
            if catalog_rel.kind in ("view", "materialized_view") and catalog_rel.view_definition:
                columns = self.view_columns(catalog_rel)
            else:
                # A partition's or inheritance child's rows are its root table's rows
                # (SELECT ... FROM customers returns them): it is read and written as the
                # root, and its columns are the root's, classified and masked as such.
                roots = self.catalog.roots(catalog_rel.oid) if self.catalog else ()
                for root in roots:
                    self.facts.relations.add((root.schema, root.name, root.kind, access))
                columns = [
                    Column(c.name, _inherited(qualified, c.name, roots), True)
                    for c in catalog_rel.columns
                ]
        return RangeEntry(
            refname,
            schema=None if alias.get("aliasname") else relation[0],
            relation=qualified,
            columns=_rename(columns, colnames) if columns is not None else None,
            roots=tuple(root.qualified for root in roots),
        )

    def created_entry(
        self,
        created: CreatedRelation,
        access: str,
        refname: str,
        alias: Node,
        colnames: list[str],
    ) -> RangeEntry:
        """A relation the session created: its lineage as recorded at creation."""
        self.facts.relations.add((created.schema, created.name, created.kind, access))
        for schema, name, kind in created.reads:
            self.facts.relations.add((schema, name, kind, "read"))
        columns = (
            [
                Column(name, frozenset(_source(s) for s in sources), direct)
                for name, sources, direct in created.columns
            ]
            if created.columns is not None
            else None
        )
        return RangeEntry(
            refname,
            schema=None if alias.get("aliasname") else created.schema,
            relation=f"{created.schema}.{created.name}",
            columns=_rename(columns, colnames) if columns is not None else None,
        )

    def created(
        self,
        qualified: str,
        kind: str,
        columns: Sequence[Column] | None,
        reads: Iterable[tuple[str, str, str, str]] = (),
        names: Sequence[str] = (),
    ) -> None:
        """Remember a relation this statement creates (effect applied on success)."""
        schema, _, name = qualified.partition(".")
        lineage = None
        if columns is not None:
            renamed = _rename(list(columns), names)
            lineage = tuple(
                (c.name, tuple(sorted(f"{r}.{col}" for r, col in c.sources)), c.direct)
                for c in renamed
            )
        self.facts.effects.append(
            SessionEffect(
                "created",
                relation=CreatedRelation(
                    schema,
                    name,
                    kind,
                    lineage,
                    tuple(sorted({(s, n, k) for s, n, k, a in reads if a == "read"})),
                ),
            )
        )

    def view_columns(self, view: CatalogRelation) -> list[Column]:
        """A view's columns with their base-table lineage, from its definition."""
        names = list(view.column_names())
        if self.view_depth >= _MAX_VIEW_DEPTH:
            self.facts.unresolved = True
            return [Column(n, frozenset(), False) for n in names]
        tree = self.env.view_trees.get(view.oid, {})
        if tree == {}:
            try:
                parsed = json.loads(pg_parser.parse_sql_json(view.view_definition or ""))
                stmts = parsed.get("stmts", ())
                tree = stmts[0].get("stmt", {}).get("SelectStmt") if stmts else None
            except pg_parser.ParseError:
                tree = None
            self.env.view_trees[view.oid] = tree
        if tree is None:
            self.facts.unresolved = True
            return [Column(n, frozenset(), False) for n in names]
        saved = self.schemas
        self.schemas = ()
        self.view_depth += 1
        try:
            outputs = self.select(tree, None, None)
        finally:
            self.schemas = saved
            self.view_depth -= 1
        if len(outputs) == len(names):
            return [Column(n, o.sources, o.direct) for n, o in zip(names, outputs, strict=True)]
        return outputs

    def join(self, body: Node, scope: Scope) -> list[RangeEntry]:
        left = self.from_item(body.get("larg"), scope)
        right = self.from_item(body.get("rarg"), scope)
        # from_item put them in scope; the join returns them again under its alias
        for entry in left + right:
            scope.entries.remove(entry)
        if body.get("quals") is not None:
            inner = Scope(scope)
            inner.entries = left + right
            self.expr(body["quals"], inner, "join")
        using = _names(body.get("usingClause", ()))
        if body.get("isNatural"):
            using = _common_names(left, right)
        merged: list[Column] = []
        for name in using:
            # USING/NATURAL: one merged column, first in ``*``; unqualified references
            # mean it, qualified ones still reach each side's own column
            sources: set[Source] = set()
            for side in (left, right):
                found, _ = self.column_ref(
                    {"fields": [{"String": {"sval": name}}]}, _scope_of(side), "join"
                )
                sources |= found
                for top in side:
                    for e in top.flat():
                        if e.columns is not None and any(c.name == name for c in e.columns):
                            e.merged_away.add(name)
            merged.append(Column(name, frozenset(sources), body.get("jointype") != "JOIN_FULL"))
        if merged:
            left = [RangeEntry(None, columns=merged), *left]
        alias = _unwrap(body.get("alias"), "Alias")
        if alias.get("aliasname"):
            # PostgreSQL hides the joined tables' own names behind the join alias
            entry = RangeEntry(alias["aliasname"], children=left + right)
            colnames = _names(alias.get("colnames", ()))
            if colnames:
                entry.columns = _rename(self.expand(entry, record_star=False), colnames)
            return [entry]
        return left + right

    def range_function(self, body: Node, scope: Scope) -> RangeEntry:
        sources: set[Source] = set()
        names: list[str] = []
        for pair in body.get("functions", ()):
            items = pair.get("List", {}).get("items", ())
            if items:
                # a FROM function's arguments decide its rows (generate_series(1, ascii(ssn)))
                sources |= self.expr(items[0], scope, "from")
                function_name = _column_name(items[0])
                names.append(function_name)
            if len(items) > 1 and items[1]:
                for coldef in items[1].get("List", {}).get("items", ()):
                    names_def = coldef.get("ColumnDef", {}).get("colname")
                    if names_def:
                        names.append(str(names_def))
        for coldef in body.get("coldeflist", ()):
            colname = coldef.get("ColumnDef", {}).get("colname")
            if colname:
                names.append(str(colname))
        alias = _unwrap(body.get("alias"), "Alias")
        colnames = _names(alias.get("colnames", ()))
        frozen = frozenset(sources)
        if body.get("coldeflist") or colnames:
            cols = colnames or [
                str(c.get("ColumnDef", {}).get("colname", "")) for c in body["coldeflist"]
            ]
            return RangeEntry(
                alias.get("aliasname"),
                columns=[Column(n, frozen, False) for n in cols],
                fallback=frozen,
            )
        refname = alias.get("aliasname") or (names[0] if names else None)
        return RangeEntry(refname, fallback=frozen)

    def table_function(self, kind: str, body: Node, scope: Scope) -> RangeEntry:
        columns_key = "columns"
        sources = set()
        for key, value in body.items():
            if key not in (columns_key, "alias"):
                sources |= self.expr(value, scope, "from")
        frozen = frozenset(sources)
        names: list[str] = []
        for col in _find_nodes(body.get(columns_key, []), "RangeTableFuncCol"):
            names.append(str(col.get("colname", "")))
            sources_col = self.expr(col.get("colexpr"), scope, "from")
            frozen = frozen | frozenset(sources_col)
        for col in _find_nodes(body.get(columns_key, []), "JsonTableColumn"):
            if col.get("name"):
                names.append(str(col["name"]))
        alias = _unwrap(body.get("alias"), "Alias")
        return RangeEntry(
            alias.get("aliasname"),
            columns=[Column(n, frozen, False) for n in names] if names else None,
            fallback=frozen,
        )

    def resolve_relation(self, schema: str | None, name: str) -> tuple[str, str]:
        if schema:
            return str(schema), name
        if not self.env.search_path_known and self.view_depth == 0:
            # a search path set from a value the analyzer could not see
            self.facts.unresolved = True
        path = self.schemas
        catalog = self.catalog
        created = self.env.created
        if ("pg_temp", name) in created and self.view_depth == 0:
            return "pg_temp", name  # the session's temporary relations come first
        lookup = path if "pg_catalog" in path else ("pg_catalog", *path)
        for candidate in lookup:
            if (candidate, name) in created or (
                catalog is not None and catalog.relation(candidate, name) is not None
            ):
                return candidate, name
        if name.startswith("pg_"):
            # system catalogs: pg_catalog is searched first unless placed explicitly
            return "pg_catalog", name
        if catalog is not None:
            for candidate in path:
                if catalog.has_schema(candidate):
                    return candidate, name
        return (path[0] if path else "public"), name

    def creation_schema(self) -> str:
        catalog = self.catalog
        for candidate in self.schemas:
            if candidate == "pg_catalog":
                continue
            if catalog is None or catalog.has_schema(candidate):
                return candidate
        return "public"

    def qualified_new(self, rv: Node) -> str:
        """``schema.name`` of a relation being created."""
        name = str(rv.get("relname", ""))
        if rv.get("schemaname"):
            return f"{rv['schemaname']}.{name}"
        if rv.get("relpersistence") == "t":
            return f"pg_temp.{name}"
        return f"{self.creation_schema()}.{name}"

    def add_relation_rv(
        self, rv: Node, access: str, kind_hint: str | None, *, creating: bool = False
    ) -> str:
        name = str(rv.get("relname", ""))
        schema = rv.get("schemaname")
        if creating:
            schema, _, name = self.qualified_new(rv).partition(".")
            relation = (schema, name)
        elif schema:
            relation = (str(schema), name)
        else:
            relation = self.resolve_relation(None, name)
        catalog_rel = self.catalog.relation(*relation) if self.catalog else None
        kind = catalog_rel.kind if catalog_rel and not creating else (kind_hint or "unknown")
        self.facts.relations.add((relation[0], relation[1], kind, access))
        return f"{relation[0]}.{relation[1]}"

    # columns -----------------------------------------------------------------

    def use(self, sources: Iterable[Source], usage: str | None) -> None:
        if usage is None:
            return
        add = self.facts.columns.add
        for relation, column in sources:
            add((relation, column, usage))

    def expand(
        self, entry: RangeEntry, *, record_star: bool = True, unqualified: bool = False
    ) -> list[Column]:
        """All columns of a range entry (``t.*``; ``*`` is ``unqualified``: a join's
        merged USING columns appear once)."""
        if entry.relation is not None and record_star:
            self.facts.star.add(entry.relation)
            self.facts.star.update(entry.roots)
        if entry.columns is not None:
            if unqualified and entry.merged_away:
                return [c for c in entry.columns if c.name not in entry.merged_away]
            return list(entry.columns)
        if entry.relation is not None:
            return [Column("*", frozenset({(entry.relation, "*")}), True)]
        if entry.children:
            out: list[Column] = []
            for child in entry.children:
                out.extend(self.expand(child, record_star=record_star, unqualified=True))
            return out
        return [Column("*", entry.fallback or frozenset(), False)]

    def whole_row(self, entry: RangeEntry) -> frozenset[Source]:
        sources: set[Source] = set()
        for column in self.expand(entry):
            sources |= column.sources
        return frozenset(sources)

    def find_entry(self, qualifier: list[str], scope: Scope) -> RangeEntry | None:
        name = qualifier[-1]
        schema = qualifier[-2] if len(qualifier) >= 2 else None
        for s in scope.chain():
            for top in s.entries:
                for entry in top.flat():
                    if entry.refname != name:
                        continue
                    if schema is not None and entry.schema != schema:
                        continue
                    return entry
        return None

    def whole_row_entry(self, node: Any, scope: Scope) -> RangeEntry | None:
        typed = _node(node)
        if typed is None or typed[0] != "ColumnRef":
            return None
        fields = typed[1].get("fields", ())
        names = _names(fields)
        if fields and "A_Star" in fields[-1]:
            return self.find_entry(names, scope) if names else None
        if len(names) == 1 and not self.resolves(names[0], scope):
            return self.find_entry(names, scope)
        return None

    def column_ref(
        self, body: Node, scope: Scope | None, usage: str | None
    ) -> tuple[set[Source], bool]:
        fields = body.get("fields", ())
        if scope is None:
            return set(), False
        if fields and "A_Star" in fields[-1]:
            names = _names(fields[:-1])
            entries = (
                [e for e in [self.find_entry(names, scope)] if e is not None]
                if names
                else list(scope.entries)
            )
            sources: set[Source] = set()
            for entry in entries:
                sources |= self.whole_row(entry)
            self.use(sources, usage)
            return sources, False
        names = _names(fields)
        if not names:
            return set(), False
        found = self.lookup_column(names, scope)
        if found is None:
            return set(), False
        sources_found, direct = found
        self.use(sources_found, usage)
        return set(sources_found), direct

    def lookup_column(
        self, names: list[str], scope: Scope
    ) -> tuple[frozenset[Source], bool] | None:
        column = names[-1]
        if len(names) == 1:
            for s in scope.chain():
                known: list[Column] = []
                unknown: list[RangeEntry] = []
                for top in s.entries:
                    self._collect(top, column, known, unknown)
                if known:
                    unknown = []  # a relation the catalog does not know cannot shadow it
                if known or unknown:
                    sources: set[Source] = set()
                    for c in known:
                        sources |= c.sources
                    for candidate in unknown:
                        if candidate.relation is not None:
                            sources.add((candidate.relation, column))
                        elif candidate.fallback is not None:
                            sources |= candidate.fallback
                    direct = len(known) + len(unknown) == 1 and (
                        known[0].direct if known else unknown[0].relation is not None
                    )
                    return frozenset(sources), direct
            whole = self.find_entry(names, scope)
            if whole is not None:
                return self.whole_row(whole), False
            return None
        entry = self.find_entry(names[:-1], scope)
        if entry is not None:
            if entry.columns is not None:
                for c in entry.columns:
                    if c.name == column:
                        return c.sources, c.direct
                if entry.fallback is not None:
                    return entry.fallback, False
                # not a column of this relation: a field of a composite column below
            elif entry.relation is not None:
                return frozenset({(entry.relation, column)}), True
            elif entry.children:
                return self.lookup_column([column], _scope_of(entry.children))
            else:
                return entry.fallback or frozenset(), False
        # ``col.field`` of a composite-typed column, or ``table.col.field``
        for cut in range(len(names) - 1, 0, -1):
            found = self.lookup_column(names[:cut], scope)
            if found is not None:
                return found[0], False
        return None

    def _collect(
        self, entry: RangeEntry, column: str, known: list[Column], unknown: list[RangeEntry]
    ) -> None:
        if entry.columns is not None:
            for c in entry.columns:
                if c.name == column and column not in entry.merged_away:
                    known.append(c)
                    return
            return
        if entry.children:
            for child in entry.children:
                self._collect(child, column, known, unknown)
            return
        unknown.append(entry)

    # expressions ---------------------------------------------------------------

    def expr(self, node: Any, scope: Scope | None, usage: str | None) -> set[Source]:
        """The base columns an expression reads; records their usage, the functions it
        calls and the subqueries it contains."""
        if isinstance(node, list):
            out: set[Source] = set()
            for item in node:
                out |= self.expr(item, scope, usage)
            return out
        if not isinstance(node, dict):
            return set()
        typed = _node(node)
        if typed is None:
            out = set()
            for value in node.values():
                if isinstance(value, dict | list):
                    out |= self.expr(value, scope, usage)
            return out
        kind, body = typed
        handler = _EXPRESSIONS.get(kind)
        if handler is not None:
            return handler(self, body, scope, usage)
        if kind in _LEAVES:
            return set()
        out = set()
        for value in body.values():
            if isinstance(value, dict | list):
                out |= self.expr(value, scope, usage)
        return out

    def ex_column_ref(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        return self.column_ref(body, scope, usage)[0]

    def ex_func_call(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        schema, name = self.function_name(_names(body.get("funcname", ())))
        self.facts.functions.add(f"{schema}.{name}")
        args = body.get("args", ())
        if schema == "pg_catalog" or name in OPAQUE_FUNCTIONS:
            self.special_function(name, args)
        sources = self.expr(args, scope, usage)
        if body.get("agg_filter") is not None:
            self.expr(body["agg_filter"], scope, "filter")
        for item in body.get("agg_order", ()):
            self.expr(item.get("SortBy", {}).get("node"), scope, "order")
        over = body.get("over")
        if over:
            self.window_def(_unwrap(over, "WindowDef"), scope or Scope(None))
        return sources

    def function_name(self, names: list[str]) -> tuple[str, str]:
        if len(names) >= 2:
            return names[-2], names[-1]
        name = names[-1] if names else ""
        catalog = self.catalog
        if catalog is not None and catalog.functions:
            path = self.schemas
            lookup = path if "pg_catalog" in path else ("pg_catalog", *path)
            for candidate in lookup:
                if catalog.has_function(candidate, name):
                    return candidate, name
            return self.creation_schema(), name
        return "pg_catalog", name

    def special_function(self, name: str, args: Sequence[Any]) -> None:
        facts = self.facts
        if name == "set_config":
            facts.literal_dependent = True
            setting = constant_text(args[0]) if args else None
            value = constant_text(args[1]) if len(args) > 1 else None
            local = _bool_constant(args[2]) if len(args) > 2 else False
            if facts.set_fact is None:
                facts.set_fact = {
                    "kind": "set_config",
                    "name": setting.lower() if setting is not None else None,
                    "local": bool(local),
                }
            if setting is None:
                facts.unresolved = True
            elif setting.lower() == "search_path":
                if value is None:
                    facts.effects.append(SessionEffect("unknown_search_path"))
                    facts.unresolved = True
                else:
                    facts.effects.append(
                        SessionEffect("search_path", value=value, local=bool(local))
                    )
            return
        sql_text = SQL_TEXT_FUNCTIONS.get(name)
        if sql_text is not None and sql_text[1] in (None, len(args)):
            position = sql_text[0]
            text = constant_text(args[position]) if len(args) > position else None
            facts.literal_dependent = True
            if text is None:
                facts.unresolved = True
            else:
                self.nested_text(text)
            return
        if name in RELATION_DUMP_FUNCTIONS:
            target = constant_text(args[0]) if args else None
            facts.literal_dependent = True
            if target is None or not _QUALIFIED_NAME.fullmatch(target.strip()):
                facts.unresolved = True
            else:
                # analyzed as the dump it is, never run
                self.nested_text("SELECT * FROM " + target.strip())  # noqa: S608
            return
        if name in OPAQUE_FUNCTIONS:
            facts.unresolved = True

    def ex_sublink(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        sources: set[Source] = set()
        if body.get("testexpr") is not None:
            sources |= self.expr(body["testexpr"], scope, usage)
        sub = _node(body.get("subselect"))
        if sub is not None and sub[0] == "SelectStmt":
            for column in self.select(sub[1], scope, usage):
                sources |= column.sources
        return sources

    def ex_indirection(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        indirection = body.get("indirection", ())
        if scope is not None and indirection:
            first = _string(indirection[0])
            entry = self.whole_row_entry(body.get("arg"), scope)
            if entry is not None and first is not None:
                found = self.lookup_column([first], _scope_of([entry]))
                if found is not None:
                    self.use(found[0], usage)
                    self.expr(indirection[1:], scope, usage)
                    return set(found[0])
        return self.expr(body.get("arg"), scope, usage) | self.expr(indirection, scope, usage)

    def ex_index_elem(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        """ON CONFLICT (column) and index columns: a column by name, or an expression."""
        if body.get("name") and scope is not None:
            return self.column_ref({"fields": [{"String": {"sval": body["name"]}}]}, scope, usage)[
                0
            ]
        return self.expr(body.get("expr"), scope, usage)

    def ex_type_cast(self, body: Node, scope: Scope | None, usage: str | None) -> set[Source]:
        return self.expr(body.get("arg"), scope, usage)

    # statements ----------------------------------------------------------------

    def st_insert(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        scope = Scope(scope)
        if body.get("withClause"):
            self.with_clause(_unwrap(body["withClause"], "WithClause"), scope)
        target = self.range_var(body.get("relation", {}), scope, access="write")
        names = [str(c.get("ResTarget", {}).get("name", "")) for c in body.get("cols", ())]
        if not names:
            names = [c.name for c in target.columns] if target.columns is not None else ["*"]
        relation = target.relation or ""
        for name in names:
            facts.columns.add((relation, name, "write"))
        select = _node(body.get("selectStmt"))
        if select is not None:
            for column in self.select(select[1], scope, None):
                self.use(column.sources, "output")
        conflict = _unwrap(body.get("onConflictClause"), "OnConflictClause")
        own = Scope(scope)
        own.entries.append(target)
        if conflict:
            infer = _unwrap(conflict.get("infer"), "InferClause")
            self.expr(infer.get("indexElems"), own, "filter")
            self.expr(infer.get("whereClause"), own, "filter")
            upsert = Scope(scope)
            excluded = RangeEntry("excluded", columns=target.columns, relation=None)
            if target.columns is None and target.relation is not None:
                excluded.fallback = frozenset({(target.relation, "*")})
            upsert.entries.extend([target, excluded])
            self.set_targets(conflict.get("targetList", ()), upsert, relation)
            if conflict.get("whereClause") is not None:
                self.expr(conflict["whereClause"], upsert, "filter")
        facts.outputs = self.returning(body, own)

    def set_targets(self, targets: Iterable[Any], scope: Scope, relation: str) -> None:
        for target in targets:
            res = target.get("ResTarget", {})
            if res.get("name"):
                self.facts.columns.add((relation, str(res["name"]), "write"))
            self.expr(res.get("val"), scope, "output")

    def returning(self, body: Node, scope: Scope) -> list[Column]:
        items = body.get("returningList")
        if items is None:
            clause = _unwrap(body.get("returningClause"), "ReturningClause")
            items = clause.get("exprs", ())
        # in a data-modifying CTE, RETURNING feeds the query: used only where it uses it
        usage = None if self.in_cte_dml else "output"
        self.in_cte_dml = False
        return self.targets(items or (), scope, usage)

    def st_update(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        scope = Scope(scope)
        if body.get("withClause"):
            self.with_clause(_unwrap(body["withClause"], "WithClause"), scope)
        target = self.range_var(body.get("relation", {}), scope, access="write")
        scope.entries.append(target)
        for item in body.get("fromClause", ()):
            self.from_item(item, scope)
        self.set_targets(body.get("targetList", ()), scope, target.relation or "")
        if body.get("whereClause") is not None:
            facts.has_where = True
            self.expr(body["whereClause"], scope, "filter")
        facts.outputs = self.returning(body, scope)

    def st_delete(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        scope = Scope(scope)
        if body.get("withClause"):
            self.with_clause(_unwrap(body["withClause"], "WithClause"), scope)
        target = self.range_var(body.get("relation", {}), scope, access="write")
        scope.entries.append(target)
        for item in body.get("usingClause", ()):
            self.from_item(item, scope)
        if body.get("whereClause") is not None:
            facts.has_where = True
            self.expr(body["whereClause"], scope, "filter")
        facts.outputs = self.returning(body, scope)

    def st_merge(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        scope = Scope(scope)
        if body.get("withClause"):
            self.with_clause(_unwrap(body["withClause"], "WithClause"), scope)
        self.from_item(body.get("sourceRelation"), scope)
        target = self.range_var(body.get("relation", {}), scope, access="write")
        scope.entries.append(target)
        relation = target.relation or ""
        self.expr(body.get("joinCondition"), scope, "join")
        for when in body.get("mergeWhenClauses", ()):
            clause = when.get("MergeWhenClause", {})
            if clause.get("condition") is not None:
                self.expr(clause["condition"], scope, "filter")
            if clause.get("commandType") == "CMD_INSERT":
                names = [
                    str(t.get("ResTarget", {}).get("name", ""))
                    for t in clause.get("targetList", ())
                ]
                if not names:
                    names = [c.name for c in target.columns] if target.columns else ["*"]
                for name in names:
                    facts.columns.add((relation, name, "write"))
                self.expr(clause.get("values"), scope, "output")
            else:
                self.set_targets(clause.get("targetList", ()), scope, relation)
        facts.outputs = self.returning(body, scope)

    def st_copy(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        direction = "from" if body.get("is_from") else "to"
        if body.get("is_program"):
            target = "program"
        elif body.get("filename") is not None:
            target = "file"
        else:
            target = "stdin" if direction == "from" else "stdout"
        relation = ""
        query = _node(body.get("query"))
        usage = "write" if direction == "from" else "output"
        if body.get("relation"):
            copy_scope = Scope(None)
            entry = self.range_var(
                body["relation"], copy_scope, access="write" if direction == "from" else "read"
            )
            copy_scope.entries.append(entry)
            relation = entry.relation or ""
            names = _names(body.get("attlist", ()))
            if not names:
                columns = self.expand(entry)
            elif entry.columns is not None:
                columns = [c for c in entry.columns if c.name in names]
            else:
                columns = [Column(n, frozenset({(relation, n)}), True) for n in names]
            for column in columns:
                if direction == "from":
                    facts.columns.update((r, c, "write") for r, c in column.sources)
                else:
                    self.use(column.sources, usage)
            if direction == "to":
                facts.outputs = columns
            if body.get("whereClause") is not None:
                facts.has_where = True
                self.expr(body["whereClause"], copy_scope, "filter")
        elif query is not None:
            span = self.copy_query_span(start, end)
            child, _ = self.nested(query[0], query[1], span, scope)
            facts.outputs = child.outputs
        facts.copy = {
            "direction": direction,
            "target": target,
            "relation": relation,
            "query": query is not None,
        }

    def st_variable_set(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        kind = body.get("kind", "")
        name = str(body.get("name") or ("all" if kind == "VAR_RESET_ALL" else "")).lower()
        local = bool(body.get("is_local"))
        self.hide_args(body)
        if kind in ("VAR_RESET", "VAR_RESET_ALL"):
            set_kind = "reset"
        elif name == "role":
            set_kind = "set_role"
        elif name == "session_authorization":
            set_kind = "set_session_authorization"
        else:
            set_kind = "set"
        facts.set_fact = {"kind": set_kind, "name": name, "local": local}
        if name in ("search_path", "all"):
            facts.literal_dependent = True
            if kind == "VAR_SET_VALUE" and name == "search_path":
                values = [constant_text(a) for a in body.get("args", ())]
                value = sqltext.join_search_path([v for v in values if v is not None])
                facts.effects.append(SessionEffect("search_path", value=value, local=local))
            elif kind in ("VAR_RESET", "VAR_RESET_ALL", "VAR_SET_DEFAULT"):
                facts.effects.append(SessionEffect("search_path", value=None, local=local))
            else:
                facts.effects.append(SessionEffect("unknown_search_path"))

    def hide_args(self, body: Node) -> None:
        """SET values never reach the document: their tokens become ``$n``."""
        for arg in body.get("args", ()):
            typed = _node(arg)
            if typed is None or typed[0] not in ("A_Const", "TypeCast"):
                continue
            location = _first_location(arg)
            if location is not None:
                self.facts.hidden.add(self.tc.char(location))

    def st_alter_set(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        for setstmt in _find_nodes(body, "VariableSetStmt"):
            self.hide_args(setstmt)
        if body.get("setstmt"):
            self.hide_args(_unwrap(body["setstmt"], "VariableSetStmt"))
        self.generic_statement(body)

    def st_show(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        self.facts.outputs = [Column(str(body.get("name", "")), frozenset(), False)]

    def st_discard(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        if body.get("target") in ("DISCARD_ALL", "DISCARD_TEMP"):
            self.facts.effects.append(SessionEffect("discard_temp"))
        if body.get("target") == "DISCARD_ALL":
            # RESET ALL, DEALLOCATE ALL, CLOSE ALL (and more) in one
            self.facts.effects.extend(
                [
                    SessionEffect("search_path", value=None),
                    SessionEffect("deallocate"),
                    SessionEffect("close"),
                ]
            )

    def st_transaction(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        kind = body.get("kind", "")
        effect = {
            "TRANS_STMT_BEGIN": "begin",
            "TRANS_STMT_START": "begin",
            "TRANS_STMT_COMMIT": "commit",
            "TRANS_STMT_ROLLBACK": "rollback",
            "TRANS_STMT_PREPARE": "commit",
            "TRANS_STMT_SAVEPOINT": "savepoint",
            "TRANS_STMT_RELEASE": "release",
            "TRANS_STMT_ROLLBACK_TO": "rollback_to",
        }.get(kind)
        if effect:
            name = body.get("savepoint_name")
            self.facts.effects.append(SessionEffect(effect, name=str(name) if name else None))

    def st_do(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        facts.literal_dependent = True
        code = ""
        language = "plpgsql"
        for arg in body.get("args", ()):
            elem = arg.get("DefElem", {})
            if elem.get("defname") == "as":
                code = constant_text(elem.get("arg")) or ""
            elif elem.get("defname") == "language":
                language = (constant_text(elem.get("arg")) or "").lower()
        if language != "plpgsql":
            facts.unresolved = True
            return
        self.plpgsql_body(f"DO {_dollar_quote(code)}")

    def plpgsql_body(self, source: str) -> None:
        facts = self.facts
        try:
            pieces = plpgsql.embedded_sql(source)
        except pg_parser.ParseError:
            facts.unresolved = True
            return
        for piece in pieces:
            if piece.kind == "statement":
                self.nested_text(piece.text)
            elif piece.kind == "expression":
                self.nested_text_expression(piece.text)
            else:
                constant = _constant_expression(piece.text)
                if constant is None:
                    facts.unresolved = True
                else:
                    self.nested_text(constant)

    def nested_text_expression(self, text: str) -> None:
        """A PL/pgSQL expression: nested only when it reads relations or calls functions."""
        facts = self.facts
        probe = FactsBuilder()
        self.facts = probe
        try:
            documents = self.nested_text(f"SELECT {text}")
        finally:
            self.facts = facts
        if probe.unresolved and not documents:
            facts.unresolved = True
        for document in documents:
            if document["relations"] or document["functions"] or document["unresolved"]:
                facts.merge(_builder_of(document), document)
        facts.literal_dependent = True

    def st_create_function(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        facts.literal_dependent = True
        language = "sql" if body.get("sql_body") is not None else ""
        code: list[str] = []
        for option in body.get("options", ()):
            elem = option.get("DefElem", {})
            if elem.get("defname") == "language":
                language = (constant_text(elem.get("arg")) or "").lower()
            elif elem.get("defname") == "as":
                arg = elem.get("arg", {})
                items = arg.get("List", {}).get("items", ()) if "List" in arg else [arg]
                code = [s for s in (_string(i) for i in items) if s is not None]
            elif elem.get("defname") == "set":
                self.hide_args(_unwrap(elem.get("arg"), "VariableSetStmt"))
        if body.get("sql_body") is not None:
            for stmt in _find_statements(body["sql_body"]):
                self.nested(stmt[0], stmt[1], None)
            for ret in _find_nodes(body["sql_body"], "ReturnStmt"):
                self.expr(ret.get("returnval"), None, None)
            return
        if language == "sql" and code:
            self.nested_text(code[0])
        elif language == "plpgsql" and code:
            self.plpgsql_body(self.tc.text[start:end])
        elif language in ("internal", "c"):
            pass  # compiled into the server or a module: nothing to read
        elif code:
            facts.unresolved = True

    def st_prepare(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        query = _node(body.get("query"))
        if query is None:
            return
        span = self.after_keyword(start, end, ("AS",))
        child, document = self.nested(query[0], query[1], span)
        name = str(body.get("name", ""))
        prepared = PreparedQuery(document, child.limit_param, self.env.resolution())
        self.facts.effects.append(SessionEffect("prepare", name=name, query=prepared))

    def st_execute(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        facts.session_dependent = True
        name = str(body.get("name", ""))
        prepared = self.env.prepared.get(name)
        if prepared is not None:
            if prepared.resolution is not None and prepared.resolution != self.env.resolution():
                # The server analyzes it again under today's search path, which may name
                # other relations than the facts kept from PREPARE: which it reads is not
                # known (fail closed).
                facts.unresolved = True
            self.adopt(prepared)
            params = body.get("params", ())
            if prepared.limit_param is not None and prepared.limit_param <= len(params):
                self.rows_returned(
                    sqltext.parse_int(constant_text(params[prepared.limit_param - 1]))
                )
        else:
            facts.unresolved = True
        # after adopt: the prepared statement is nested[0], statements in the arguments after it
        self.expr(body.get("params"), None, None)

    def adopt(self, prepared: PreparedQuery) -> None:
        """Use a prepared statement's (or cursor's) facts as this statement's nested
        statement, its outputs as this statement's outputs."""
        facts = self.facts
        document = prepared.facts
        facts.merge(_builder_of(document), document)
        facts.outputs = [
            Column(str(o["name"]), frozenset(_source(s) for s in o["sources"]), bool(o["direct"]))
            for o in document["outputs"]
        ]
        facts.limit = document.get("limit")
        facts.has_where = bool(document.get("has_where"))

    def rows_returned(self, limit: int | None) -> None:
        """This statement returns at most ``limit`` rows of the query it adopted; so does the
        query as it runs here, its copy in ``nested`` (a policy may judge either)."""
        facts = self.facts
        facts.limit = limit
        if facts.nested:  # not for an unknown cursor
            facts.nested[0] = {**facts.nested[0], "limit": limit}

    def st_declare(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        query = _node(body.get("query"))
        if query is None:
            return
        span = self.after_keyword(start, end, ("FOR",))
        child, document = self.nested(query[0], query[1], span)
        # a Bind value of the query's LIMIT $n is the cursor's LIMIT (AnalyzedStatement.bind)
        self.facts.limit_param = child.limit_param
        self.facts.effects.append(
            SessionEffect(
                "declare",
                name=str(body.get("portalname", "")),
                local=not int(body.get("options", 0)) & _CURSOR_OPT_HOLD,
                query=PreparedQuery(document, child.limit_param),
            )
        )

    def st_fetch(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        facts = self.facts
        facts.session_dependent = True
        name = str(body.get("portalname", ""))
        cursor = self.env.cursors.get(name)
        if cursor is None:
            facts.unresolved = True
        else:
            self.adopt(cursor)
        if body.get("ismove"):
            facts.outputs = []
            facts.limit = None
            return
        direction = body.get("direction", "FETCH_FORWARD")
        count = int(body.get("howMany", 0))
        # the rows this FETCH can return: its count, and never more than the cursor's
        # query returns in all (adopt set facts.limit to the query's LIMIT)
        if direction in ("FETCH_ABSOLUTE", "FETCH_RELATIVE"):
            self.rows_returned(1)
        elif count != FETCH_ALL:
            count = max(count, 1)
            self.rows_returned(count if facts.limit is None else min(count, facts.limit))

    def st_close(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        name = body.get("portalname")
        if name is None:
            self.facts.command = "CLOSE CURSOR ALL"
        self.facts.effects.append(SessionEffect("close", name=name))

    def st_deallocate(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        name = body.get("name")
        if name is None or body.get("isall"):
            self.facts.command = "DEALLOCATE ALL"
            name = None
        self.facts.effects.append(SessionEffect("deallocate", name=name))

    def st_explain(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        query = _node(body.get("query"))
        if query is None:
            return
        span = self.explain_span(start, end)
        self.nested(query[0], query[1], span)

    def st_create_table_as(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        into = _unwrap(body.get("into"), "IntoClause")
        kind = "materialized_view" if body.get("objtype") == "OBJECT_MATVIEW" else "table"
        if into:
            self.into_target(into, kind)
        query = _node(body.get("query"))
        if query is None:
            return
        span: tuple[int, int] | None = (start, end)
        if not body.get("is_select_into"):
            span = self.after_keyword(start, end, ("AS",), strip_tail=("WITH",))
        child, _ = self.nested(query[0], query[1], span)
        self.created_into(
            into, child, "materialized_view" if kind == "materialized_view" else "table"
        )

    def created_into(self, into: Node, child: FactsBuilder, kind: str) -> None:
        """The new relation of CREATE TABLE AS / SELECT INTO carries its query's lineage
        (its rows are copies of those columns)."""
        clause = _unwrap(into, "IntoClause")
        rv = _unwrap(clause.get("rel"), "RangeVar")
        if not rv:
            return
        qualified = self.qualified_new(rv)
        reads = child.relations if kind == "materialized_view" else ()
        self.created(qualified, kind, child.outputs, reads, _names(clause.get("colNames", ())))

    def into_target(self, into: Node, kind: str = "table") -> None:
        clause = _unwrap(into, "IntoClause")
        rv = _unwrap(clause.get("rel"), "RangeVar")
        if rv:
            self.add_relation_rv(rv, "ddl", kind_hint=kind, creating=True)
            self.add_relation_rv(rv, "write", kind_hint=kind, creating=True)

    def st_view(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        rv = _unwrap(body.get("view"), "RangeVar")
        qualified = self.add_relation_rv(rv, "ddl", kind_hint="view", creating=True) if rv else ""
        query = _node(body.get("query"))
        if query is None:
            return
        span = self.after_keyword(start, end, ("AS",), strip_tail=("WITH",))
        child, _ = self.nested(query[0], query[1], span)
        if qualified:
            self.created(
                qualified, "view", child.outputs, child.relations, _names(body.get("aliases", ()))
            )

    def st_create_table(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        rv = _unwrap(body.get("relation"), "RangeVar")
        if rv:
            self.add_relation_rv(rv, "ddl", kind_hint="table", creating=True)
            qualified = self.qualified_new(rv)
            elements = body.get("tableElts", ())
            names = [str(e["ColumnDef"].get("colname", "")) for e in elements if "ColumnDef" in e]
            derived = body.get("inhRelations") or body.get("partbound") or body.get("ofTypename")
            if any("TableLikeClause" in e for e in elements) or derived:
                self.created(qualified, "table", None)
            else:
                self.created(
                    qualified,
                    "table",
                    [Column(n, frozenset({(qualified, n)}), True) for n in names],
                )
        rest = {k: v for k, v in body.items() if k != "relation"}
        # INHERITS, PARTITION OF, LIKE, REFERENCES: the schema of those tables is involved
        for other in _find_rangevars(rest):
            self.add_relation_rv(other, "ddl", kind_hint=None)
        self.expr(_without_rangevars(rest), None, None)

    def st_drop(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        kind = {
            "OBJECT_TABLE": "table",
            "OBJECT_VIEW": "view",
            "OBJECT_MATVIEW": "materialized_view",
            "OBJECT_FOREIGN_TABLE": "foreign_table",
            "OBJECT_SEQUENCE": "sequence",
            "OBJECT_INDEX": "index",
        }.get(body.get("removeType", ""))
        if kind is None:
            return
        for obj in body.get("objects", ()):
            names = _names(obj.get("List", {}).get("items", ()))
            if not names:
                continue
            rv: Node = {"relname": names[-1]}
            if len(names) > 1:
                rv["schemaname"] = names[-2]
            dropped = self.add_relation_rv(rv, "ddl", kind_hint=kind)
            self.facts.effects.append(SessionEffect("dropped", name=dropped))

    def st_truncate(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        for rel in body.get("relations", ()):
            self.add_relation_rv(rel.get("RangeVar", {}), "write", kind_hint=None)

    def st_lock(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        for rel in body.get("relations", ()):
            self.add_relation_rv(rel.get("RangeVar", {}), "write", kind_hint=None)

    def st_grant(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        if body.get("objtype") in ("OBJECT_TABLE", "OBJECT_SEQUENCE") and (
            body.get("targtype") == "ACL_TARGET_OBJECT"
        ):
            for obj in body.get("objects", ()):
                rv = obj.get("RangeVar")
                if rv:
                    self.add_relation_rv(rv, "ddl", kind_hint=None)

    def st_call(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        funccall = body.get("funccall")
        if funccall:
            self.ex_func_call(_unwrap(funccall, "FuncCall"), None, None)

    def st_refresh(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        rv = _unwrap(body.get("relation"), "RangeVar")
        if rv:
            self.add_relation_rv(rv, "write", kind_hint="materialized_view")

    def st_rule(self, body: Node, start: int, end: int, scope: Scope | None) -> None:
        rv = _unwrap(body.get("relation"), "RangeVar")
        if rv:
            self.add_relation_rv(rv, "ddl", kind_hint=None)
        for action in body.get("actions", ()):
            typed = _node(action)
            if typed is not None:
                self.nested(typed[0], typed[1], None)

    # text spans of embedded queries ----------------------------------------------

    def _tokens_in(self, start: int, end: int) -> list[sqltext.Token]:
        return [
            t
            for t in self.tc.tokens
            if t.start >= start and t.end <= end and t.name not in ("C_COMMENT", "SQL_COMMENT")
        ]

    def after_keyword(
        self,
        start: int,
        end: int,
        keywords: tuple[str, ...],
        strip_tail: tuple[str, ...] = (),
    ) -> tuple[int, int] | None:
        tokens = self._tokens_in(start, end)
        depth = 0
        for index, token in enumerate(tokens):
            if token.name == "ASCII_40":
                depth += 1
            elif token.name == "ASCII_41":
                depth -= 1
            elif depth == 0 and token.name in keywords and index + 1 < len(tokens):
                stop = end
                if strip_tail:
                    stop = self._strip_tail(tokens[index + 1 :], end, strip_tail)
                return tokens[index + 1].start, stop
        return None

    def _strip_tail(self, tokens: list[sqltext.Token], end: int, keywords: tuple[str, ...]) -> int:
        """End before a trailing ``WITH [NO] DATA`` / ``WITH … CHECK OPTION``."""
        depth = 0
        for token in tokens:
            if token.name == "ASCII_40":
                depth += 1
            elif token.name == "ASCII_41":
                depth -= 1
            elif depth == 0 and token.name in keywords:
                text = self.tc.text[token.start : end].upper().split()
                if text[-1:] in (["DATA"], ["OPTION"]):
                    return token.start
        return end

    def explain_span(self, start: int, end: int) -> tuple[int, int] | None:
        tokens = self._tokens_in(start, end)
        index = 1
        while index < len(tokens) and tokens[index].name in ("ANALYZE", "VERBOSE"):
            index += 1
        if index < len(tokens) and tokens[index].name == "ASCII_40":
            following = tokens[index + 1].name if index + 1 < len(tokens) else ""
            if following not in ("SELECT", "VALUES", "WITH", "TABLE", "ASCII_40"):
                depth = 0
                while index < len(tokens):
                    if tokens[index].name == "ASCII_40":
                        depth += 1
                    elif tokens[index].name == "ASCII_41":
                        depth -= 1
                        if depth == 0:
                            index += 1
                            break
                    index += 1
        if index < len(tokens):
            return tokens[index].start, end
        return None

    def copy_query_span(self, start: int, end: int) -> tuple[int, int] | None:
        tokens = self._tokens_in(start, end)
        depth = 0
        begin = None
        for token in tokens:
            if token.name == "ASCII_40":
                depth += 1
                if depth == 1 and begin is None:
                    begin = token.end
            elif token.name == "ASCII_41":
                depth -= 1
                if depth == 0 and begin is not None:
                    return begin, token.start
        return None

    def cte_span(self, cte: Node) -> tuple[int, int] | None:
        location = cte.get("location")
        if location is None:
            return None
        begin = self.tc.char(int(location))
        tokens = [t for t in self.tc.tokens if t.start >= begin]
        depth = 0
        seen_as = False
        inner_start = None
        for token in tokens:
            if not seen_as:
                if token.name == "ASCII_40":
                    depth += 1
                elif token.name == "ASCII_41":
                    depth -= 1
                elif token.name == "AS" and depth == 0:
                    seen_as = True
                continue
            if token.name == "ASCII_40":
                depth += 1
                if depth == 1 and inner_start is None:
                    inner_start = token.end
            elif token.name == "ASCII_41":
                depth -= 1
                if depth == 0 and inner_start is not None:
                    return inner_start, token.start
        return None


def _runs_each_target_once(body: Node) -> bool:
    """Whether the server runs this SELECT's set_config calls exactly once: no FROM,
    WHERE, GROUP BY, HAVING, LIMIT, set operation or CTE, and every target a set_config
    call of its own (``SELECT set_config('search_path', 'x', false)``, as pg_dump sends)."""
    if any(
        body.get(clause)
        for clause in (
            "fromClause",
            "whereClause",
            "groupClause",
            "havingClause",
            "limitCount",
            "limitOffset",
            "withClause",
            "valuesLists",
        )
    ):
        return False
    if body.get("op", "SETOP_NONE") != "SETOP_NONE":
        return False
    for target in body.get("targetList", ()):
        call = target.get("ResTarget", {}).get("val", {}).get("FuncCall")
        if call is None or call.get("agg_filter") or call.get("over"):
            return False
        if _names(call.get("funcname", ()))[-1:] != ["set_config"]:
            return False  # set_config inside another call may be skipped (CASE in it)
    return True


def apply_relation_effect(
    created: dict[tuple[str, str], CreatedRelation], effect: SessionEffect
) -> bool:
    """Apply a created/dropped/discard_temp effect; whether it was one."""
    if effect.kind == "created" and effect.relation is not None:
        created[effect.relation.key] = effect.relation
    elif effect.kind == "dropped" and effect.name:
        schema, _, name = effect.name.partition(".")
        created.pop((schema, name), None)
    elif effect.kind == "discard_temp":
        for key in [k for k in created if k[0] == "pg_temp"]:
            del created[key]
    else:
        return False
    return True


def _builder_of(document: Mapping[str, Any]) -> FactsBuilder:
    """The roll-up part of a finished facts document."""
    return FactsBuilder(
        relations={(r["schema"], r["name"], r["kind"], r["access"]) for r in document["relations"]},
        columns={(c["relation"], c["column"], c["usage"]) for c in document["columns"]},
        star=set(document["star"]),
        functions=set(document["functions"]),
        unresolved=bool(document["unresolved"]),
    )


def _source(text: str) -> Source:
    relation, _, column = text.rpartition(".")
    return relation, column


def _scope_of(entries: list[RangeEntry]) -> Scope:
    scope = Scope(None)
    scope.entries = list(entries)
    return scope


def _common_names(left: list[RangeEntry], right: list[RangeEntry]) -> list[str]:
    """NATURAL JOIN's columns: the names both sides have, in the left side's order."""

    def names(entries: list[RangeEntry]) -> list[str]:
        out: list[str] = []
        for entry in entries:
            for e in entry.flat():
                out.extend(c.name for c in e.columns or () if c.name not in e.merged_away)
        return out

    right_names = set(names(right))
    return list(dict.fromkeys(n for n in names(left) if n in right_names))


def _rename(columns: list[Column] | None, aliases: Sequence[str]) -> list[Column]:
    if columns is None:
        return []
    if not aliases:
        return list(columns)
    out = list(columns)
    for index, alias in enumerate(aliases[: len(out)]):
        out[index] = Column(alias, out[index].sources, out[index].direct)
    return out


def _inherited(qualified: str, column: str, roots: Sequence[CatalogRelation]) -> frozenset[Source]:
    """The sources of a table's column: the same column of the roots it descends from
    that have it (a column of the child's own: the child's)."""
    inherited = frozenset(
        (root.qualified, column) for root in roots if column in root.column_names()
    )
    return inherited or frozenset({(qualified, column)})


def _compares_rows(body: Node) -> bool:
    """Whether a set operation compares rows: UNION, INTERSECT and EXCEPT, and the ALL
    forms of the last two (they match rows); only UNION ALL appends without comparing."""
    return body.get("op") != "SETOP_UNION" or not body.get("all")


def _union_columns(left: list[Column], right: list[Column]) -> list[Column]:
    out: list[Column] = []
    for index, column in enumerate(left):
        if index < len(right):
            other = right[index]
            out.append(
                Column(
                    column.name,
                    column.sources | other.sources,
                    column.direct and other.direct,
                )
            )
        else:
            out.append(column)
    return out


def _has_where(body: Node) -> bool:
    if body.get("op", "SETOP_NONE") != "SETOP_NONE":
        return _has_where(_unwrap(body["larg"], "SelectStmt")) and _has_where(
            _unwrap(body["rarg"], "SelectStmt")
        )
    return body.get("whereClause") is not None


def _first_location(node: Any) -> int | None:
    if isinstance(node, dict):
        best: int | None = None
        for key, value in node.items():
            if key == "location" and isinstance(value, int) and value >= 0:
                best = value if best is None else min(best, value)
            elif isinstance(value, dict | list):
                found = _first_location(value)
                if found is not None:
                    best = found if best is None else min(best, found)
        return best
    if isinstance(node, list):
        found_any = [f for f in (_first_location(v) for v in node) if f is not None]
        return min(found_any) if found_any else None
    return None


def _find_nodes(node: Any, kind: str) -> Iterator[Node]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == kind and isinstance(value, dict):
                yield value
                yield from _find_nodes(value, kind)
            elif isinstance(value, dict | list):
                yield from _find_nodes(value, kind)
    elif isinstance(node, list):
        for item in node:
            yield from _find_nodes(item, kind)


def _find_statements(node: Any) -> Iterator[tuple[str, Node]]:
    typed = _node(node)
    if typed is not None and typed[0] in _STATEMENTS:
        yield typed
        return
    if isinstance(node, dict):
        for value in node.values():
            yield from _find_statements(value)
    elif isinstance(node, list):
        for item in node:
            yield from _find_statements(item)


def _is_rangevar(value: Any) -> bool:
    return isinstance(value, dict) and "relname" in value and "RangeVar" not in value


def _find_rangevars(node: Any) -> Iterator[Node]:
    """RangeVar bodies, wrapped (``{"RangeVar": …}``) or not (typed fields)."""
    if isinstance(node, dict):
        if _is_rangevar(node):
            yield node
            return
        for key, value in node.items():
            if key == "RangeVar" and isinstance(value, dict):
                yield value
            elif isinstance(value, dict | list):
                yield from _find_rangevars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _find_rangevars(item)


def _without_rangevars(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _without_rangevars(v)
            for k, v in node.items()
            if k != "RangeVar" and not _is_rangevar(v)
        }
    if isinstance(node, list):
        return [_without_rangevars(v) for v in node]
    return node


def _bool_constant(node: Any) -> bool:
    text = constant_text(node)
    return (text or "").strip().lower() in ("true", "t", "on", "yes", "y", "1")


def _constant_expression(text: str) -> str | None:
    """The SQL text of ``EXECUTE <expr>`` when the expression is one string constant."""
    try:
        tree = json.loads(pg_parser.parse_sql_json(f"SELECT {text}"))
    except pg_parser.ParseError:
        return None
    stmts = tree.get("stmts", ())
    if len(stmts) != 1:
        return None
    targets = stmts[0].get("stmt", {}).get("SelectStmt", {}).get("targetList", ())
    if len(targets) != 1:
        return None
    value = targets[0].get("ResTarget", {}).get("val")
    typed = _node(value)
    if typed is None or typed[0] != "A_Const" or "sval" not in typed[1]:
        return None
    return str(typed[1]["sval"].get("sval", ""))


def _dollar_quote(code: str) -> str:
    tag = "$pgw$"
    while tag in code:
        tag = tag[:-1] + "x$"
    return f"{tag}{code}{tag}"


def _fingerprint(sql: str) -> str:
    if not sql:
        return ""
    try:
        return str(pg_parser.fingerprint(sql))
    except pg_parser.ParseError:
        return ""


_SQL_VALUE_NAMES = {
    "SVFOP_CURRENT_DATE": "current_date",
    "SVFOP_CURRENT_TIME": "current_time",
    "SVFOP_CURRENT_TIME_N": "current_time",
    "SVFOP_CURRENT_TIMESTAMP": "current_timestamp",
    "SVFOP_CURRENT_TIMESTAMP_N": "current_timestamp",
    "SVFOP_LOCALTIME": "localtime",
    "SVFOP_LOCALTIME_N": "localtime",
    "SVFOP_LOCALTIMESTAMP": "localtimestamp",
    "SVFOP_LOCALTIMESTAMP_N": "localtimestamp",
    "SVFOP_CURRENT_ROLE": "current_role",
    "SVFOP_CURRENT_USER": "current_user",
    "SVFOP_USER": "user",
    "SVFOP_SESSION_USER": "session_user",
    "SVFOP_CURRENT_CATALOG": "current_catalog",
    "SVFOP_CURRENT_SCHEMA": "current_schema",
}


def _column_name(node: Any) -> str:
    """PostgreSQL's FigureColname, for the common cases."""
    typed = _node(node)
    if typed is None:
        return "?column?"
    kind, body = typed
    if kind == "ColumnRef":
        names = _names(body.get("fields", ()))
        return names[-1] if names else "?column?"
    if kind == "A_Indirection":
        for item in reversed(body.get("indirection", ())):
            name = _string(item)
            if name is not None:
                return name
        return _column_name(body.get("arg"))
    if kind == "FuncCall":
        names = _names(body.get("funcname", ()))
        return names[-1] if names else "?column?"
    if kind == "TypeCast":
        inner = _column_name(body.get("arg"))
        if inner != "?column?":
            return inner
        names = _names(_unwrap(body.get("typeName"), "TypeName").get("names", ()))
        return names[-1] if names else "?column?"
    if kind == "CollateClause":
        return _column_name(body.get("arg"))
    if kind == "SubLink":
        link = body.get("subLinkType", "")
        if link == "EXISTS_SUBLINK":
            return "exists"
        if link == "ARRAY_SUBLINK":
            return "array"
        if link in ("EXPR_SUBLINK", "MULTIEXPR_SUBLINK"):
            sub = _unwrap(body.get("subselect"), "SelectStmt")
            targets = sub.get("targetList", ())
            if targets:
                res = targets[0].get("ResTarget", {})
                return str(res.get("name") or _column_name(res.get("val")))
        return "?column?"
    if kind == "CaseExpr":
        return "case"
    if kind == "A_ArrayExpr":
        return "array"
    if kind == "RowExpr":
        return "row"
    if kind == "CoalesceExpr":
        return "coalesce"
    if kind == "MinMaxExpr":
        return "greatest" if body.get("op") == "IS_GREATEST" else "least"
    if kind == "NullIfExpr":
        return "nullif"
    if kind == "SQLValueFunction":
        return _SQL_VALUE_NAMES.get(body.get("op", ""), "?column?")
    if kind == "XmlExpr":
        return {
            "IS_XMLCONCAT": "xmlconcat",
            "IS_XMLELEMENT": "xmlelement",
            "IS_XMLFOREST": "xmlforest",
            "IS_XMLPARSE": "xmlparse",
            "IS_XMLPI": "xmlpi",
            "IS_XMLROOT": "xmlroot",
            "IS_XMLSERIALIZE": "xmlserialize",
            "IS_DOCUMENT": "?column?",
        }.get(body.get("op", ""), "?column?")
    if kind == "XmlSerialize":
        return "xmlserialize"
    if kind == "GroupingFunc":
        return "grouping"
    if kind == "MergeSupportFunc":
        return "merge_action"
    if kind.startswith("Json"):
        return {
            "JsonObjectConstructor": "json_object",
            "JsonArrayConstructor": "json_array",
            "JsonArrayQueryConstructor": "json_array",
            "JsonObjectAgg": "json_objectagg",
            "JsonArrayAgg": "json_arrayagg",
            "JsonParseExpr": "json",
            "JsonScalarExpr": "json_scalar",
            "JsonSerializeExpr": "json_serialize",
            "JsonIsPredicate": "?column?",
        }.get(kind, "?column?")
    return "?column?"


#: Effects that change what names refer to (the search path, the session's own
#: relations): a nested statement's reach the session when the outer statement runs.
RESOLUTION_EFFECTS = frozenset(
    {"search_path", "unknown_search_path", "created", "dropped", "discard_temp"}
)
#: Statements whose nested statements do not run now.
_NOT_RUN_NOW = frozenset({"CreateFunctionStmt", "PrepareStmt", "DeclareCursorStmt", "RuleStmt"})


def _explain_analyze(body: Node) -> bool:
    for option in body.get("options", ()):
        elem = option.get("DefElem", {})
        if elem.get("defname") == "analyze":
            return elem.get("arg") is None or _bool_constant(elem["arg"])
    return False


_LEAVES = frozenset({"A_Const", "ParamRef", "TypeName", "String", "Integer", "Float", "A_Star"})

_ExprHandler = Callable[[Walker, Node, "Scope | None", "str | None"], set[Source]]
_EXPRESSIONS: dict[str, _ExprHandler] = {
    "ColumnRef": Walker.ex_column_ref,
    "FuncCall": Walker.ex_func_call,
    "SubLink": Walker.ex_sublink,
    "A_Indirection": Walker.ex_indirection,
    "TypeCast": Walker.ex_type_cast,
    "IndexElem": Walker.ex_index_elem,
}

_StatementHandler = Callable[[Walker, Node, int, int, "Scope | None"], None]
_STATEMENTS: dict[str, _StatementHandler] = {
    "SelectStmt": Walker.st_select,
    "InsertStmt": Walker.st_insert,
    "UpdateStmt": Walker.st_update,
    "DeleteStmt": Walker.st_delete,
    "MergeStmt": Walker.st_merge,
    "CopyStmt": Walker.st_copy,
    "VariableSetStmt": Walker.st_variable_set,
    "AlterRoleSetStmt": Walker.st_alter_set,
    "AlterDatabaseSetStmt": Walker.st_alter_set,
    "AlterSystemStmt": Walker.st_alter_set,
    "AlterFunctionStmt": Walker.st_alter_set,
    "VariableShowStmt": Walker.st_show,
    "TransactionStmt": Walker.st_transaction,
    "DiscardStmt": Walker.st_discard,
    "DoStmt": Walker.st_do,
    "CreateFunctionStmt": Walker.st_create_function,
    "PrepareStmt": Walker.st_prepare,
    "ExecuteStmt": Walker.st_execute,
    "DeclareCursorStmt": Walker.st_declare,
    "FetchStmt": Walker.st_fetch,
    "ClosePortalStmt": Walker.st_close,
    "DeallocateStmt": Walker.st_deallocate,
    "ExplainStmt": Walker.st_explain,
    "CreateTableAsStmt": Walker.st_create_table_as,
    "ViewStmt": Walker.st_view,
    "CreateStmt": Walker.st_create_table,
    "DropStmt": Walker.st_drop,
    "TruncateStmt": Walker.st_truncate,
    "LockStmt": Walker.st_lock,
    "GrantStmt": Walker.st_grant,
    "CallStmt": Walker.st_call,
    "RefreshMatViewStmt": Walker.st_refresh,
    "RuleStmt": Walker.st_rule,
}


def analyze_sql(
    text: str, env: Environment, tokens: list[sqltext.Token] | None = None
) -> list[StatementAnalysis]:
    """Analyze every statement of ``text`` (``tokens``: its scanner tokens, when the
    caller has them); raises ``pglast.parser.ParseError``.

    ``env`` is updated as the statements would update the session (so that a later
    statement sees an earlier ``SET search_path`` or ``PREPARE``); pass a copy."""
    return Walker(env).analyze_text(text, top=True, tokens=tokens)
