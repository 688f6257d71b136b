"""The schema catalog loaded from a real PostgreSQL: view resolution, star expansion,
attnum lookup, and a reload after DDL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from pgwarden.proxy.analysis import Analyzer, Catalog
from pgwarden.proxy.analysis.explain import load_catalog_from
from pgwarden.stack.postgres import PostgresCluster

# Not "shop": other suites share the session cluster and may create their own.
DATABASE = "analysis_shop"

SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, full_name text, email text, phone text,
                        ssn text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers,
                     total numeric(12, 2), status text, created_at timestamptz);
CREATE TABLE payments (id bigint PRIMARY KEY, order_id bigint REFERENCES orders,
                       card_number text, amount numeric(12, 2));
CREATE VIEW customer_contacts AS SELECT id, full_name AS name, email FROM customers;
CREATE VIEW vip_contacts AS SELECT name, email FROM customer_contacts WHERE id < 100;
CREATE MATERIALIZED VIEW revenue AS
    SELECT o.customer_id, sum(p.amount) AS paid
    FROM orders o JOIN payments p ON p.order_id = o.id GROUP BY o.customer_id;
CREATE SCHEMA analytics;
CREATE TABLE analytics.daily_sales (day date, total numeric);
CREATE FUNCTION public.mask(text) RETURNS text LANGUAGE sql AS $$ SELECT '***' $$;
"""


@pytest.fixture(scope="module")
def shop(pg_cluster: PostgresCluster) -> Iterator[str]:
    pg_cluster.create_database(DATABASE, owner="pgwarden_proxy")
    pg_cluster.psql(SCHEMA, dbname=DATABASE)
    # Over TCP with the proxy's own login, as the proxy loads catalogs.
    yield pg_cluster.dsn(DATABASE, login=pg_cluster.proxy_login)
    pg_cluster.psql(f'DROP DATABASE "{DATABASE}"')


@pytest.fixture(scope="module")
def catalog(shop: str) -> Catalog:
    return load_catalog_from(shop)


def test_relations_columns_and_kinds_come_from_the_database(catalog: Catalog) -> None:
    customers = catalog.relation("public", "customers")
    assert customers is not None
    assert customers.kind == "table"
    assert customers.column_names() == ("id", "full_name", "email", "phone", "ssn", "created_at")
    assert [c.type for c in customers.columns][:2] == ["bigint", "text"]
    orders = catalog.relation("public", "orders")
    assert orders is not None
    assert orders.columns[2].type == "numeric(12,2)"
    kinds = {
        name: rel.kind for (schema, name), rel in catalog.relations.items() if schema == "public"
    }
    assert kinds == {
        "customers": "table",
        "orders": "table",
        "payments": "table",
        "customer_contacts": "view",
        "vip_contacts": "view",
        "revenue": "materialized_view",
    }
    assert catalog.relation("analytics", "daily_sales") is not None
    pg_class = catalog.relation("pg_catalog", "pg_class")
    assert pg_class is not None
    assert "relname" in pg_class.column_names()
    assert catalog.has_function("pg_catalog", "lower")
    assert catalog.has_function("public", "mask")


def test_oid_and_attnum_give_the_column(catalog: Catalog) -> None:
    customers = catalog.relation("public", "customers")
    assert customers is not None
    found = catalog.column(customers.oid, 5)
    assert found is not None
    assert (found[0].qualified, found[1].name) == ("public.customers", "ssn")
    assert catalog.column(customers.oid, 99) is None


def test_view_dependencies_resolve_to_base_tables(catalog: Catalog) -> None:
    def oid(name: str) -> int:
        relation = catalog.relation("public", name)
        assert relation is not None
        return relation.oid

    assert catalog.base_relations(oid("customer_contacts")) == {oid("customers")}
    assert catalog.base_relations(oid("vip_contacts")) == {oid("customers")}
    assert catalog.base_relations(oid("revenue")) == {oid("orders"), oid("payments")}


def test_views_resolve_to_base_columns_through_the_catalog(catalog: Catalog) -> None:
    analyzer = Analyzer(catalog)
    state = analyzer.new_session()
    [analyzed] = analyzer.analyze_query("SELECT * FROM vip_contacts", state)
    facts = analyzed.facts
    assert facts["outputs"] == [
        {"name": "name", "sources": ["public.customers.full_name"], "direct": True},
        {"name": "email", "sources": ["public.customers.email"], "direct": True},
    ]
    assert {(r["name"], r["kind"]) for r in facts["relations"]} == {
        ("vip_contacts", "view"),
        ("customer_contacts", "view"),
        ("customers", "table"),
    }
    assert facts["star"] == ["public.vip_contacts"]
    [paid] = analyzer.analyze_query("SELECT paid FROM revenue", state)
    assert paid.facts["outputs"] == [
        {"name": "paid", "sources": ["public.payments.amount"], "direct": False}
    ]


def test_star_expands_through_the_catalog(catalog: Catalog) -> None:
    analyzer = Analyzer(catalog)
    state = analyzer.new_session()
    [analyzed] = analyzer.analyze_query("SELECT p.* FROM payments p", state)
    assert [o["sources"] for o in analyzed.facts["outputs"]] == [
        ["public.payments.id"],
        ["public.payments.order_id"],
        ["public.payments.card_number"],
        ["public.payments.amount"],
    ]
    assert analyzed.facts["star"] == ["public.payments"]
    [system] = analyzer.analyze_query("SELECT relname, mask(relname) FROM pg_class", state)
    assert system.facts["relations"] == [
        {"schema": "pg_catalog", "name": "pg_class", "kind": "table", "access": "read"}
    ]
    assert system.facts["functions"] == ["public.mask"]


def test_ddl_through_the_analyzer_triggers_a_reload_that_sees_it(shop: str) -> None:
    analyzer = Analyzer(load_catalog_from(shop))
    state = analyzer.new_session()
    sql = "CREATE TABLE notes (id int, body text)"
    [create] = analyzer.analyze_query(sql, state)
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute(sql)
    state.apply(create)  # the upstream completed it
    assert analyzer.catalog_due()
    analyzer.set_catalog(load_catalog_from(shop))
    [select] = analyzer.analyze_query("SELECT * FROM notes", state)
    assert [o["name"] for o in select.facts["outputs"]] == ["id", "body"]
    assert select.facts["relations"][0]["kind"] == "table"
