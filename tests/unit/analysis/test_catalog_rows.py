"""The catalog loader: rows in, an immutable, bounded catalog out (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.proxy.analysis import CATALOG_QUERIES, CatalogTooLarge, load_catalog

ROWS: dict[str, list[tuple[Any, ...]]] = {
    "relations": [
        (16400, "public", "customers", "r", None),
        (16410, "public", "contacts", "v", "SELECT c.id, c.email FROM public.customers c"),
        (16420, "public", "vip", "v", "SELECT contacts.email FROM public.contacts"),
        (16430, "public", "ids", "S", None),
        # orders_2026 is a partition of orders_by_year, itself one of orders_all;
        # archive inherits from customers and from contacts_extra
        (16440, "public", "orders_all", "p", None),
        (16441, "public", "orders_by_year", "p", None),
        (16442, "public", "orders_2026", "r", None),
        (16450, "public", "archive", "r", None),
        (16451, "public", "contacts_extra", "r", None),
    ],
    "columns": [
        (16400, 2, "email", "text"),
        (16400, 1, "id", "bigint"),
        (16410, 1, "id", "bigint"),
        (16410, 2, "email", "text"),
        (16420, 1, "email", "text"),
    ],
    "view_dependencies": [(16410, 16400), (16420, 16410)],
    "inherits": [(16441, 16440), (16442, 16441), (16450, 16400), (16450, 16451), (99999, 16442)],
    "functions": [("pg_catalog", "lower"), ("public", "mask")],
    "schemas": [("pg_catalog",), ("public",), ("empty",)],
}


def test_rows_become_relations_with_ordered_columns() -> None:
    catalog = load_catalog(ROWS)
    customers = catalog.relation("public", "customers")
    assert customers is not None
    assert (customers.oid, customers.kind) == (16400, "table")
    assert customers.column_names() == ("id", "email")
    sequence = catalog.relation("public", "ids")
    assert sequence is not None
    assert sequence.kind == "sequence"
    view = catalog.relation("public", "contacts")
    assert view is not None
    assert view.view_definition is not None
    assert catalog.has_function("public", "mask")
    assert catalog.has_schema("empty")


def test_views_of_views_resolve_to_their_tables() -> None:
    catalog = load_catalog(ROWS)
    assert catalog.base_relations(16420) == {16400}
    assert catalog.base_relations(16400) == frozenset()


def test_partitions_and_inheritance_children_resolve_to_their_roots() -> None:
    catalog = load_catalog(ROWS)
    assert [r.name for r in catalog.roots(16442)] == ["orders_all"]
    assert [r.name for r in catalog.roots(16441)] == ["orders_all"]
    assert [r.name for r in catalog.roots(16450)] == ["customers", "contacts_extra"]
    assert catalog.roots(16440) == ()
    assert catalog.roots(16400) == ()


def test_attnum_lookup() -> None:
    catalog = load_catalog(ROWS)
    found = catalog.column(16400, 2)
    assert found is not None
    assert found[1].name == "email"
    assert catalog.column(1, 1) is None


def test_every_load_is_a_new_version() -> None:
    assert load_catalog(ROWS).version != load_catalog(ROWS).version


def test_the_catalog_is_bounded() -> None:
    with pytest.raises(CatalogTooLarge):
        load_catalog(ROWS, max_relations=3)
    with pytest.raises(CatalogTooLarge):
        load_catalog(ROWS, max_columns=4)


def test_there_is_a_query_for_every_kind_of_row() -> None:
    assert set(CATALOG_QUERIES) == set(ROWS)


def test_datarow_text_loads_the_same_catalog() -> None:
    as_text = {
        name: [tuple(None if v is None else str(v) for v in row) for row in rows]
        for name, rows in ROWS.items()
    }
    text_catalog = load_catalog(as_text)
    typed_catalog = load_catalog(ROWS)
    assert text_catalog.relations == typed_catalog.relations
    assert text_catalog.view_dependencies == typed_catalog.view_dependencies
    assert text_catalog.parents == typed_catalog.parents
