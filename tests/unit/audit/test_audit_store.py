"""The JSON Lines store and the group-commit writer: chained, idempotent, crash-safe."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pgwarden.config import ConfigError, Section
from pgwarden.pdp.audit.chain import verify
from pgwarden.pdp.audit.config import AuditStoreConfig, parse_audit_section
from pgwarden.pdp.audit.record_ids import new_record_id
from pgwarden.pdp.audit.records import record_document
from pgwarden.pdp.audit.store import AuditStoreError, AuditWriter, JsonlStore, read_jsonl_lines
from pgwarden.pdp.config import parse_config
from pgwarden.v1 import decision_pb2 as pb


def documents(*ids: str) -> list[dict[str, Any]]:
    return [
        record_document(
            pb.AuditRecord(
                record_id=i,
                kind=pb.AUDIT_KIND_SESSION_OPEN,
                time_unix_us=1_795_499_986_000_000,
                session_id="s",
                identity=pb.Identity(subject="agent:etl"),
            )
        )
        for i in ids
    ]


def store(path: Path, fsync: str = "batch", replica: str = "pdp-a") -> JsonlStore:
    return JsonlStore(AuditStoreConfig(path=path, fsync=fsync, replica_id=replica))


def stored_ids(path: Path) -> list[str]:
    return [json.loads(text)["record_id"] for _, text in read_jsonl_lines(path)]


@pytest.mark.parametrize("fsync", ["always", "batch", "interval"])
async def test_allow_append_chains_and_skips_ids_already_stored(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "audit.jsonl"
    s = store(path, fsync)
    await s.open()
    assert await s.append(documents("a", "b")) == [True, True]
    assert await s.append(documents("b", "c", "c")) == [False, True, False]
    await s.close()
    assert stored_ids(path) == ["a", "b", "c"]
    result = verify(read_jsonl_lines(path))
    assert result.ok
    assert result.heads["pdp-a"].seq == 3


async def test_allow_reopen_continues_the_chain_and_remembers_ids(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = store(path)
    await first.open()
    await first.append(documents("a", "b"))
    await first.close()
    second = store(path)
    await second.open()
    assert await second.append(documents("a", "c")) == [False, True]
    await second.close()
    assert stored_ids(path) == ["a", "b", "c"]
    assert verify(read_jsonl_lines(path)).ok


async def test_allow_a_proxys_ids_are_remembered_as_one_run_across_a_reopen(
    tmp_path: Path,
) -> None:
    """What a long-lived PDP keeps per record: the ids a proxy mints, stored in batches,
    are one run of counters, also after a restart reads them back from the file."""
    path = tmp_path / "audit.jsonl"
    ids = [new_record_id() for _ in range(1000)]
    first = store(path)
    await first.open()
    for start in range(0, 1000, 100):
        await first.append(documents(*ids[start : start + 100]))
    assert (len(first.record_ids), first.record_ids.runs()) == (1000, 1)
    await first.close()
    second = store(path)
    await second.open()
    assert (len(second.record_ids), second.record_ids.runs()) == (1000, 1)
    later = new_record_id()
    assert await second.append(documents(ids[500], later, ids[999])) == [False, True, False]
    await second.close()
    assert stored_ids(path) == [*ids, later]


async def test_allow_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    """A crash in the middle of a write leaves half a line; that batch was never
    acknowledged, so the next open cuts it and the chain goes on from the last whole one."""
    path = tmp_path / "audit.jsonl"
    s = store(path)
    await s.open()
    await s.append(documents("a", "b"))
    await s.close()
    with path.open("ab") as f:
        f.write(b'{"record_id":"c","seq":3,"pre')
    again = store(path)
    await again.open()
    assert await again.append(documents("c")) == [True]
    await again.close()
    assert stored_ids(path) == ["a", "b", "c"]
    assert verify(read_jsonl_lines(path)).ok


async def test_deny_write_to_an_unwritable_file_raises_and_keeps_the_head(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    s = store(path)
    await s.open()
    await s.append(documents("a"))
    real_fd = s._fd
    s._fd = 10_000  # a descriptor that is not open: EBADF, like a failing disk
    with pytest.raises(AuditStoreError):
        await s.append(documents("b"))
    assert s.head.seq == 1
    assert "b" not in s.record_ids
    s._fd = real_fd
    assert await s.append(documents("b")) == [True]
    await s.close()
    assert verify(read_jsonl_lines(path)).ok


async def test_allow_writer_groups_concurrent_batches_into_one_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    s = store(path)
    appends: list[int] = []
    original = s.append

    async def counting(batch: Any) -> list[bool]:
        appends.append(len(batch))
        return await original(batch)

    s.append = counting  # type: ignore[method-assign]
    writer = AuditWriter(s)
    await writer.start()
    results = await asyncio.gather(
        *(writer.write(documents(f"x{i}", f"y{i}")) for i in range(10)),
        writer.write(documents("x0")),
    )
    await writer.close()
    assert results[:10] == [2] * 10
    assert results[10] == 0  # a duplicate of x0, stored once
    assert sum(appends) == 21
    assert len(appends) < 11  # batches were grouped
    assert len(stored_ids(path)) == 20
    assert verify(read_jsonl_lines(path)).ok


async def test_deny_writer_failure_reaches_every_waiting_caller(tmp_path: Path) -> None:
    s = store(tmp_path / "audit.jsonl")
    writer = AuditWriter(s)
    await writer.start()
    s._fd, real_fd = 10_000, s._fd
    with pytest.raises(AuditStoreError):
        await writer.write(documents("a"))
    s._fd = real_fd
    assert await writer.write(documents("a")) == 1
    await writer.close()


def test_allow_audit_section_defaults_and_values(tmp_path: Path) -> None:
    section = Section({}, source="pdp.toml", prefix="audit")
    config = parse_audit_section(section, tmp_path)
    assert config.store == "jsonl"
    assert config.path == tmp_path / "audit.jsonl"
    assert config.fsync == "batch"
    assert config.replica_id  # the host name
    section = Section(
        {"store": "postgres", "dsn": "postgresql:///x", "table": "audit.trail", "replica_id": "a"},
        source="pdp.toml",
        prefix="audit",
    )
    config = parse_audit_section(section, tmp_path)
    assert (config.store, config.table, config.chain_id) == ("postgres", "audit.trail", "a")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"store": "sqlite"}, "audit.store"),
        ({"fsync": "never"}, "audit.fsync"),
        ({"store": "postgres"}, "audit.dsn"),
        ({"store": "postgres", "dsn_env": "PGWARDEN_NO_SUCH_VARIABLE"}, "audit.dsn_env"),
        ({"table": "x; drop table y"}, "audit.table"),
        ({"fsync_interval_ms": 0}, "audit.fsync_interval_ms"),
        ({"colour": "blue"}, "audit.colour"),
    ],
)
def test_deny_bad_audit_section_names_the_key(
    tmp_path: Path, values: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_audit_section(Section(values, source="pdp.toml", prefix="audit"), tmp_path)
    assert error.value.key == key


def test_allow_pdp_config_reads_the_audit_table(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    data = {
        "pdp": {"auth": {"tokens": ["t"]}, "opa": {"policies": "policies"}},
        "audit": {"path": "trail/audit.jsonl", "fsync": "always", "replica_id": "r1"},
    }
    config = parse_config(data, source="pdp.toml", base=tmp_path)
    assert config.audit.path == tmp_path / "trail" / "audit.jsonl"
    assert config.audit.fsync == "always"
    assert config.audit.chain_id == "r1"
