"""The hash chain: one per PDP replica, so replicas never contend for a common head.

Each stored record carries ``replica_id``, ``seq`` (1, 2, 3 … within its chain),
``prev_hash`` (the ``hash`` of the record before it in its chain; :data:`GENESIS` for the
first) and ``hash`` = SHA-256(``prev_hash`` ‖ canonical JSON of the record without
``hash``), hex. Editing a record changes its hash; deleting one leaves a gap in ``seq`` and
a ``prev_hash`` that points at nothing. :func:`verify` names the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgwarden.pdp.audit.records import canonical

GENESIS = "0" * 64


def record_hash(prev_hash: str, document: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the record's canonical JSON without ``hash``."""
    body = {k: v for k, v in document.items() if k != "hash"}
    return hashlib.sha256(prev_hash.encode() + canonical(body)).hexdigest()


@dataclass
class ChainHead:
    """Where a replica's chain ends: the next record gets ``seq + 1`` and links ``hash``."""

    seq: int = 0
    hash: str = GENESIS

    def link(self, document: dict[str, Any], replica_id: str) -> dict[str, Any]:
        """Number and hash ``document`` (in place) as the next record of this chain."""
        self.link_canonical(document, replica_id)
        return document

    def link_canonical(self, document: dict[str, Any], replica_id: str) -> bytes:
        """:meth:`link`, and return the linked document's canonical JSON (what a store
        writes). One serialization gives both texts: the document is serialized with a
        placeholder hash, the text to hash is that without the ``"hash"`` member, the
        text to store that with the digest in the placeholder's place."""
        document["replica_id"] = replica_id
        document["seq"] = self.seq + 1
        document["prev_hash"] = self.hash
        document["hash"] = _PLACEHOLDER
        try:
            text = canonical(document)
        except TypeError:
            del document["hash"]  # not a JSON document: no placeholder left behind
            raise
        at = text.find(_MEMBER)
        if text.find(_MEMBER, at + 1) >= 0:
            # The member's text also occurs inside the record (a key ending in "hash"
            # holding the placeholder): which one is the record's own is not certain.
            document["hash"] = digest = record_hash(self.hash, document)
            text = canonical(document)
        else:
            # Without the member: drop it and the comma before it, or after it when it
            # is the first member (never the only one: the chain's fields follow it).
            end = at + len(_MEMBER)
            if text[at - 1] == ord(","):
                body = text[: at - 1] + text[end:]
            else:
                body = text[:at] + text[end + 1 :]
            digest = hashlib.sha256(self.hash.encode() + body).hexdigest()
            document["hash"] = digest
            text = text[: at + len(_MEMBER_HEAD)] + digest.encode() + text[end - 1 :]
        self.seq = document["seq"]
        self.hash = digest
        return text


# Where link_canonical() writes the digest: 64 characters, as long as a digest.
_PLACEHOLDER = "#" * 64
_MEMBER_HEAD = b'"hash":"'
_MEMBER = _MEMBER_HEAD + _PLACEHOLDER.encode() + b'"'


@dataclass(frozen=True)
class Break:
    """One broken link: where (``position``: line of a file, row of a table), which
    record, and what is wrong."""

    position: int
    replica_id: str
    seq: int | None
    record_id: str
    problem: str

    def describe(self) -> str:
        where = f"record {self.position}"
        ident = f"replica {self.replica_id!r} seq {self.seq} record_id {self.record_id}"
        return f"{where} ({ident}): {self.problem}"


@dataclass
class Verification:
    """The result of :func:`verify`: records checked, chains and their heads, breaks."""

    records: int = 0
    heads: dict[str, ChainHead] = field(default_factory=dict)
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> Break | None:
        return self.breaks[0] if self.breaks else None


class Verifier:
    """Checks records one at a time (a table of any size streams through it)."""

    def __init__(self, *, max_breaks: int = 100) -> None:
        self.result = Verification()
        self.max_breaks = max_breaks

    @property
    def done(self) -> bool:
        return len(self.result.breaks) >= self.max_breaks

    def feed(self, position: int, entry: str | Mapping[str, Any]) -> None:
        result = self.result
        result.records += 1
        problem, document = _check(entry, result.heads)
        if document is None:
            result.breaks.append(Break(position, "", None, "", problem or "unreadable"))
            return
        replica = str(document.get("replica_id", ""))
        seq = document.get("seq")
        if problem:
            result.breaks.append(
                Break(
                    position,
                    replica,
                    seq if isinstance(seq, int) else None,
                    str(document.get("record_id", "")),
                    problem,
                )
            )
        if isinstance(seq, int) and isinstance(document.get("hash"), str):
            result.heads[replica] = ChainHead(seq, str(document["hash"]))


def verify(
    entries: Iterable[tuple[int, str | Mapping[str, Any]]], *, max_breaks: int = 100
) -> Verification:
    """Check chains given as ``(position, record)`` in storage order (a record is its
    JSON text or the parsed object). After a break the chain goes on from the record
    that broke it, so one deletion or edit is reported once, not for every later record.
    """
    verifier = Verifier(max_breaks=max_breaks)
    for position, entry in entries:
        verifier.feed(position, entry)
        if verifier.done:
            break
    return verifier.result


def _check(
    entry: str | Mapping[str, Any], heads: Mapping[str, ChainHead]
) -> tuple[str | None, Mapping[str, Any] | None]:
    if isinstance(entry, str):
        try:
            parsed = json.loads(entry)
        except json.JSONDecodeError as exc:
            return f"not a JSON record ({exc.msg})", None
        if not isinstance(parsed, dict):
            return "not a JSON object", None
        document: Mapping[str, Any] = parsed
    else:
        document = entry
    for name in ("replica_id", "seq", "prev_hash", "hash", "record_id"):
        if name not in document:
            return f"no {name!r}: not a chained audit record", document
    seq, prev_hash, stored_hash = document["seq"], document["prev_hash"], document["hash"]
    if not isinstance(seq, int) or not isinstance(prev_hash, str):
        return "seq or prev_hash of the wrong type", document
    try:
        computed = record_hash(prev_hash, document)
    except (TypeError, ValueError) as exc:
        return f"cannot be hashed ({exc})", document
    if computed != stored_hash:
        return "modified: its content does not match its hash", document
    head = heads.get(str(document["replica_id"]), ChainHead())
    if seq != head.seq + 1:
        if seq <= head.seq:
            return f"seq {seq} after seq {head.seq}: reordered or duplicated", document
        missing = seq - head.seq - 1
        first = head.seq + 1
        span = f"seq {first}" if missing == 1 else f"seq {first}-{seq - 1}"
        return f"{missing} record(s) missing before it ({span}): deleted", document
    if prev_hash != head.hash:
        return "prev_hash does not match the previous record: modified or replaced", document
    return None, document
