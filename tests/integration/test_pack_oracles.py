"""Oracles: statements that return no protected value, only a number of rows, an order or
the result of a comparison, and so spell one out a query at a time. Each is run against
PostgreSQL directly first, to show what it reveals there (a count equal to a character's
code, a row that exists only when a guess is right), then through the real proxy with the
shipped pack, where it must be refused (42501) with a reason that names the column."""

from __future__ import annotations

import re

import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import dsn

FIRST_CHAR = "SELECT ascii({column}) FROM customers WHERE id = 42"

# (statement, the protected column it reads, the usage the refusal names): each returns
# ascii() of the column's first character as a number of rows (or a running count).
COUNTING = [
    (
        "SELECT count(*) FROM (SELECT 1 FROM generate_series(1, 1000) g WHERE g > 0"
        " LIMIT (SELECT ascii(ssn) FROM customers WHERE id = 42)) s",
        "ssn",
        "limit",
    ),
    (
        "SELECT g - 1 FROM generate_series(1, 1000) g WHERE g > 0"
        " OFFSET (SELECT ascii(email) FROM customers WHERE id = 42) LIMIT 1",
        "email",
        "limit",
    ),
    (
        "SELECT count(*) FROM (SELECT generate_series(1, ascii(ssn)) FROM customers"
        " WHERE id = 42) s",
        "ssn",
        "from",
    ),
    (
        "WITH x AS (SELECT generate_series(1, ascii(email)) AS n FROM customers"
        " WHERE id = 42) SELECT count(*) FROM x",
        "email",
        "from",
    ),
    (
        "SELECT count(*) FROM customers c, LATERAL generate_series(1, ascii(c.ssn)) g"
        " WHERE c.id = 42",
        "ssn",
        "from",
    ),
    (
        "SELECT max(s) FROM (SELECT count(*) OVER (ORDER BY g ROWS BETWEEN"
        " (SELECT ascii(email) - 1 FROM customers WHERE id = 42) PRECEDING AND CURRENT ROW)"
        " AS s FROM generate_series(1, 500) g) w",
        "email",
        "limit",
    ),
]


def refusal(conn: psycopg.Connection, sql: str) -> str:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == "42501", caught.value
    return caught.value.diag.message_primary or ""


@pytest.mark.parametrize(("sql", "column", "usage"), COUNTING, ids=[c[0][:60] for c in COUNTING])
def test_a_count_of_rows_that_spells_a_protected_column_is_refused(
    stack: local.Stack, sql: str, column: str, usage: str
) -> None:
    with psycopg.connect(stack.cluster.dsn("shop"), autocommit=True) as direct:
        revealed = direct.execute(sql).fetchone()
        expected = direct.execute(FIRST_CHAR.format(column=column)).fetchone()
    assert revealed == expected  # what the statement gives away when it runs
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        message = refusal(conn, sql)
    assert re.search(
        rf"public\.customers\.{column} in an? {usage} clause acts as an oracle", message
    )


def test_a_set_operation_that_compares_a_guess_is_refused(stack: local.Stack) -> None:
    """agent:etl may write orders.status: it plants a guess there, then asks whether
    customer 42's email equals it (UNION keeps one row when they are equal)."""
    with psycopg.connect(stack.cluster.dsn("shop")) as direct:
        (email,) = direct.execute("SELECT email FROM customers WHERE id = 42").fetchone() or ("",)
    compare = [
        "SELECT email FROM customers WHERE id = 42 UNION SELECT status FROM orders"
        " WHERE id = 1 LIMIT 5",
        "SELECT email FROM customers WHERE id = 42 INTERSECT SELECT status FROM orders"
        " WHERE id = 1 LIMIT 5",
        "SELECT DISTINCT x FROM (SELECT email AS x FROM customers WHERE id = 42 UNION ALL"
        " SELECT status FROM orders WHERE id = 1) s WHERE true LIMIT 5",
    ]
    with psycopg.connect(stack.cluster.dsn("shop")) as direct:
        direct.execute("UPDATE orders SET status = %s WHERE id = 1", (email,))
        assert [len(direct.execute(sql).fetchall()) for sql in compare] == [1, 1, 1]
        direct.rollback()
    with psycopg.connect(dsn(stack, "agent:etl")) as conn:
        conn.execute("UPDATE orders SET status = %s WHERE id = 1", (email,))
        for sql in compare:
            message = refusal(conn, sql)
            assert "public.customers.email in a group clause acts as an oracle" in message
            conn.rollback()
            conn.execute("UPDATE orders SET status = %s WHERE id = 1", (email,))
        conn.rollback()


def test_a_recursive_ctes_search_and_cycle_columns_do_not_carry_values_out(
    stack: local.Stack,
) -> None:
    """The path of CYCLE and the order of SEARCH are arrays of the named columns' rows:
    selected, they return the values unmasked (direct, a row of the clear email)."""
    cycle = (
        "WITH RECURSIVE r(e) AS (SELECT email FROM customers WHERE id = 42 UNION ALL"
        " SELECT e FROM r) CYCLE e SET c USING p SELECT p FROM r WHERE true LIMIT 1"
    )
    search = (
        "WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM customers WHERE id = 42 UNION ALL"
        " SELECT e, n + 1 FROM r WHERE n < 2) SEARCH DEPTH FIRST BY e SET o"
        " SELECT o FROM r WHERE true LIMIT 1"
    )
    with psycopg.connect(stack.cluster.dsn("shop"), autocommit=True) as direct:
        (email,) = direct.execute("SELECT email FROM customers WHERE id = 42").fetchone() or ("",)
        assert email in str(direct.execute(cycle).fetchall())
        assert email in str(direct.execute(search).fetchall())
    with psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn:
        assert "public.customers.email in a group clause" in refusal(conn, cycle)
        assert re.search(r"public\.customers\.email in an? order clause", refusal(conn, search))


def test_a_planted_guess_returned_in_the_masked_column_is_refused(stack: local.Stack) -> None:
    """agent:etl sees e-mails hashed. A UNION ALL of customers.email with orders.status,
    where it planted a guess, came back as one column hashed whole: the same digest twice
    confirmed the guess. A masked column is returned apart from other columns."""
    with psycopg.connect(stack.cluster.dsn("shop")) as direct:
        (email,) = direct.execute("SELECT email FROM customers WHERE id = 42").fetchone() or ("",)
    union = (
        "SELECT email FROM customers WHERE id = 42 UNION ALL SELECT status FROM orders"
        " WHERE id = 1 LIMIT 5"
    )
    with psycopg.connect(dsn(stack, "agent:etl")) as conn:
        conn.execute("UPDATE orders SET status = %s WHERE id = 1", (email,))
        message = refusal(conn, union)
        assert "public.customers.email is returned in one column with public.orders.status" in (
            message
        )
        conn.rollback()
        # Apart, each keeps its own: the e-mail hashed, the status as it is.
        (hashed,) = conn.execute("SELECT email FROM customers WHERE id = 42 LIMIT 1").fetchone()
        assert hashed != email
        assert len(str(hashed)) == 32
