"""The test harness: a real throwaway PostgreSQL cluster and real OPA servers.

Session-scoped where a start costs time; every wait is a readiness poll, never a sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgwarden.stack.opa import OpaServer
from pgwarden.stack.postgres import PostgresCluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster with a ``pgwarden_proxy`` SCRAM login; removed at the end."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def start_opa(tmp_path: Path) -> Iterator[Callable[..., OpaServer]]:
    """Start real OPA servers loaded with the given paths; all are stopped after the test."""
    started: list[OpaServer] = []

    def start(*paths: Path, watch: bool = False) -> OpaServer:
        server = OpaServer(list(paths), log_dir=tmp_path / f"opa-{len(started)}", watch=watch)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def policy_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    """One OPA server loaded with the shipped policy pack (``policies/``)."""
    server = OpaServer([REPO / "policies"], log_dir=tmp_path_factory.mktemp("policy-opa"))
    with server:
        yield server
