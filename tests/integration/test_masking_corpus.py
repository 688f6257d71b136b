"""Issue 8, acceptance 1: attempts to get a masked or secret value past pgwarden, through
the real proxy with the shipped policy pack, as agent:reporting — with psycopg (text
results) and asyncpg (binary results). For each attempt, whatever the client received —
rows, notices, notifications, error messages — must not contain the sentinel values, in
clear or in an obvious encoding. An attempt may be refused or masked; it must not leak."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest

from pgwarden.stack import local
from tests.integration.stack_fixtures import asyncpg_connect, dsn

SENTINEL_ID = 4242  # a customer id beyond the generated ones
ORDER_ID = 904242
SENTINELS = {
    "email": "quux.sentinel@example.org",
    "full_name": "Quincy Sentinel",
    "phone": "+1-555-0199-7331",
    "ssn": "987-65-4329",
    "card": "4000056655665556",
}
S = SENTINEL_ID

ATTEMPTS = [
    f"SELECT email FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT full_name, phone FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT lower(email) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT email || '' FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT upper(full_name) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT substr(email, 1, 12) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT replace(email, '@', ' at ') FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT c FROM customers c WHERE id = {S} LIMIT 1",
    f"SELECT c.* FROM customers c WHERE id = {S} LIMIT 1",
    f"SELECT * FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT row_to_json(c) FROM customers c WHERE id = {S} LIMIT 1",
    f"SELECT to_jsonb(c) FROM customers c WHERE id = {S} LIMIT 1",
    f"SELECT c::text FROM customers c WHERE id = {S} LIMIT 1",
    f"SELECT json_agg(email) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT array_agg(phone) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT string_agg(full_name, ',') FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT jsonb_build_object('e', email) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT ARRAY[email] FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT ROW(email, phone) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT email::bytea FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT email::varchar(100) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT CAST(email AS integer) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT format('%s', email) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT concat(full_name, '!') FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT CASE WHEN id > 0 THEN email END FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT xmlelement(name e, email) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT email FROM customers WHERE id = {S} UNION ALL SELECT status FROM orders LIMIT 3",
    f"WITH x AS (SELECT email AS e FROM customers WHERE id = {S}) SELECT e FROM x LIMIT 1",
    f"WITH RECURSIVE r(e) AS (SELECT email FROM customers WHERE id = {S}) SELECT e FROM r LIMIT 1",
    f"SELECT (SELECT email FROM customers WHERE id = {S}) LIMIT 1",
    f"SELECT s.e FROM (SELECT email AS e FROM customers WHERE id = {S}) s LIMIT 1",
    f"SELECT email FROM customer_contacts WHERE id = {S} LIMIT 1",
    f"SELECT o.id, x.e FROM orders o, LATERAL (SELECT email AS e FROM customers "
    f"WHERE id = {S}) x WHERE o.id = 1 LIMIT 1",
    f"SELECT regexp_split_to_table(email, '@') FROM customers WHERE id = {S} LIMIT 5",
    f"SELECT unnest(ARRAY[email, phone]) FROM customers WHERE id = {S} LIMIT 5",
    f"SELECT ssn FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT right(ssn, 4) FROM customers WHERE id = {S} LIMIT 1",
    f"SELECT card_number FROM payments WHERE order_id = {ORDER_ID} LIMIT 1",
    f"SELECT right(card_number, 4) FROM payments WHERE order_id = {ORDER_ID} LIMIT 1",
    f"SELECT p FROM payments p WHERE order_id = {ORDER_ID} LIMIT 1",
    f"SELECT query_to_xml('SELECT email FROM customers WHERE id = {S}', true, true, '')",
    f"SELECT query_to_xml('SELECT email, full_name, phone FROM customers WHERE id = {S} LIMIT 1',"
    " true, false, '') WHERE true LIMIT 1",
    # ts_rewrite(query, select) runs the select: email comes back as the rewritten query.
    f"SELECT ts_rewrite('x'::tsquery, 'SELECT ''x''::tsquery, email::tsquery FROM customers"
    f" WHERE id = {S}') WHERE true LIMIT 1",
    # ts_rewrite(query, target, substitute) runs no SQL; a subquery can still feed it.
    f"SELECT ts_rewrite('x'::tsquery, 'x'::tsquery, (SELECT email::tsquery FROM customers"
    f" WHERE id = {S})) WHERE true LIMIT 1",
    f"SELECT pg_notify('leak', email) FROM customers WHERE id = {S} LIMIT 1",
    f"DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM customers WHERE id = {S}); END $$",
    "SELECT id FROM customers WHERE email LIKE 'quux%' LIMIT 1",
    f"UPDATE customers SET phone = phone WHERE id = {S} RETURNING email",
    f"DELETE FROM orders WHERE id = -1 RETURNING (SELECT email FROM customers WHERE id = {S})",
    f"INSERT INTO orders SELECT -5, {S}, 1, email, now() FROM customers WHERE id = {S} "
    "RETURNING status",
    f"COPY (SELECT email FROM customers WHERE id = {S}) TO STDOUT",
    f"CREATE TEMP TABLE t AS SELECT email FROM customers WHERE id = {S}",
    f"EXPLAIN ANALYZE SELECT email FROM customers WHERE id = {S}",
]

SCRIPTS = [  # several statements over one session
    ["PREPARE p AS SELECT email FROM customers WHERE id = $1 LIMIT 1", f"EXECUTE p({S})"],
    [
        "BEGIN",
        f"DECLARE c CURSOR FOR SELECT email, full_name FROM customers WHERE id = {S}",
        "FETCH ALL FROM c",
        "ROLLBACK",
    ],
    [
        f"CREATE TEMP VIEW v AS SELECT email FROM customers WHERE id = {S}",
        "SELECT * FROM v LIMIT 1",
    ],
]


def leaks(received: str) -> list[str]:
    """The sentinel values (or simple encodings of them) found in ``received``."""
    found = []
    lowered = received.lower()
    for name, value in SENTINELS.items():
        forms = {
            value.lower(),
            value.replace("@", " at ").lower(),
            value[::-1].lower(),
            base64.b64encode(value.encode()).decode().lower(),
            value.encode().hex(),
            value.split("@")[0].lower(),
        }
        if any(form in lowered for form in forms):
            found.append(name)
    return found


@pytest.fixture(scope="module")
def sentinel(stack: local.Stack) -> Iterator[None]:
    stack.cluster.psql(
        f"INSERT INTO customers VALUES ({S}, '{SENTINELS['full_name']}', "
        f"'{SENTINELS['email']}', '{SENTINELS['phone']}', '{SENTINELS['ssn']}', now());"
        f"INSERT INTO orders VALUES ({ORDER_ID}, {S}, 10, 'paid', now());"
        f"INSERT INTO payments VALUES ({ORDER_ID}, {ORDER_ID}, '{SENTINELS['card']}', 10);",
        dbname="shop",
    )
    yield
    stack.cluster.psql(
        f"DELETE FROM payments WHERE id = {ORDER_ID}; DELETE FROM orders WHERE "
        f"customer_id = {S}; DELETE FROM customers WHERE id = {S};",
        dbname="shop",
    )


def psycopg_received(stack: local.Stack, statements: list[str]) -> str:
    seen: list[str] = []
    # A direct listener stands for an accomplice's session: notifications are a channel.
    with (
        psycopg.connect(stack.cluster.dsn("shop"), autocommit=True) as listener,
        psycopg.connect(dsn(stack, "agent:reporting"), autocommit=True) as conn,
    ):
        listener.execute("LISTEN leak")
        conn.add_notice_handler(lambda diag: seen.append(f"NOTICE {diag.message_primary}"))
        for sql in statements:
            try:
                if sql.startswith("COPY"):
                    with conn.cursor().copy(sql) as copy:
                        seen.append(repr([bytes(b) for b in copy]))
                else:
                    cur = conn.execute(sql)
                    seen.append(repr(cur.fetchall() if cur.description else cur.statusmessage))
            except psycopg.Error as exc:
                seen.append(f"ERROR {exc.sqlstate} {exc} {exc.diag.message_detail}")
        listener.execute("SELECT 1")  # delivers notifications already queued
        seen.extend(repr(n) for n in listener.notifies(timeout=0, stop_after=5))
    return "\n".join(seen)


async def asyncpg_received(stack: local.Stack, statements: list[str]) -> str:
    seen: list[str] = []
    conn = await asyncpg_connect(stack, "agent:reporting")
    conn.add_log_listener(lambda _c, msg: seen.append(f"NOTICE {msg}"))
    try:
        for sql in statements:
            try:
                if sql.startswith("COPY"):
                    chunks: list[bytes] = []
                    query = sql.removeprefix("COPY (").rsplit(") TO STDOUT", 1)[0]
                    await conn.copy_from_query(query, output=_Sink(chunks))
                    seen.append(repr(chunks))
                else:
                    seen.append(repr([tuple(r) for r in await conn.fetch(sql)]))
            except asyncpg.PostgresError as exc:
                seen.append(f"ERROR {exc.sqlstate} {exc} {exc.detail}")
    finally:
        await conn.close()
    return "\n".join(seen)


class _Sink:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __call__(self, data: bytes) -> None:
        self.chunks.append(bytes(data))


CASES = [[a] for a in ATTEMPTS] + SCRIPTS


def test_the_corpus_has_at_least_forty_attempts() -> None:
    assert len(CASES) >= 40


@pytest.mark.usefixtures("sentinel")
@pytest.mark.parametrize("statements", CASES, ids=[c[-1][:60] for c in CASES])
def test_no_leak_with_psycopg_text(stack: local.Stack, statements: list[str]) -> None:
    received = psycopg_received(stack, statements)
    assert leaks(received) == [], received


@pytest.mark.usefixtures("sentinel")
@pytest.mark.parametrize("statements", CASES, ids=[c[-1][:60] for c in CASES])
async def test_no_leak_with_asyncpg_binary(stack: local.Stack, statements: list[str]) -> None:
    received = await asyncpg_received(stack, statements)
    assert leaks(received) == [], received


@pytest.mark.usefixtures("sentinel")
def test_masked_values_do_reach_the_client_masked(stack: local.Stack) -> None:
    received = psycopg_received(
        stack, [f"SELECT id, email, full_name, phone FROM customers WHERE id = {S} LIMIT 1"]
    )
    assert received == f"[({S}, 'q***@example.org', '[redacted]', '************7331')]"


@pytest.mark.usefixtures("sentinel")
def test_a_view_column_gets_its_base_columns_mask(stack: local.Stack) -> None:
    received = psycopg_received(
        stack, [f"SELECT email FROM customer_contacts WHERE id = {S} LIMIT 1"]
    )
    assert received == "[('q***@example.org',)]"
