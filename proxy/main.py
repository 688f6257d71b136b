"""``pgwarden proxy --config FILE``: run the proxy until SIGTERM/SIGINT, then shut down
gracefully (stop accepting, let sessions finish within ``shutdown_grace_s``)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from pgwarden.config import ConfigError
from pgwarden.proxy.audit import AuditReporter, LocalAuditStore
from pgwarden.proxy.auth.agent import AgentAuthenticator
from pgwarden.proxy.config import LocalDecisions, ProxyConfig
from pgwarden.proxy.decision import LocalDecisionPoint
from pgwarden.proxy.server import ProxyServer

if TYPE_CHECKING:
    from pgwarden.proxy.pdp_client import PdpClient

_STANDARD_LOG_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_LOG_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


async def serve(config: ProxyConfig) -> None:
    assert config.audit is not None
    authenticator = AgentAuthenticator(config.auth)
    decisions: LocalDecisionPoint | PdpClient
    store: LocalAuditStore | None = None
    if isinstance(config.decisions, LocalDecisions):
        local = config.decisions
        decisions = LocalDecisionPoint(
            local.upstream_role,
            local.deny,
            mask=local.mask,
            row_limit=local.row_limit,
            detect=local.detect,
        )
        # Without a PDP the proxy keeps the chained audit file itself.
        store = await LocalAuditStore(local.audit_file, replica_id=config.proxy_id).start()
        send = store.send
    else:
        # grpc only in pdp mode.
        from pgwarden.proxy.pdp_client import PdpClient  # noqa: PLC0415

        decisions = await PdpClient(config.decisions, proxy_id=config.proxy_id).start()
        send = functools.partial(
            decisions.report_serialized, timeout_s=config.audit.report_timeout_s
        )
    audit = await AuditReporter(config.audit, send, proxy_id=config.proxy_id).start()
    server = ProxyServer(config, authenticator=authenticator, decision_point=decisions, audit=audit)
    await authenticator.warm_up()
    await server.start()
    # Everything loaded so far (modules, config, keys) lives as long as the process:
    # keep it out of the cyclic collector's full collections, which otherwise walk it
    # again and again while sessions allocate (py-spy: ~4-24 % of the local proxy's
    # event-loop samples were gc_collect_main).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "port": server.port}), file=sys.stderr, flush=True)
    await stop.wait()
    logging.getLogger("pgwarden.proxy").info("shutting down", extra={"event": "shutdown"})
    await server.shutdown()
    await audit.close(timeout_s=config.shutdown_grace_s or 5.0)
    await authenticator.close()
    if not isinstance(decisions, LocalDecisionPoint):
        await decisions.close()
    if store is not None:
        await store.close()


def cmd_proxy(args: argparse.Namespace) -> int:
    configure_logging()
    try:
        config = ProxyConfig.load(args.config)
    except ConfigError as exc:
        print(f"pgwarden proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    uvloop.run(serve(config))
    return 0


def add_command(sub: Any) -> None:
    """Register ``pgwarden proxy`` on the CLI's subparsers."""
    parser = sub.add_parser("proxy", help="run the proxy (agents connect here)")
    parser.add_argument("--config", type=Path, required=True, help="proxy config file (TOML)")
    parser.set_defaults(func=cmd_proxy)
