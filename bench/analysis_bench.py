"""Statement analysis throughput: cold, memoized (same text), memoized (same shape, other
literals), Bind, and the parse step alone (JSON tree vs pglast AST objects).

    .venv/bin/python bench/analysis_bench.py [--rounds 5]

Prints a Markdown table (statements per second, microseconds per statement; best round)
for ``docs/performance.md``. The corpus is a mix of what agents send: point reads, joins,
aggregates, writes, DDL, session and transaction control, and exports hidden in CTEs,
views, casts, DO blocks and prepared statements.
"""

from __future__ import annotations

import argparse
import re
import struct
import time
from collections.abc import Callable, Sequence

import pglast
from pglast import parser as pg_parser

from pgwarden.proxy.analysis import Analyzer, catalog_of

CATALOG = catalog_of(
    {
        "public.customers": ["id", "full_name", "email", "phone", "ssn", "created_at"],
        "public.orders": ["id", "customer_id", "total", "status", "created_at"],
        "public.payments": ["id", "order_id", "card_number", "amount"],
    },
    views={
        "public.customer_contacts": (
            ["id", "name", "email"],
            "SELECT c.id, c.full_name AS name, c.email FROM public.customers c",
        )
    },
)

CORPUS: Sequence[str] = (
    "SELECT email FROM customers WHERE id = 42",
    "SELECT id, full_name FROM customers ORDER BY created_at DESC LIMIT 20",
    "SELECT * FROM orders WHERE customer_id = 7 AND status = 'open'",
    "SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'",
    "SELECT status, count(*), sum(total) FROM orders GROUP BY status HAVING sum(total) > 100",
    "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 3",
    "SELECT o.id, p.amount FROM orders o LEFT JOIN payments p ON p.order_id = o.id LIMIT 50",
    "SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email LIKE 'a%')",
    "SELECT id, rank() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM orders",
    "SELECT id FROM customers UNION SELECT customer_id FROM orders",
    "SELECT * FROM customer_contacts WHERE id = 5",
    "INSERT INTO orders (customer_id, total, status) VALUES (1, 9.99, 'open') RETURNING id",
    "UPDATE orders SET status = 'shipped' WHERE id = 7",
    "DELETE FROM orders WHERE status = 'cancelled' AND created_at < now()",
    "INSERT INTO orders (id, status) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET status = 'b'",
    "BEGIN",
    "COMMIT",
    "SET statement_timeout = '5s'",
    "SHOW search_path",
    "CREATE TABLE notes (id int PRIMARY KEY, body text)",
    "ALTER TABLE customers ADD COLUMN nickname text",
    "CREATE INDEX orders_status_idx ON orders (status)",
    "GRANT SELECT ON customers TO reporting",
    "WITH x AS (SELECT ssn FROM customers) SELECT * FROM x",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT c::text FROM customers c WHERE c.id = 1",
    "SELECT t.v FROM customers c, LATERAL (SELECT c.ssn AS v) t",
    "COPY (SELECT ssn FROM customers) TO STDOUT",
    "DO $$ BEGIN PERFORM ssn FROM customers; END $$",
    "EXPLAIN ANALYZE SELECT card_number FROM payments",
    "CREATE TABLE loot AS SELECT ssn, email FROM customers",
    "WITH moved AS (DELETE FROM payments RETURNING card_number) SELECT * FROM moved",
    "SELECT query_to_xml('select ssn from customers', true, false, '')",
    "PREPARE q (int) AS SELECT status FROM orders WHERE id = $1",
    "SELECT id, email FROM customers WHERE created_at > $1 LIMIT $2",
)


def _variant(sql: str, k: int) -> str:
    """The same statement with other numbers in it (a new literal value each time)."""
    return re.sub(r"\b(\d+)\b", lambda m: str(int(m.group(1)) + k), sql)


def _best(rounds: int, run: Callable[[], int], timed: list[float] | None = None) -> float:
    """Best seconds per statement over ``rounds`` rounds (``timed``: the run measures
    its own part and leaves the seconds there)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        count = run()
        seconds = time.perf_counter() - start if timed is None else timed[0]
        best = min(best, seconds / count)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=200, help="memoized passes per round")
    args = parser.parse_args(argv)

    analyzer = Analyzer(CATALOG, max_memo=100_000)
    state = analyzer.new_session()

    def cold() -> int:
        analyzer.set_catalog(CATALOG)  # an empty memo
        for sql in CORPUS:
            analyzer.analyze_query(sql, state)
        return len(CORPUS)

    def memoized() -> int:
        for _ in range(args.repeat):
            for sql in CORPUS:
                analyzer.analyze_query(sql, state)
        return args.repeat * len(CORPUS)

    offset = [0]

    def same_shape() -> int:
        # texts never seen before, shapes seen before: the second memo layer
        offset[0] += 1000
        variants = [_variant(sql, offset[0] + k) for k in range(20) for sql in CORPUS]
        start = time.perf_counter()
        for sql in variants:
            analyzer.analyze_query(sql, state)
        elapsed[0] = time.perf_counter() - start
        return len(variants)

    elapsed = [0.0]

    [parsed] = analyzer.analyze_query(
        "SELECT id, email FROM customers WHERE created_at > $1 LIMIT $2", state, "extended"
    )
    values = [[b"2024-01-01", str(n % 50).encode()] for n in range(1000)]

    def bind() -> int:
        for params in values:
            parsed.bind(params)
        return len(values)

    binary = [[b"2024-01-01", struct.pack(">q", n % 50)] for n in range(1000)]

    def bind_binary() -> int:
        for params in binary:
            parsed.bind(params, [0, 1])
        return len(binary)

    def parse_json() -> int:
        import json  # noqa: PLC0415

        for sql in CORPUS:
            json.loads(pg_parser.parse_sql_json(sql))
        return len(CORPUS)

    def parse_ast() -> int:
        for sql in CORPUS:
            pglast.parse_sql(sql)
        return len(CORPUS)

    memoized()  # warm
    rows = [
        ("cold (parse + analyze + digest)", _best(args.rounds, cold)),
        ("memoized, same text", _best(args.rounds, memoized)),
        ("memoized, same shape, other literals", _best(args.rounds, same_shape, elapsed)),
        ("Bind: LIMIT from a text parameter", _best(args.rounds, bind)),
        ("Bind: LIMIT from a binary parameter", _best(args.rounds, bind_binary)),
        ("parse only: parse_sql_json + json.loads", _best(args.rounds, parse_json)),
        ("parse only: pglast.parse_sql (AST objects)", _best(args.rounds, parse_ast)),
    ]
    print(f"corpus: {len(CORPUS)} statements, pglast {pglast.__version__}, best of {args.rounds}")
    print()
    print("| path | statements/s | µs/statement |")
    print("| --- | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {1 / seconds:,.0f} | {seconds * 1e6:.2f} |")
    print()
    print(f"memoized / cold speed-up: {rows[0][1] / rows[1][1]:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
