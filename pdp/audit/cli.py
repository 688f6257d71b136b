"""``pgwarden audit tail | query | verify``: read and check the audit trail.

The source is a JSON Lines file (``--file``), a PostgreSQL table (``--dsn`` or
``--dsn-env``, with ``--table``), or whatever a PDP config's ``[audit]`` names
(``--config``). ``verify`` exits 0 when every chain is intact, 1 at the first broken link
(which it names), 2 on a usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgwarden.config import ConfigError
from pgwarden.pdp.audit.chain import Verification, Verifier, verify
from pgwarden.pdp.audit.store import read_jsonl_lines, read_table

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TABLE_COLUMNS = ("time", "kind", "subject", "action", "command", "relations", "rows", "bytes")


class UsageError(Exception):
    """A bad option or an unreachable source (exit code 2)."""


@dataclass(frozen=True)
class Source:
    path: Path | None = None
    dsn: str = ""
    table: str = "pgwarden_audit"


@dataclass(frozen=True)
class Filters:
    subject: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    action: str | None = None
    relation: str | None = None
    kind: str | None = None
    session: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.subject is not None and record.get("identity", {}).get("subject") != self.subject:
            return False
        time_us = record.get("time_us", 0)
        if self.since_us is not None and time_us < self.since_us:
            return False
        if self.until_us is not None and time_us >= self.until_us:
            return False
        if self.action is not None and (record.get("decision") or {}).get("action") != self.action:
            return False
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        if self.session is not None and record.get("session_id") != self.session:
            return False
        if self.relation is not None:
            relations = (record.get("statement") or {}).get("relations", [])
            if not any(_relation_matches(self.relation, r) for r in relations):
                return False
        return True

    def sql(self) -> tuple[str, list[Any]]:
        """The same filters as a WHERE clause over the audit table's columns."""
        clauses: list[str] = []
        params: list[Any] = []

        def add(clause: str, value: Any) -> None:
            params.append(value)
            clauses.append(clause.format(f"${len(params)}"))

        if self.subject is not None:
            add("subject = {}", self.subject)
        if self.since_us is not None:
            add("time_us >= {}", self.since_us)
        if self.until_us is not None:
            add("time_us < {}", self.until_us)
        if self.action is not None:
            add("action = {}", self.action)
        if self.kind is not None:
            add("kind = {}", self.kind)
        if self.session is not None:
            add("record->>'session_id' = {}", self.session)
        if self.relation is not None:
            schema, _, name = self.relation.rpartition(".")
            wanted = {"name": name, **({"schema": schema} if schema else {})}
            add("record->'statement'->'relations' @> {}::jsonb", json.dumps([wanted]))
        return " AND ".join(clauses), params


def _relation_matches(wanted: str, relation: dict[str, Any]) -> bool:
    schema, _, name = wanted.rpartition(".")
    return relation.get("name") == name and (not schema or relation.get("schema") == schema)


def parse_time(text: str, *, now: float | None = None) -> int:
    """``2026-11-24T06:00:00Z``, ``2026-11-24``, or relative ``90s``/``15m``/``2h``/``7d``
    (before now) → microseconds since the epoch."""
    match = _RELATIVE.match(text.strip())
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        return int(((now if now is not None else time.time()) - seconds) * 1_000_000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {text!r} (ISO 8601, or 15m / 2h / 7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def source_of(args: argparse.Namespace) -> Source:
    chosen = [x for x in (args.file, args.dsn, args.dsn_env, args.config) if x]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --file, --dsn, --dsn-env, --config")
    if args.file:
        return Source(path=Path(args.file))
    if args.dsn:
        return Source(dsn=args.dsn, table=args.table)
    if args.dsn_env:
        dsn = os.environ.get(args.dsn_env, "")
        if not dsn:
            raise UsageError(f"environment variable {args.dsn_env} is not set")
        return Source(dsn=dsn, table=args.table)
    from pgwarden.pdp.config import load_config  # noqa: PLC0415

    try:
        audit = load_config(Path(args.config)).audit
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if audit.store == "postgres":
        return Source(dsn=audit.dsn, table=audit.table)
    return Source(path=audit.path)


def filters_of(args: argparse.Namespace) -> Filters:
    return Filters(
        subject=args.subject,
        since_us=parse_time(args.since) if args.since else None,
        until_us=parse_time(args.until) if args.until else None,
        action=args.action,
        relation=args.relation,
        kind=args.kind,
        session=args.session,
    )


# -- reading -----------------------------------------------------------------------------


def _file_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    for _, text in read_jsonl_lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # `verify` reports it
        if isinstance(record, dict):
            yield record


async def _table_records(
    source: Source, filters: Filters, *, newest_first: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    where, params = filters.sql()
    order = "time_us DESC, replica_id, seq DESC" if newest_first else "time_us, replica_id, seq"
    out = []
    async for _, text in read_table(
        source.dsn, source.table, where=where, params=params, order=order, limit=limit
    ):
        out.append(json.loads(text))
    return out


def matching(source: Source, filters: Filters, *, last: int | None = None) -> list[dict[str, Any]]:
    """Records of ``source`` that pass ``filters``, oldest first (only the ``last`` N)."""
    if source.path is not None:
        found = [r for r in _file_records(source.path) if filters.matches(r)]
        return found[-last:] if last else found
    records = asyncio.run(
        _table_records(source, filters, newest_first=last is not None, limit=last)
    )
    return list(reversed(records)) if last is not None else records


# -- output ------------------------------------------------------------------------------


def row_of(record: dict[str, Any]) -> dict[str, str]:
    statement = record.get("statement") or {}
    outcome = record.get("outcome") or {}
    decision = record.get("decision") or {}
    relations = ",".join(f"{r['schema']}.{r['name']}" for r in statement.get("relations", []))
    return {
        "time": str(record.get("time", "")),
        "kind": str(record.get("kind", "")),
        "subject": str(record.get("identity", {}).get("subject", "")),
        "action": str(decision.get("action", "")),
        "command": str(statement.get("command", "")),
        "relations": relations,
        "rows": "" if not outcome else str(outcome.get("rows", "")),
        "bytes": "" if not outcome else str(outcome.get("bytes_sent", "")),
    }


def render(records: Iterable[dict[str, Any]], fmt: str, out: Any) -> None:
    records = list(records)
    if fmt == "json":
        for record in records:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        return
    rows = [row_of(r) for r in records]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in TABLE_COLUMNS}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in TABLE_COLUMNS).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(row[c].ljust(widths[c]) for c in TABLE_COLUMNS).rstrip() + "\n")


# -- commands ----------------------------------------------------------------------------


def verify_source(source: Source) -> Verification:
    if source.path is not None:
        if not source.path.exists():
            raise UsageError(f"{source.path}: no such file")
        return verify(read_jsonl_lines(source.path))

    async def stream() -> Verification:
        verifier = Verifier()
        async for position, text in read_table(source.dsn, source.table):
            verifier.feed(position, text)
            if verifier.done:
                break
        return verifier.result

    return asyncio.run(stream())


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the hash chains of an audit file or table; name the first broken link."""
    source = source_of(args)
    result = verify_source(source)
    heads_problem = _check_heads(result, args.head or [])
    where = str(source.path) if source.path else f"table {source.table}"
    if args.format == "json":
        print(
            json.dumps(
                {
                    "ok": result.ok and not heads_problem,
                    "records": result.records,
                    "heads": {k: {"seq": v.seq, "hash": v.hash} for k, v in result.heads.items()},
                    "breaks": [b.__dict__ for b in result.breaks],
                    "head_problems": heads_problem,
                },
                sort_keys=True,
            )
        )
    else:
        for replica, head in sorted(result.heads.items()):
            print(f"chain {replica}: {head.seq} records, head {head.hash}")
        if result.first_break is not None:
            print(f"BROKEN {where}: first broken link at {result.first_break.describe()}")
            for extra in result.breaks[1:]:
                print(f"  also: {extra.describe()}")
        for problem in heads_problem:
            print(f"BROKEN {where}: {problem}")
        if result.ok and not heads_problem:
            print(f"OK {where}: {result.records} records, every link intact")
    return 0 if result.ok and not heads_problem else 1


def _check_heads(result: Verification, expected: list[str]) -> list[str]:
    """``--head REPLICA:SEQ:HASH`` (recorded earlier): the chain must still hold that
    record. Catches records deleted from the end, which no later link can reveal."""
    problems = []
    for text in expected:
        replica, _, rest = text.rpartition(":")
        replica, _, seq_text = replica.rpartition(":")
        head = result.heads.get(replica)
        if not seq_text.isdigit() or not replica:
            raise UsageError(f"--head must be REPLICA:SEQ:HASH, got {text!r}")
        if head is None or head.seq < int(seq_text):
            have = head.seq if head else 0
            problems.append(
                f"chain {replica!r} ends at seq {have}, before the recorded head seq "
                f"{seq_text}: records were deleted from its end"
            )
        elif head.seq == int(seq_text) and head.hash != rest:
            problems.append(f"chain {replica!r} head seq {seq_text} has another hash")
    return problems


def cmd_query(args: argparse.Namespace) -> int:
    """Print the records that match the filters, oldest first."""
    records = matching(source_of(args), filters_of(args))
    if args.limit:
        records = records[: args.limit]
    render(records, args.format, sys.stdout)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """Print the last records that match the filters; --follow keeps printing new ones."""
    source = source_of(args)
    filters = filters_of(args)
    records = matching(source, filters, last=args.lines)
    render(records, args.format, sys.stdout)
    sys.stdout.flush()
    if not args.follow:
        return 0
    if source.path is None:
        raise UsageError("--follow reads a file (--file or a jsonl --config)")
    _follow(source.path, filters, args.format, lambda: False)
    return 0


def _follow(path: Path, filters: Filters, fmt: str, stop: Callable[[], bool]) -> None:
    with path.open("r", encoding="utf-8", errors="replace") as f:
        f.seek(0, os.SEEK_END)
        partial = ""
        while not stop():
            line = f.readline()
            if not line:
                time.sleep(0.25)  # a file has no change notification here: poll
                continue
            partial += line
            if not partial.endswith("\n"):
                continue
            text, partial = partial, ""
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and filters.matches(record):
                render([record], fmt, sys.stdout)
                sys.stdout.flush()


def run_command(args: argparse.Namespace) -> int:
    try:
        result: int = args.audit_func(args)
    except UsageError as exc:
        print(f"pgwarden audit: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # e.g. an unreachable database
        print(f"pgwarden audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return result


def _source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("source (one of)")
    group.add_argument("--file", help="a JSON Lines audit file")
    group.add_argument("--dsn", help="a PostgreSQL DSN holding the audit table")
    group.add_argument("--dsn-env", help="an environment variable holding the DSN")
    group.add_argument("--config", help="a PDP config file: use its [audit] store")
    parser.add_argument("--table", default="pgwarden_audit", help="audit table (with --dsn)")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--subject", help="identity subject, e.g. agent:reporting")
    group.add_argument("--since", help="from this time (ISO 8601, or 15m / 2h / 7d ago)")
    group.add_argument("--until", help="before this time")
    group.add_argument("--action", choices=("allow", "deny", "require_approval"))
    group.add_argument("--relation", help="a relation the statement touched: name or schema.name")
    group.add_argument(
        "--kind",
        choices=("statement", "refusal", "session_open", "session_close", "auth_refused"),
    )
    group.add_argument("--session", help="a session id")


def add_command(subparsers: Any) -> None:
    """Register ``pgwarden audit tail|query|verify`` on the CLI's subparsers."""
    audit = subparsers.add_parser("audit", help="read and verify the audit trail")
    audit.set_defaults(func=run_command)
    commands = audit.add_subparsers(dest="audit_command", required=True)
    tail = commands.add_parser("tail", help=cmd_tail.__doc__)
    _source_options(tail)
    _filter_options(tail)
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.set_defaults(audit_func=cmd_tail)
    query = commands.add_parser("query", help=cmd_query.__doc__)
    _source_options(query)
    _filter_options(query)
    query.add_argument("--limit", type=int, default=0, help="at most this many records")
    query.set_defaults(audit_func=cmd_query)
    check = commands.add_parser("verify", help=cmd_verify.__doc__)
    _source_options(check)
    check.add_argument(
        "--head",
        action="append",
        metavar="REPLICA:SEQ:HASH",
        help="a chain head recorded earlier (e.g. from a previous verify): detects "
        "records deleted from the end of a chain",
    )
    check.set_defaults(audit_func=cmd_verify)
