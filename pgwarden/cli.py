"""The ``pgwarden`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from pgwarden import __version__
from pgwarden.stack.process import StackError

# Each command's module is imported only when that command runs (or for the full help):
# the proxy process must not carry the PDP's, the stack's or the audit CLI's imports
# (grpc tools, OPA client, requests, cryptography): they are most of its idle memory.


def cmd_up(args: argparse.Namespace) -> int:
    """Run the reference scenario on embedded defaults: PostgreSQL, PDP + OPA, proxy."""
    from pgwarden.stack import demo, local  # noqa: PLC0415

    stack = local.start(args.state_dir, proxy_port=args.proxy_port)
    info = stack.info
    if args.detach:
        print(
            json.dumps(
                {
                    "state_dir": str(args.state_dir),
                    **{k: v for k, v in info.items() if k != "tokens"},
                },
                indent=2,
            )
        )
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    proxy = info["proxy"]
    if not args.no_tour:
        print(demo.show(demo.run(args.state_dir), info), flush=True)
    print(f"pgwarden is running (state in {args.state_dir}). Connect as each identity:\n")
    for subject, token in info["tokens"].items():
        print(
            f"  PGPASSWORD='{token}' psql \"host={proxy['host']} port={proxy['port']} "
            f"dbname={proxy['database']} user={subject} sslmode=verify-full "
            f'sslrootcert={proxy["ca_file"]}"'
        )
    print(f"\nIn another terminal: pgwarden demo --state-dir {args.state_dir}")
    print("Ctrl-C stops everything.", flush=True)
    try:
        stop.wait()
    finally:
        stack.stop()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop a stack started with ``pgwarden up --detach``."""
    from pgwarden.stack import local  # noqa: PLC0415

    stopped = local.stop_detached(args.state_dir)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A scripted tour of what pgwarden allows, masks, limits and refuses."""
    from pgwarden.stack import demo  # noqa: PLC0415

    steps = demo.run(args.state_dir)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in steps], indent=2))
    else:
        print(demo.show(steps, demo.load_stack(args.state_dir)))
    return 0 if all(s.ok for s in steps) else 1


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``command`` (``proxy``, ``pdp``, ``explain``, ``audit``) only
    that one of the commands defined in other modules is registered (and imported)."""
    parser = argparse.ArgumentParser(prog="pgwarden", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pgwarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    if command is None:
        from pgwarden.stack import local  # noqa: PLC0415

        state_dir = {
            "type": Path,
            "default": local.default_state_dir(),
            "help": "where the stack keeps its state (default: %(default)s)",
        }
        up = sub.add_parser("up", help=cmd_up.__doc__)
        up.add_argument("--state-dir", **state_dir)  # type: ignore[arg-type]
        up.add_argument(
            "--detach",
            action="store_true",
            help="return once everything is ready; stop with pgwarden down",
        )
        up.add_argument("--proxy-port", type=int, default=None, help="default: a free port")
        up.add_argument(
            "--no-tour", action="store_true", help="do not run the demo tour once everything is up"
        )
        up.set_defaults(func=cmd_up)
        down = sub.add_parser("down", help=cmd_down.__doc__)
        down.add_argument("--state-dir", **state_dir)  # type: ignore[arg-type]
        down.set_defaults(func=cmd_down)
        tour = sub.add_parser("demo", help=cmd_demo.__doc__)
        tour.add_argument("--state-dir", **state_dir)  # type: ignore[arg-type]
        tour.add_argument("--json", action="store_true", help="print the steps as JSON")
        tour.set_defaults(func=cmd_demo)
    if command in (None, "pdp"):
        from pgwarden.pdp.server import add_command as add_pdp_command  # noqa: PLC0415

        add_pdp_command(sub)  # pgwarden pdp --config FILE
    if command in (None, "proxy"):
        from pgwarden.proxy.main import add_command as add_proxy_command  # noqa: PLC0415

        add_proxy_command(sub)  # pgwarden proxy --config FILE
    if command in (None, "explain"):
        from pgwarden.proxy.analysis.explain import add_explain_parser  # noqa: PLC0415

        add_explain_parser(sub)  # pgwarden explain --identity SUBJECT "SQL"
    if command in (None, "audit"):
        from pgwarden.pdp.audit.cli import add_command as add_audit_command  # noqa: PLC0415

        add_audit_command(sub)  # pgwarden audit tail|query|verify
    return parser


_LAZY_COMMANDS = frozenset({"pdp", "proxy", "explain", "audit"})


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # `pgwarden proxy …` registers (imports) the proxy command only; anything else
    # (help, a global option first, another command) gets the full parser.
    command = words[0] if words and words[0] in _LAZY_COMMANDS else None
    args = build_parser(command).parse_args(words)
    try:
        code: int = args.func(args)
    except StackError as exc:
        print(f"pgwarden: {exc}", file=sys.stderr)
        return 1
    return code
