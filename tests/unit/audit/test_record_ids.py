"""Minted record ids and the index a store keeps them in: exactly a set, a few runs big."""

from __future__ import annotations

import os
import random
import re

from pgwarden.pdp.audit.record_ids import RecordIdIndex, new_record_id


def minted(process: str, n: int) -> str:
    return f"{process}-{n:016x}"


def test_allow_minted_ids_are_unique_and_consecutive() -> None:
    ids = [new_record_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{16}", i) for i in ids)
    assert len({i[:16] for i in ids}) == 1
    counters = [int(i[17:], 16) for i in ids]
    assert counters == list(range(counters[0], counters[0] + 1000))


def test_allow_a_forked_child_mints_ids_of_its_own() -> None:
    read, write = os.pipe()
    new_record_id()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, and leave without running pytest's exit
        os.write(write, new_record_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_record_id()
    assert len(child) == len(parent) == 33
    assert child[:16] != parent[:16]


def test_allow_one_processes_records_in_order_take_one_run() -> None:
    index = RecordIdIndex()
    ids = [new_record_id() for _ in range(100_000)]
    assert all(index.add(i) for i in ids)
    assert len(index) == 100_000
    assert index.runs() == 1
    assert all(i in index for i in ids[::997])
    assert new_record_id() not in index


def test_deny_an_id_held_already_is_not_added_twice() -> None:
    index = RecordIdIndex()
    a, b = minted("a" * 16, 5), "not-minted"
    assert index.add(a)
    assert index.add(b)
    assert not index.add(a)
    assert not index.add(b)
    assert len(index) == 2


def test_allow_gaps_are_runs_that_merge_when_filled() -> None:
    index = RecordIdIndex()
    p = "0123456789abcdef"
    for n in (1, 2, 3, 7, 8, 5):
        assert index.add(minted(p, n))
    assert index.runs() == 3  # 1-3, 5, 7-8
    assert [n for n in range(10) if minted(p, n) in index] == [1, 2, 3, 5, 7, 8]
    assert index.add(minted(p, 4))
    assert index.add(minted(p, 6))
    assert index.runs() == 1
    assert [n for n in range(10) if minted(p, n) in index] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_allow_processes_are_kept_apart() -> None:
    index = RecordIdIndex()
    assert index.add(minted("a" * 16, 1))
    assert minted("b" * 16, 1) not in index
    assert index.add(minted("b" * 16, 1))
    assert index.runs() == 2


def test_allow_other_ids_are_kept_as_they_are() -> None:
    """Ids of another shape (a UUID, an older proxy's 32 hex digits, upper case, a sign
    or blanks that int() would accept) are never read as a counter: no two ids collide."""
    index = RecordIdIndex()
    p = "0123456789abcdef"
    assert index.add(minted(p, 10))
    for other in (
        f"{p}-000000000000000A",
        f"{p}-+00000000000000a",
        f"{p}- 00000000000000a",
        f"{p}000000000000000a",
        "5f0c6a1e-8d7b-4c3a-9e2f-1b0a9c8d7e6f",
        "",
    ):
        assert other not in index
        assert index.add(other)
        assert other in index
    assert index.runs() == 1
    assert len(index) == 7


def test_allow_the_index_holds_exactly_what_a_set_would() -> None:
    """Random ids from a few processes, in random order, some repeated: the index answers
    every add and every lookup as a set does."""
    rng = random.Random(20261203)
    processes = [f"{rng.getrandbits(64):016x}" for _ in range(3)]
    pool = [minted(p, rng.randrange(200)) for p in processes for _ in range(300)]
    pool += [f"other-{rng.randrange(50)}" for _ in range(100)]
    rng.shuffle(pool)
    index, model = RecordIdIndex(), set()
    for record_id in pool:
        assert index.add(record_id) == (record_id not in model)
        model.add(record_id)
    assert len(index) == len(model)
    for p in processes:
        for n in range(202):
            assert (minted(p, n) in index) == (minted(p, n) in model)
    assert index.runs() < sum(1 for i in model if not i.startswith("other-"))
