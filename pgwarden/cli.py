"""The ``pgwarden`` command."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from pgwarden import __version__
from pgwarden.stack.opa import OpaServer
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.stack.process import StackError

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def cmd_up(args: argparse.Namespace) -> int:
    """Start a throwaway PostgreSQL and an OPA loaded with the policy pack; stop on Ctrl-C."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with PostgresCluster() as pg, OpaServer([args.policies]) as opa:
        print(f"PostgreSQL  {pg.dsn(login=pg.proxy_login)}")
        print(f"            superuser: psql '{pg.dsn()}'")
        print(f"OPA         {opa.url}  (policies: {args.policies})")
        print("Ctrl-C stops everything.", flush=True)
        stop.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgwarden", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pgwarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help=cmd_up.__doc__)
    up.add_argument(
        "--policies",
        type=Path,
        default=POLICIES,
        help="policy directory to load into OPA (default: the shipped pack)",
    )
    up.set_defaults(func=cmd_up)
    from pgwarden.pdp.server import add_command as add_pdp_command  # noqa: PLC0415 (lazy grpc)

    add_pdp_command(sub)  # pgwarden pdp --config FILE
    from pgwarden.proxy.main import add_command as add_proxy_command  # noqa: PLC0415

    add_proxy_command(sub)  # pgwarden proxy --config FILE
    from pgwarden.proxy.analysis.explain import add_explain_parser  # noqa: PLC0415

    add_explain_parser(sub)  # pgwarden explain --identity SUBJECT "SQL"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except StackError as exc:
        print(f"pgwarden: {exc}", file=sys.stderr)
        return 1
    return code
