"""The schema catalog of one upstream database, as the analyzer needs it.

I/O-free: :data:`CATALOG_QUERIES` holds the SQL whose result rows :func:`load_catalog`
turns into a :class:`Catalog`; whoever holds the upstream connection (the proxy, with its
own credential) runs :data:`CATALOG_SETUP_SQL` and then the queries (one read-only
transaction gives a consistent snapshot), and passes the rows in; values may be Python
objects or the text of a DataRow. A catalog is immutable; a refresh builds
a new one with a new ``version`` (the analyzer's memo is keyed by it).

Memory is bounded: loading refuses more than ``max_relations`` relations or
``max_columns`` columns (:class:`CatalogTooLarge`); the analyzer then runs without a
catalog, which it reports as ``unresolved`` where it matters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Run first, on the loading connection (its own, not a client's): view definitions are
#: then printed schema-qualified (``pg_get_viewdef`` qualifies every name not visible in
#: the search path). A session-level SET, so that it holds whether or not the queries
#: run inside an explicit transaction block.
CATALOG_SETUP_SQL = "SET search_path = pg_catalog"

#: relkind → the ``kind`` of a relation in the input document.
RELATION_KINDS: Mapping[str, str] = {
    "r": "table",
    "p": "partitioned_table",
    "v": "view",
    "m": "materialized_view",
    "f": "foreign_table",
    "S": "sequence",
    "c": "composite_type",
    "i": "index",
    "I": "partitioned_index",
    "t": "toast_table",
}

#: The queries, by the name :func:`load_catalog` expects their rows under. Each row is a
#: sequence of column values in the order selected.
CATALOG_QUERIES: Mapping[str, str] = {
    # oid, schema, name, relkind, view definition (views and materialized views only)
    "relations": """
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg_temp_%'
  AND n.nspname NOT LIKE 'pg_toast_temp_%'
ORDER BY c.oid""",
    # relation oid, attnum, column name, type
    "columns": """
SELECT a.attrelid::int8, a.attnum::int4, a.attname::text,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg_temp_%'
  AND n.nspname NOT LIKE 'pg_toast_temp_%'
ORDER BY a.attrelid, a.attnum""",
    # view oid, oid of a relation its rewrite rule depends on
    "view_dependencies": """
SELECT DISTINCT r.ev_class::int8, d.refobjid::int8
FROM pg_rewrite r JOIN pg_depend d
  ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
 AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
ORDER BY 1, 2""",
    # child oid, parent oid: partitions and inheritance children (indexes' rows too,
    # which name no relation of the catalog)
    "inherits": """
SELECT i.inhrelid::int8, i.inhparent::int8 FROM pg_inherits i ORDER BY 1, 2""",
    # schema, function name (one row per distinct name)
    "functions": """
SELECT DISTINCT n.nspname::text, p.proname::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
ORDER BY 1, 2""",
    # schema names
    "schemas": "SELECT nspname::text FROM pg_namespace ORDER BY 1",
}

_versions = itertools.count(1)


class CatalogTooLarge(Exception):
    """The database has more relations or columns than the configured bound."""


@dataclass(frozen=True, slots=True)
class CatalogColumn:
    attnum: int
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class CatalogRelation:
    oid: int
    schema: str
    name: str
    kind: str
    columns: tuple[CatalogColumn, ...] = ()
    view_definition: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class Catalog:
    """Relations, columns, view dependencies, function names and schemas of one database."""

    relations: Mapping[tuple[str, str], CatalogRelation]
    functions: frozenset[tuple[str, str]] = frozenset()
    schemas: frozenset[str] = frozenset()
    view_dependencies: Mapping[int, frozenset[int]] = field(default_factory=dict)
    #: child oid -> parent oids (pg_inherits: partitions and inheritance children)
    parents: Mapping[int, frozenset[int]] = field(default_factory=dict)
    version: int = field(default_factory=lambda: next(_versions))
    by_oid: Mapping[int, CatalogRelation] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_oid", {r.oid: r for r in self.relations.values()})

    def relation(self, schema: str, name: str) -> CatalogRelation | None:
        return self.relations.get((schema, name))

    def has_function(self, schema: str, name: str) -> bool:
        return (schema, name) in self.functions

    def has_schema(self, schema: str) -> bool:
        return schema in self.schemas

    def column(self, oid: int, attnum: int) -> tuple[CatalogRelation, CatalogColumn] | None:
        """The relation and column of ``(oid, attnum)`` (what RowDescription carries)."""
        relation = self.by_oid.get(oid)
        if relation is None:
            return None
        for column in relation.columns:
            if column.attnum == attnum:
                return relation, column
        return None

    def roots(self, oid: int) -> tuple[CatalogRelation, ...]:
        """The top-most tables a partition or inheritance child descends from (its rows
        are theirs: ``SELECT ... FROM customers`` returns them), in oid order; empty for
        a relation that inherits from none."""
        roots: dict[int, CatalogRelation] = {}
        seen = {oid}
        stack = list(self.parents.get(oid, ()))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            above = self.parents.get(current)
            if above:
                stack.extend(above)
            elif (relation := self.by_oid.get(current)) is not None:
                roots[current] = relation
        return tuple(roots[k] for k in sorted(roots))

    def base_relations(self, oid: int) -> frozenset[int]:
        """The oids of the tables a view reads, through views of views."""
        seen: set[int] = set()
        stack = [oid]
        bases: set[int] = set()
        while stack:
            current = stack.pop()
            for dep in self.view_dependencies.get(current, frozenset()):
                if dep in seen:
                    continue
                seen.add(dep)
                rel = self.by_oid.get(dep)
                if rel is not None and rel.kind == "view":
                    stack.append(dep)
                else:
                    bases.add(dep)
        return frozenset(bases)


def load_catalog(
    rows: Mapping[str, Iterable[Sequence[Any]]],
    *,
    max_relations: int = 100_000,
    max_columns: int = 1_000_000,
) -> Catalog:
    """Build a :class:`Catalog` from the rows of :data:`CATALOG_QUERIES` (by name)."""
    columns: dict[int, list[CatalogColumn]] = {}
    for count, (rel_oid, attnum, name, type_name) in enumerate(rows.get("columns", ()), 1):
        if count > max_columns:
            raise CatalogTooLarge(f"more than {max_columns} columns")
        columns.setdefault(int(rel_oid), []).append(
            CatalogColumn(int(attnum), str(name), str(type_name))
        )
    relations: dict[tuple[str, str], CatalogRelation] = {}
    for index, (oid, schema, name, relkind, definition) in enumerate(rows.get("relations", ())):
        if index >= max_relations:
            raise CatalogTooLarge(f"more than {max_relations} relations")
        cols = sorted(columns.get(int(oid), ()), key=lambda c: c.attnum)
        relations[(str(schema), str(name))] = CatalogRelation(
            int(oid),
            str(schema),
            str(name),
            RELATION_KINDS.get(str(relkind), "unknown"),
            tuple(cols),
            None if definition is None else str(definition),
        )
    deps: dict[int, set[int]] = {}
    for view_oid, ref_oid in rows.get("view_dependencies", ()):
        deps.setdefault(int(view_oid), set()).add(int(ref_oid))
    parents: dict[int, set[int]] = {}
    for child, parent in rows.get("inherits", ()):
        parents.setdefault(int(child), set()).add(int(parent))
    functions = frozenset((str(s), str(n)) for s, n in rows.get("functions", ()))
    schemas = {str(s) for (s,) in rows.get("schemas", ())}
    schemas.update(schema for schema, _ in relations)
    return Catalog(
        relations,
        functions,
        frozenset(schemas),
        {k: frozenset(v) for k, v in deps.items()},
        {k: frozenset(v) for k, v in parents.items()},
    )


def catalog_of(
    tables: Mapping[str, Sequence[str]],
    views: Mapping[str, tuple[Sequence[str], str]] | None = None,
    functions: Iterable[str] = (),
    inherits: Mapping[str, Sequence[str]] | None = None,
) -> Catalog:
    """A catalog written by hand (tests, ``pgwarden explain`` without a database):
    ``tables`` maps ``"schema.name"`` to column names; ``views`` maps ``"schema.name"``
    to (column names, schema-qualified definition); ``inherits`` a child table to its
    parents."""
    oids = itertools.count(16384)
    relations: dict[tuple[str, str], CatalogRelation] = {}

    def add(qualified: str, names: Sequence[str], kind: str, definition: str | None) -> None:
        schema, _, name = qualified.partition(".")
        cols = tuple(CatalogColumn(i + 1, n, "text") for i, n in enumerate(names))
        relations[(schema, name)] = CatalogRelation(
            next(oids), schema, name, kind, cols, definition
        )

    for qualified, names in tables.items():
        add(qualified, names, "table", None)
    for qualified, (names, definition) in (views or {}).items():
        add(qualified, names, "view", definition)
    funcs = frozenset((f.partition(".")[0], f.partition(".")[2]) for f in functions)
    schemas = frozenset({s for s, _ in relations} | {"pg_catalog", "public"})

    def oid(qualified: str) -> int:
        return relations[(qualified.partition(".")[0], qualified.partition(".")[2])].oid

    parents = {oid(c): frozenset(oid(p) for p in ps) for c, ps in (inherits or {}).items()}
    return Catalog(relations, funcs, schemas, parents=parents)
