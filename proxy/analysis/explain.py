"""``pgwarden explain``: print the input document the policy would see for some SQL.

::

    pgwarden explain --identity agent:reporting --groups analytics \\
        "SELECT email FROM customers LIMIT 10"

Without ``--dsn`` the analysis runs without a schema catalog (``*`` stays unexpanded and
views unresolved); with ``--dsn`` (``postgresql://user:password@host:port/db``) the
catalog is loaded from that database first. With ``--pdp HOST:PORT`` (and a bearer
token in ``$PGWARDEN_PDP_TOKEN``) each document is also sent to that PDP and printed with
its decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from pgwarden.proxy.analysis.analyzer import DEFAULT_SEARCH_PATH, Analyzer
from pgwarden.proxy.analysis.catalog import Catalog
from pgwarden.proxy.catalog_loader import fetch_catalog
from pgwarden.proxy.decision import Identity, SessionFacts, Statement
from pgwarden.proxy.pdp_client import PdpClient, PdpClientConfig
from pgwarden.proxy.upstream import UpstreamTarget


def input_documents(
    sql: str,
    identity: Identity,
    session: SessionFacts,
    *,
    catalog: Catalog | None = None,
    search_path: str = DEFAULT_SEARCH_PATH,
    protocol: str = "simple",
) -> list[dict[str, Any]]:
    """One input document (``identity``, ``session``, ``statement``) per statement."""
    analyzer = Analyzer(catalog)
    state = analyzer.new_session(user=session.requested_user or None, search_path=search_path)
    documents: list[dict[str, Any]] = []
    for analyzed in analyzer.analyze_query(sql, state, protocol):
        document: dict[str, Any] = {
            "identity": identity.document(),
            "session": session.document(in_transaction=state.in_transaction),
            "statement": dict(analyzed.facts),
        }
        if analyzed.parse_error is not None:
            document["parse_error"] = {
                "message": analyzed.parse_error.message,
                "position": analyzed.parse_error.position,
            }
        documents.append(document)
        state.apply(analyzed)
    return documents


def load_catalog_from(dsn: str) -> Catalog:
    """Load the schema catalog of the database at ``dsn`` (a postgresql:// URI), over the
    proxy's own protocol client, in a read-only transaction."""
    url = urlsplit(dsn)
    if url.scheme not in ("postgres", "postgresql") or not url.username or not url.hostname:
        raise SystemExit(
            "pgwarden explain: --dsn must be postgresql://user[:password]@host[:port]/database"
        )
    target = UpstreamTarget(url.hostname, url.port or 5432)
    return asyncio.run(
        fetch_catalog(
            target,
            user=unquote(url.username),
            password=unquote(url.password or "") or None,
            database=url.path.lstrip("/") or unquote(url.username),
        )
    )


async def decide(
    address: str,
    token: str | None,
    identity: Identity,
    session: SessionFacts,
    documents: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The PDP's decision for each document (``--pdp``)."""
    config = PdpClientConfig(
        (address,), token=token, cache_max_entries=0, watch_revisions=False, deadline_s=5.0
    )
    client = await PdpClient(config, proxy_id="explain").start()
    try:
        statements = [Statement.of(d["statement"]) for d in documents]
        decisions = await client.decide(identity, session, statements, in_transaction=False)
    finally:
        await client.close()
    return [
        {
            "action": str(d.action),
            "reasons": list(d.reasons),
            "mask": dict(d.mask),
            "row_limit": d.row_limit,
            "cache_ttl_s": d.cache_ttl_s,
            "dry_run": d.dry_run,
            "decision_id": d.decision_id,
            "revision": d.revision,
            "code": d.code,
        }
        for d in decisions
    ]


def add_explain_parser(sub: Any) -> None:
    """Register ``explain`` on the ``pgwarden`` command's subparsers."""
    parser = sub.add_parser("explain", help="print the input document for some SQL as JSON")
    parser.add_argument("--identity", required=True, metavar="SUBJECT", help="token subject")
    parser.add_argument(
        "--groups",
        action="append",
        default=[],
        metavar="GROUP[,GROUP…]",
        help="the identity's groups (comma separated; repeatable)",
    )
    parser.add_argument("--issuer", default="pgwarden-explain", help="token issuer")
    parser.add_argument("--database", default="postgres", help="session database name")
    parser.add_argument("--user", default="", help="the requested database user")
    parser.add_argument("--search-path", default=DEFAULT_SEARCH_PATH, help="session search_path")
    parser.add_argument(
        "--protocol", choices=("simple", "extended"), default="simple", help="wire protocol"
    )
    parser.add_argument("--dsn", help="load the schema catalog from this database first")
    parser.add_argument("--pdp", metavar="HOST:PORT", help="also ask this PDP for decisions")
    parser.add_argument(
        "--pdp-token-env",
        default="PGWARDEN_PDP_TOKEN",
        metavar="VAR",
        help="environment variable holding the bearer token for --pdp "
        "(default: %(default)s; never on the command line)",
    )
    parser.add_argument("sql", help="the SQL text (one or more statements)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    groups: list[str] = []
    for item in args.groups:
        groups.extend(g for g in item.split(",") if g)
    identity = Identity(subject=args.identity, issuer=args.issuer, groups=tuple(groups))
    session = SessionFacts(
        id="explain",
        proxy_id="explain",
        client_addr="",
        database=args.database,
        application_name="pgwarden explain",
        tls=False,
        requested_user=args.user,
    )
    catalog = load_catalog_from(args.dsn) if args.dsn else None
    documents = input_documents(
        args.sql,
        identity,
        session,
        catalog=catalog,
        search_path=args.search_path,
        protocol=args.protocol,
    )
    if args.pdp:
        for document, decision in zip(
            documents,
            asyncio.run(
                decide(args.pdp, os.environ.get(args.pdp_token_env), identity, session, documents)
            ),
            strict=True,
        ):
            document["decision"] = decision
    output: Any = documents[0] if len(documents) == 1 else documents
    json.dump(output, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if any("parse_error" in d for d in documents) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``explain`` on its own (``python -m pgwarden.proxy.analysis.explain``)."""
    parser = argparse.ArgumentParser(prog="pgwarden")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["explain", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
