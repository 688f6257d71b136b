"""The proxy's decision cache: bounded, per-decision TTL, emptied on a revision change.

Key: ``(session_key, statement_digest)`` — the digest of the identity and session facts
(computed once per session, per value of ``in_transaction``) and ``Statement.digest``
(computed once per analysis). Together they identify the exact input document the proxy
sent, less ``context``, which the PDP adds and which policies that read it answer with a
``cache_ttl_s`` of 0 or a few seconds. The revision is the third part of the key,
enforced by construction: every entry belongs to :attr:`DecisionCache.revision`, and a
new revision empties the cache. A decision whose ``cache_scope`` is "identity" is kept
under a *shared* key instead: the same digest without the connection's own session facts
(``CONNECTION_FACTS``), so that every session of the identity finds it. The PDP client
looks up the shared key first (the shipped pack's decisions are all shared: one lookup),
then the session's.

A hit is two dict operations and a clock read; nothing is serialized. An index by
session key lets a session that ended take its entries with it (:meth:`forget`): they
could never be hit again, as the session's facts are in their keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from pgwarden.proxy.decision import Decision

CacheKey = tuple[bytes, bytes]


class DecisionCache:
    """Decisions by (session key, statement digest), for one policy revision."""

    __slots__ = (
        "_by_session",
        "_clock",
        "_entries",
        "evictions",
        "hits",
        "invalidations",
        "max_entries",
        "misses",
        "revision",
    )

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self.revision = ""
        self._entries: dict[CacheKey, tuple[Decision, float]] = {}
        self._by_session: dict[bytes, set[bytes]] = {}  # session key -> statement digests
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_key: bytes, statement_digest: bytes) -> Decision | None:
        """The cached decision (counted as a hit), or None (absent or expired). Misses are
        counted by whoever then asks the PDP (:meth:`note_misses`), so that looking twice
        before one PDP call (``decide_now`` then ``decide``) counts one miss."""
        entry = self._entries.get((session_key, statement_digest))
        if entry is not None and entry[1] > self._clock():
            self.hits += 1
            return entry[0]
        return None

    def peek(self, session_key: bytes, statement_digest: bytes) -> Decision | None:
        """Like :meth:`get`, without counting."""
        entry = self._entries.get((session_key, statement_digest))
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return None

    def note_misses(self, count: int) -> None:
        self.misses += count

    def put(self, session_key: bytes, statement_digest: bytes, decision: Decision) -> bool:
        """Keep ``decision`` for its ``cache_ttl_s``; refusals of the PDP itself (a code),
        TTL 0 and decisions of another revision are never kept. Returns whether it was."""
        if not decision.cacheable or self.max_entries == 0:
            return False
        if decision.revision != self.revision:
            return False
        entries = self._entries
        key = (session_key, statement_digest)
        if key not in entries:
            if len(entries) >= self.max_entries:
                self._evict()
            self._by_session.setdefault(session_key, set()).add(statement_digest)
        entries[key] = (decision, self._clock() + decision.cache_ttl_s)
        return True

    def forget(self, session_keys: Iterable[bytes]) -> None:
        """Drop the entries of a session that ended (its keys, one per value of
        ``in_transaction``)."""
        entries = self._entries
        for session_key in session_keys:
            for digest in self._by_session.pop(session_key, ()):
                del entries[session_key, digest]

    def set_revision(self, revision: str) -> bool:
        """Make ``revision`` current; a change empties the cache. Returns whether it did."""
        if revision == self.revision:
            return False
        self.revision = revision
        if self._entries:
            self.invalidations += 1
        self.clear()
        return True

    def clear(self) -> None:
        self._entries.clear()
        self._by_session.clear()

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _evict(self) -> None:
        """Make room: drop expired entries, else the oldest tenth (insertion order)."""
        now = self._clock()
        entries = self._entries
        expired = [k for k, (_, expires) in entries.items() if expires <= now]
        if not expired:
            count = max(1, len(entries) // 10)
            expired = [k for k, _ in zip(entries, range(count), strict=False)]
        by_session = self._by_session
        for key in expired:
            del entries[key]
            digests = by_session[key[0]]
            digests.discard(key[1])
            if not digests:
                del by_session[key[0]]
        self.evictions += len(expired)
