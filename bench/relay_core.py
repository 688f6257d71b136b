"""The proxy's own Python cost per ``pgbench -S`` transaction, without sockets.

    .venv/bin/python -m bench.relay_core [--mode prepared] [--transactions 20000] [--profile]

Feeds the I/O-free relay core (``RelayCore`` with the session's statement analysis and the
local decision point, as ``server.py`` wires them) the exact bytes pgbench and PostgreSQL
exchange for one read-only transaction, in each protocol mode, and prints the microseconds
per transaction (best of 5). No kernel, no event loop, no other process: the number moves
only when the proxy's code does, so it shows a change's effect in seconds where the
pgbench rounds of ``bench/run`` need minutes and a quiet machine. ``--profile`` adds a
cProfile listing of where that time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import struct
import time
from collections.abc import Callable

from pgwarden.proxy.analysis import Analyzer
from pgwarden.proxy.analysis.analyzer import DEFAULT_SEARCH_PATH
from pgwarden.proxy.decision import Identity, LocalDecisionPoint, SessionFacts
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.relay import DecisionRequest, RelayCore
from pgwarden.proxy.statements import SessionStatements

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
ROW_DESCRIPTION = m.frame(
    b"T", struct.pack("!h", 1) + b"abalance\0" + struct.pack("!ihihih", 16390, 3, 23, 4, -1, 0)
)
DATA_ROW = m.frame(b"D", struct.pack("!hi", 1, 1) + b"0")
COMMAND_COMPLETE = m.frame(b"C", b"SELECT 1\0")
READY = m.build_ready_for_query("I")
PARSE_COMPLETE, BIND_COMPLETE = m.frame(b"1", b""), m.frame(b"2", b"")
# What the server answers to one transaction, per mode (libpq describes the portal).
SERVER_REPLY = {
    "simple": ROW_DESCRIPTION + DATA_ROW + COMMAND_COMPLETE + READY,
    "extended": PARSE_COMPLETE
    + BIND_COMPLETE
    + ROW_DESCRIPTION
    + DATA_ROW
    + COMMAND_COMPLETE
    + READY,
    "prepared": BIND_COMPLETE + ROW_DESCRIPTION + DATA_ROW + COMMAND_COMPLETE + READY,
}


def client_transaction(mode: str, aid: int) -> bytes:
    """What pgbench (libpq) sends for one ``-S`` transaction."""
    if mode == "simple":
        # pgbench's own statement with its literal (an int), as pgbench sends it.
        return m.build_query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};")
    statement = "P0_0" if mode == "prepared" else ""
    execution = (
        m.build_bind("", statement, [str(aid).encode()])
        + m.build_describe("P", "")
        + m.build_execute("")
        + m.build_sync()
    )
    return (m.build_parse("", SQL) + execution) if mode == "extended" else execution


def session(mode: str) -> Callable[[bytes], None]:
    """One session's relay, decisions and flushes, as ``ClientConnection`` runs them; the
    returned function relays one transaction."""
    analyzer = Analyzer()
    state = analyzer.new_session(user="bench", search_path=DEFAULT_SEARCH_PATH)
    relay = RelayCore(SessionStatements(analyzer, state), max_message_size=1 << 26)
    point = LocalDecisionPoint("bench")
    identity = Identity("agent:bench", "pgwarden:dev-tokens", ("bench",), "dev_token", {})
    facts = SessionFacts("s", "bench", "127.0.0.1", "shop", "pgbench", False, "agent:bench")

    def flush() -> None:
        relay.to_server.clear()
        relay.to_client.clear()

    def decide(request: DecisionRequest | None) -> None:
        while request is not None:
            decisions = point.decide_now(
                identity, facts, request.statements, in_transaction=relay.in_transaction
            )
            assert decisions is not None
            request = relay.resolve(decisions)
            flush()

    def transaction(data: bytes) -> None:
        request = relay.client_data(data)
        flush()
        decide(request)
        relay.server_data(SERVER_REPLY[mode])
        flush()

    if mode == "prepared":  # PQprepare: Parse and Sync once per connection
        decide(relay.client_data(m.build_parse("P0_0", SQL) + m.build_sync()))
        relay.server_data(PARSE_COMPLETE + READY)
        flush()
    return transaction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mode", choices=("simple", "extended", "prepared"), action="append")
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for mode in args.mode or ["simple", "extended", "prepared"]:
        transaction = session(mode)
        inputs = [client_transaction(mode, random.randint(1, 1_000_000)) for _ in range(20_000)]
        for data in inputs[:2000]:  # warm the analyzer's memo and the decision path
            transaction(data)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for i in range(args.transactions):
                transaction(inputs[i % len(inputs)])
            best = min(best, (time.perf_counter() - started) / args.transactions)
        print(f"{mode:9} {best * 1e6:6.2f} µs per transaction (relay core + local decision)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for data in inputs:
                transaction(data)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
