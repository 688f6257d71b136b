"""Fixtures for the proxy's integration tests: the real proxy process in front of the
harness's PostgreSQL cluster, with development tokens for the reference identities."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgwarden.pdp.audit.chain import verify
from pgwarden.pdp.audit.store import read_jsonl_lines
from pgwarden.proxy.auth.dev_tokens import issue_dev_token
from pgwarden.stack import local
from pgwarden.stack.pgwarden_process import PgwardenProcess
from pgwarden.stack.postgres import PostgresCluster
from pgwarden.stack.process import free_port
from tests.integration.stack_fixtures import running_stack
from tests.integration.wiretap import (
    WiretapProcess,
    jsonl_records,
    proxy_certificate,
    reconcile,
)

IDENTITIES = {
    "agent:reporting": ["analytics"],
    "agent:etl": ["etl"],
    "human:dba": ["dba"],
}
# The local decision point's deny-list for these tests (regexes on normalized SQL).
DENY_PATTERNS = [r"\bforbidden_table\b", r"\bpg_read_file\b"]
TEST_DB = "proxytest"


@dataclass
class ProxyUnderTest:
    """A running proxy and how to reach it: clients use ``port``, the suite's wiretap in
    front of the proxy's own ``listen_port``."""

    host: str
    port: int
    tokens: dict[str, str]
    process: PgwardenProcess
    cluster: PostgresCluster
    listen_port: int

    def audit_records(self) -> list[dict[str, Any]]:
        """The proxy's audit trail so far (``[decision] mode = "local"`` writes it itself)."""
        trail = self.process.log_path.parent / "audit.jsonl"
        return jsonl_records(trail)

    def dsn(self, subject: str = "agent:reporting", dbname: str = TEST_DB, **extra: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **extra}.items())
        return (
            f"postgresql://{subject.replace(':', '%3A')}:{self.tokens[subject]}"
            f"@{self.host}:{self.port}/{dbname}?{params}"
        )


def write_proxy_config(
    path: Path,
    *,
    cluster: PostgresCluster,
    port: int,
    tokens_file: Path,
    auth: str = "",
    extra: str = "",
    proxy_settings: str = "",
    upstream_settings: str = "",
    decision_settings: str = "",
) -> None:
    """A proxy config; ``auth``, ``proxy_settings`` and ``upstream_settings`` add keys to
    [auth], [proxy] and [upstream]; ``extra`` appends whole sections."""
    password = cluster.proxy_login.password
    path.write_text(
        f'[proxy]\nlisten = "127.0.0.1"\nport = {port}\nproxy_id = "test-proxy"\n'
        f"{proxy_settings}\n"
        f'[upstream]\nhost = "{cluster.host}"\nport = {cluster.port}\n{upstream_settings}\n'
        f'[upstream.roles.pgwarden_proxy]\npassword = "{password}"\n\n'
        f'[decision]\nmode = "local"\nupstream_role = "pgwarden_proxy"\n'
        f"deny = {json.dumps(DENY_PATTERNS)}\n{decision_settings}\n"
        f'{extra}\n[auth]\ndev_tokens_file = "{tokens_file}"\n{auth}\n'
    )


@pytest.fixture(scope="session")
def proxy_db(pg_cluster: PostgresCluster) -> str:
    """A database owned by the proxy's upstream role, with a few tables."""
    pg_cluster.create_database(TEST_DB, owner="pgwarden_proxy")
    pg_cluster.psql(
        "SET ROLE pgwarden_proxy;"
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));"
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 100) g;"
        "CREATE TABLE forbidden_table (secret text);"
        "INSERT INTO forbidden_table VALUES ('the crown jewels');",
        dbname=TEST_DB,
    )
    return TEST_DB


@pytest.fixture(scope="session")
def make_proxy(
    pg_cluster: PostgresCluster,
    proxy_db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ProxyUnderTest]]:
    """Start real proxy processes (``python -m pgwarden proxy``), each behind a wiretap;
    all stopped at the end, then each proxy's audit trail is checked: one intact chain, and
    every statement its clients saw end recorded once with the rows and bytes they got."""
    started: list[tuple[PgwardenProcess, WiretapProcess]] = []

    def make(
        extra_config: str = "",
        *,
        name: str = "proxy",
        auth: str = "",
        proxy_settings: str = "",
        upstream_settings: str = "",
        decision_settings: str = "",
    ) -> ProxyUnderTest:
        base = tmp_path_factory.mktemp(name)
        tokens_file = base / "dev_tokens.toml"
        tokens = {s: issue_dev_token(tokens_file, s, g) for s, g in IDENTITIES.items()}
        port = free_port()
        config = base / "proxy.toml"
        write_proxy_config(
            config,
            cluster=pg_cluster,
            port=port,
            tokens_file=tokens_file,
            auth=auth,
            extra=extra_config,
            proxy_settings=proxy_settings,
            upstream_settings=upstream_settings,
            decision_settings=decision_settings,
        )
        process = PgwardenProcess(
            "proxy", config, host="127.0.0.1", port=port, log_path=base / "proxy.log"
        )
        tap = WiretapProcess(base, ("127.0.0.1", port), tls=proxy_certificate(config))
        started.append((process, tap))
        process.start_and_wait()
        tap.start_and_wait()
        return ProxyUnderTest("127.0.0.1", tap.port, tokens, process, pg_cluster, port)

    yield make
    for process, tap in started:
        process.stop()
        tap.stop()
    for process, tap in started:
        trail = process.log_path.parent / "audit.jsonl"
        records = jsonl_records(trail)
        result = verify(read_jsonl_lines(trail))
        assert result.ok, f"{trail}: {result.first_break}"
        ids = [r["record_id"] for r in records]
        assert len(ids) == len(set(ids)), f"{trail}: a record appears twice"
        problems = reconcile(tap.connections(), records)
        assert not problems, f"{trail} against {tap.out}:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def proxy(make_proxy: Callable[..., ProxyUnderTest]) -> ProxyUnderTest:
    """The default proxy: development tokens, local allow-all with the test deny-list."""
    return make_proxy()


@pytest.fixture(scope="module")
def policy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped policy pack that a test may edit."""
    target = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(local.POLICIES, target)
    return target


@pytest.fixture(scope="module")
def stack(policy_copy: Path) -> Iterator[local.Stack]:
    """The reference scenario running: PostgreSQL, PDP + OPA (a copy of the pack), proxy."""
    with running_stack(policy_copy) as running:
        yield running
