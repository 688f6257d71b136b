"""The policy revision: a digest of what is loaded, content-based (no network)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pgwarden.pdp.opa_supervisor import (
    RevisionFeed,
    directory_signature,
    policy_files,
    revision_of,
)


def make_pack(root: Path) -> None:
    (root / "pgwarden").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pgwarden" / "decision.rego").write_text("package pgwarden\n")
    (root / "pgwarden" / "decision_test.rego").write_text("package pgwarden.decision_test\n")
    (root / "data" / "classification.json").write_text('{"email": "pii"}')
    (root / "README.md").write_text("docs")
    (root / ".hidden.rego").write_text("package hidden\n")


def test_loaded_files_exclude_tests_docs_and_hidden(tmp_path: Path) -> None:
    make_pack(tmp_path)
    assert sorted(policy_files(tmp_path)) == ["data/classification.json", "pgwarden/decision.rego"]


def test_revision_follows_content_not_metadata(tmp_path: Path) -> None:
    make_pack(tmp_path)
    first = revision_of(policy_files(tmp_path))
    (tmp_path / "pgwarden" / "decision.rego").write_text("package pgwarden\n")  # same bytes
    assert revision_of(policy_files(tmp_path)) == first
    (tmp_path / "pgwarden" / "decision_test.rego").write_text("package x\n")  # tests: not loaded
    assert revision_of(policy_files(tmp_path)) == first
    (tmp_path / "data" / "classification.json").write_text('{"email": "secret"}')  # data
    second = revision_of(policy_files(tmp_path))
    assert second != first
    (tmp_path / "data" / "classification.json").rename(tmp_path / "data" / "c2.json")  # path
    assert revision_of(policy_files(tmp_path)) not in (first, second)


def test_signature_changes_on_edit(tmp_path: Path) -> None:
    make_pack(tmp_path)
    before = directory_signature(tmp_path)
    (tmp_path / "pgwarden" / "decision.rego").write_text("package pgwarden\n\n")
    assert directory_signature(tmp_path) != before


async def test_feed_wakes_watchers_and_closes() -> None:
    feed = RevisionFeed()
    seen: list[str] = []
    feed.listeners.append(seen.append)
    waiter = asyncio.create_task(feed.next_after(""))
    feed.publish("r1")
    assert await waiter == "r1"
    feed.publish("r1")  # same revision: no event
    assert seen == ["r1"]
    waiter = asyncio.create_task(feed.next_after("r1"))
    feed.close()
    assert await waiter is None
