"""``record_id``: how the proxy mints it, and how a store remembers the ones it holds.

A store must know every id it holds (a replayed record is stored once). Kept one string
per record, that costs ~115 bytes per record for as long as the PDP runs: 2 GB an hour at
5,000 statements a second. So the proxy mints ids that a store can keep as ranges:
``<16 hex digits naming the proxy process>-<16 hex digits of a counter>``, the counter
going up by one per record in the order the records are spooled and sent. The ids a store
holds from one proxy process are then a few runs of consecutive counters, and
:class:`RecordIdIndex` keeps those runs: a few dozen bytes per proxy process. Any other id
(older records, another client of the contract) is kept as it is.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from pgwarden.proxy.decision import ProcessIds

_MINTED = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})")

# The next id of this process: unique, and one more than the last. A counter of its own,
# not the decision ids': a store keeps runs only of ids without gaps between them.
new_record_id = ProcessIds("-").next


RecordKey = tuple[str, int] | str  # (process, counter) of a minted id, else the id itself


class RecordIdIndex:
    """The set of ids a store holds: minted ids as runs of consecutive counters per
    process (sorted, disjoint, never adjacent ``[first, last]`` intervals), others as
    strings. A store that checks a batch before writing it and remembers it after reads
    each id once: :meth:`key`, then :meth:`holds` and :meth:`add_key`."""

    __slots__ = ("_count", "_others", "_runs")

    def __init__(self) -> None:
        self._runs: dict[str, tuple[list[int], list[int]]] = {}  # process -> firsts, lasts
        self._others: set[str] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, record_id: str) -> bool:
        return self.holds(self.key(record_id))

    def add(self, record_id: str) -> bool:
        """Remember ``record_id``; False when it was held already."""
        return self.add_key(self.key(record_id))

    @staticmethod
    def key(record_id: str) -> RecordKey:
        minted = _MINTED.fullmatch(record_id)
        return record_id if minted is None else (minted[1], int(minted[2], 16))

    def holds(self, key: RecordKey) -> bool:
        if isinstance(key, str):
            return key in self._others
        runs = self._runs.get(key[0])
        if runs is None:
            return False
        n = key[1]
        firsts, lasts = runs
        if n > lasts[-1]:  # later than anything held: a new record
            return False
        i = bisect_right(firsts, n) - 1
        return i >= 0 and n <= lasts[i]

    def add_key(self, key: RecordKey) -> bool:
        """Remember the id of ``key``; False when it was held already."""
        if isinstance(key, str):
            if key in self._others:
                return False
            self._others.add(key)
        else:
            process, n = key
            runs = self._runs.get(process)
            if runs is None:
                self._runs[process] = ([n], [n])
            elif not _add_to_runs(*runs, n):
                return False
        self._count += 1
        return True

    def runs(self) -> int:
        """How many runs the minted ids take (what the index costs, besides ``others``)."""
        return sum(len(firsts) for firsts, _ in self._runs.values())


def _add_to_runs(firsts: list[int], lasts: list[int], n: int) -> bool:
    if n == lasts[-1] + 1:  # the next record of the latest run: nearly every record
        lasts[-1] = n
        return True
    i = bisect_right(firsts, n) - 1
    if i >= 0 and n <= lasts[i]:
        return False
    after = i + 1 < len(firsts) and firsts[i + 1] == n + 1
    if i >= 0 and lasts[i] == n - 1:
        if after:  # n fills the gap between two runs
            lasts[i] = lasts[i + 1]
            del firsts[i + 1], lasts[i + 1]
        else:
            lasts[i] = n
    elif after:
        firsts[i + 1] = n
    else:
        firsts.insert(i + 1, n)
        lasts.insert(i + 1, n)
    return True
