"""The proxy's decision cache: TTL, bounds, revision changes (no network)."""

from __future__ import annotations

import pytest

from pgwarden.proxy.decision import Action, Decision
from pgwarden.proxy.decision_cache import DecisionCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decision(
    ttl: int, *, revision: str = "r1", code: str = "", action: Action = Action.ALLOW
) -> Decision:
    return Decision(action, (), "id", cache_ttl_s=ttl, revision=revision, code=code)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> DecisionCache:
    cache = DecisionCache(10, clock=clock)
    cache.set_revision("r1")
    return cache


def test_allow_hit_within_ttl(cache: DecisionCache, clock: Clock) -> None:
    d = decision(60)
    assert cache.put(b"s", b"q", d)
    assert cache.get(b"s", b"q") is d
    clock.now += 59.9
    assert cache.get(b"s", b"q") is d
    clock.now += 0.2
    assert cache.get(b"s", b"q") is None
    assert cache.peek(b"s", b"q") is None
    assert cache.hits == 2  # misses are noted by the caller that asks the PDP


def test_deny_decisions_are_cached_too(cache: DecisionCache) -> None:
    d = decision(60, action=Action.DENY)
    cache.put(b"s", b"q", d)
    assert cache.get(b"s", b"q") is d


def test_key_is_session_and_statement(cache: DecisionCache) -> None:
    cache.put(b"s", b"q", decision(60))
    assert cache.get(b"s2", b"q") is None
    assert cache.get(b"s", b"q2") is None


def test_ttl_zero_is_never_cached(cache: DecisionCache) -> None:
    assert not cache.put(b"s", b"q", decision(0))
    assert cache.get(b"s", b"q") is None


def test_pdp_refusals_are_never_cached(cache: DecisionCache) -> None:
    assert not cache.put(b"s", b"q", decision(60, code="opa_unavailable"))
    assert len(cache) == 0


def test_revision_change_empties_cache(cache: DecisionCache) -> None:
    cache.put(b"s", b"q", decision(60))
    assert not cache.set_revision("r1")
    assert cache.get(b"s", b"q") is not None
    assert cache.set_revision("r2")
    assert cache.get(b"s", b"q") is None
    assert len(cache) == 0
    assert cache.invalidations == 1


def test_decision_of_another_revision_is_not_kept(cache: DecisionCache) -> None:
    assert not cache.put(b"s", b"q", decision(60, revision="r0"))
    assert len(cache) == 0


def test_bounded(cache: DecisionCache) -> None:
    for i in range(25):
        cache.put(b"s", str(i).encode(), decision(60))
    assert len(cache) <= 10
    assert cache.evictions >= 15
    assert cache.get(b"s", b"24") is not None  # the newest survives


def test_expired_entries_are_evicted_first(cache: DecisionCache, clock: Clock) -> None:
    for i in range(5):
        cache.put(b"old", str(i).encode(), decision(1))
    for i in range(5):
        cache.put(b"new", str(i).encode(), decision(60))
    clock.now += 2
    cache.put(b"new", b"x", decision(60))
    assert all(cache.get(b"new", str(i).encode()) for i in range(5))
    assert cache.evictions == 5


def test_disabled_cache_keeps_nothing(clock: Clock) -> None:
    cache = DecisionCache(0, clock=clock)
    assert not cache.put(b"s", b"q", decision(60, revision=""))


def test_hit_ratio(cache: DecisionCache) -> None:
    assert cache.hit_ratio == 0.0
    cache.put(b"s", b"q", decision(60))
    cache.get(b"s", b"q")
    assert cache.peek(b"s", b"q") is not None  # not counted
    assert cache.get(b"s", b"x") is None
    cache.note_misses(1)
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.hit_ratio == 0.5


def test_forget_drops_only_the_ended_sessions_entries(cache: DecisionCache, clock: Clock) -> None:
    for statement in (b"q1", b"q2"):
        cache.put(b"s-idle", statement, decision(60))
        cache.put(b"s-in-tx", statement, decision(60))
        cache.put(b"other", statement, decision(60))
    cache.forget([b"s-idle", b"s-in-tx", b"never-seen"])
    assert len(cache) == 2
    assert cache.get(b"other", b"q1") is not None
    assert cache.get(b"s-idle", b"q1") is None
    cache.forget([b"s-idle"])  # again: nothing left to drop
    assert len(cache) == 2


def test_forget_after_evictions_and_a_revision_change(cache: DecisionCache, clock: Clock) -> None:
    for i in range(10):
        cache.put(b"s", b"q%d" % i, decision(10 if i < 5 else 60))
    clock.now += 30
    cache.put(b"t", b"q", decision(60))  # full: the five expired entries go
    assert len(cache) == 6
    cache.forget([b"s"])
    assert len(cache) == 1
    cache.put(b"s", b"q", decision(60))
    cache.set_revision("r2")
    cache.forget([b"s", b"t"])  # the index went with the entries
    assert len(cache) == 0
