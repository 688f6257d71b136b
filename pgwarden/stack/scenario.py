"""The reference scenario (ARCHITECTURE.md): database ``shop`` with customers, orders and
payments filled with generated fake data, and the upstream roles the policy pack names.

All personal data here is made up: names from short lists, ``example.com``/``.org``
addresses, 555 phone numbers, SSNs in the 9xx range (never issued) and card numbers from
the test ranges card networks publish.
"""

from __future__ import annotations

import secrets

from pgwarden.stack.postgres import Login, PostgresCluster

DATABASE = "shop"
OWNER = "shop_owner"
ROLES = ("shop_reporting", "shop_etl", "shop_dba", OWNER)

SCHEMA = """
CREATE TABLE customers (
    id integer PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL,
    phone text,
    ssn text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    total numeric(10, 2) NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE payments (
    id integer PRIMARY KEY,
    order_id integer NOT NULL REFERENCES orders,
    card_number text NOT NULL,
    amount numeric(10, 2) NOT NULL
);
CREATE VIEW customer_contacts AS SELECT id, full_name, email, phone FROM customers;
"""

SEED = """
INSERT INTO customers (id, full_name, email, phone, ssn, created_at)
SELECT g,
       f.name || ' ' || l.name,
       lower(f.name) || '.' || lower(l.name) || g || '@example.' ||
           (ARRAY['com', 'org', 'net'])[1 + g % 3],
       '+1-555-01' || lpad((g % 100)::text, 2, '0') || '-' || lpad((g * 37 % 10000)::text, 4, '0'),
       '9' || lpad((g % 100)::text, 2, '0') || '-' || lpad((g * 7 % 100)::text, 2, '0') || '-'
           || lpad((g * 13 % 10000)::text, 4, '0'),
       timestamptz '2026-01-01' + g * interval '37 minutes'
FROM generate_series(1, {customers}) g
JOIN LATERAL (SELECT (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances',
    'John', 'Margaret', 'Ken', 'Radia', 'Dennis', 'Sophie', 'Niklaus', 'Karen', 'Leslie'])
    [1 + g % 16] AS name) f ON true
JOIN LATERAL (SELECT (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth',
    'Allen', 'Backus', 'Hamilton', 'Thompson', 'Perlman', 'Ritchie', 'Wilson', 'Wirth',
    'Jones', 'Lamport'])[1 + (g * 7) % 16] AS name) l ON true;

INSERT INTO orders (id, customer_id, total, status, created_at)
SELECT g, 1 + (g * 7919) % {customers}, round((5 + (g * 31 % 50000) / 100.0)::numeric, 2),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
       timestamptz '2026-02-01' + g * interval '11 minutes'
FROM generate_series(1, {orders}) g;

-- Card numbers: the networks' published test numbers.
INSERT INTO payments (id, order_id, card_number, amount)
SELECT g, g, (ARRAY['4111111111111111', '4012888888881881', '5555555555554444',
                    '5105105105105100', '378282246310005'])[1 + g % 5], o.total
FROM generate_series(1, {orders}) g JOIN orders o ON o.id = g;
"""

GRANTS = """
GRANT SELECT ON ALL TABLES IN SCHEMA public TO shop_reporting, shop_etl;
GRANT INSERT, UPDATE, DELETE ON orders TO shop_etl;
GRANT ALL ON ALL TABLES IN SCHEMA public TO shop_dba;
GRANT CREATE ON SCHEMA public TO shop_dba;
"""


def create_roles(cluster: PostgresCluster) -> dict[str, Login]:
    """The scenario's login roles with fresh random passwords."""
    logins = {role: Login(role, secrets.token_urlsafe(18)) for role in ROLES}
    statements = []
    for login in logins.values():
        statements.append(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login.user}') "
            f"THEN CREATE ROLE {login.user} LOGIN; END IF; END $$;"
            f"ALTER ROLE {login.user} PASSWORD '{login.password}';"
        )
    cluster.psql("\n".join(statements))
    return logins


def create_shop(cluster: PostgresCluster, *, customers: int = 2000, orders: int = 5000) -> None:
    """Create and fill the ``shop`` database (owned by shop_owner)."""
    cluster.create_database(DATABASE, owner=OWNER)
    cluster.psql(
        f"SET ROLE {OWNER};\n{SCHEMA}\n" + SEED.format(customers=customers, orders=orders) + GRANTS,
        dbname=DATABASE,
    )


def shop_exists(cluster: PostgresCluster) -> bool:
    out = cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'")  # noqa: S608
    return out.strip() == "1"
