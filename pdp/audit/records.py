"""``pb.AuditRecord`` → the stored audit document (a JSON object), and back to text.

The document is what every store keeps and what the hash chain covers. Its canonical
form (sorted keys, no spaces, UTF-8) is the input of the chain's hash, so it holds only
strings, integers, booleans, lists, objects and nulls — never floats, whose text form
could change on a round trip through a store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import orjson
from google.protobuf.message import Message

from pgwarden.v1 import decision_pb2 as pb

FORMAT_VERSION = 1
KINDS = {
    pb.AUDIT_KIND_STATEMENT: "statement",
    pb.AUDIT_KIND_REFUSAL: "refusal",
    pb.AUDIT_KIND_SESSION_OPEN: "session_open",
    pb.AUDIT_KIND_SESSION_CLOSE: "session_close",
    pb.AUDIT_KIND_AUTH_REFUSED: "auth_refused",
}
ACTIONS = {
    pb.ACTION_ALLOW: "allow",
    pb.ACTION_DENY: "deny",
    pb.ACTION_REQUIRE_APPROVAL: "require_approval",
}
# Fields the PDP adds when it stores a record: the chain and the storing replica.
CHAIN_FIELDS = ("replica_id", "seq", "prev_hash", "hash", "stored_at_us")


def canonical(document: Mapping[str, Any]) -> bytes:
    """The canonical JSON text of a document: the bytes the chain hashes.

    Keys sorted by code point, no whitespace, UTF-8, only ``"``, ``\\`` and U+0000 to U+001F
    escaped: for every document a store holds (strings, 64-bit integers, booleans, null,
    lists, objects) the bytes ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` wrote before orjson did this ten times faster
    (tests/unit/audit/test_audit_canonical.py). Raises TypeError for anything else that
    is not JSON a record holds: a non-string key, an integer beyond 64 bits, a lone
    surrogate."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def iso_time(time_us: int) -> str:
    """Microseconds since the epoch → ``2026-11-24T06:19:34.123456Z``."""
    global _last_second  # noqa: PLW0603 (a one-entry cache)
    seconds, micros = divmod(time_us, 1_000_000)
    # Records come in bursts within the same second: format that second once.
    cached_seconds, prefix = _last_second
    if seconds != cached_seconds:
        prefix = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (seconds, prefix)
    return f"{prefix}.{micros:06d}Z"


_last_second: tuple[int | None, str] = (None, "")


def record_document(record: pb.AuditRecord, *, shared_parts: bool = False) -> dict[str, Any]:
    """The stored form of a record, before the PDP chains it. A record without a
    ``record_id`` (never sent by the proxy) gets one, so nothing is ever dropped.

    ``shared_parts``: the document's identity, statement and decision may be the very
    objects other documents hold, read-only (:class:`ReadOnlyPart`, tuples for lists;
    the same canonical JSON): for a caller that only stores the document, as the PDP
    does (a store changes only its top level). Without it, every object is its own."""
    has = record.HasField
    decision = record.decision if has("decision") else None
    return {
        "v": FORMAT_VERSION,
        "record_id": record.record_id or f"pdp-{uuid.uuid4().hex}",
        "kind": KINDS.get(record.kind, "unknown"),
        "time": iso_time(record.time_unix_us),
        "time_us": record.time_unix_us,
        "proxy_id": record.proxy_id,
        "session_id": record.session_id,
        "identity": _part(_identities, record.identity, _identity, shared_parts),
        "database": record.database,
        "client_addr": record.client_addr,
        "client_port": record.client_port,
        "application_name": record.application_name,
        "decision_id": decision.decision_id if decision is not None else "",
        "statement": _part(_statements, record.statement, _statement, shared_parts)
        if has("statement")
        else None,
        "decision": _part(_decisions, decision, _decision, shared_parts)
        if decision is not None
        else None,
        "outcome": _outcome(record.outcome) if has("outcome") else None,
        "session_stats": _session_stats(record.session_stats) if has("session_stats") else None,
        "auth": _auth(record.auth) if has("auth") else None,
    }


def stored_documents(records: Iterable[pb.AuditRecord]) -> list[dict[str, Any]]:
    """The documents of a batch of records that a store keeps as they are (the PDP's
    ``ReportExecutions``, the proxy's local store): their repeated parts are shared,
    read-only (a store changes only a document's top level)."""
    return [record_document(r, shared_parts=True) for r in records]


class ReadOnlyPart(dict[str, Any]):
    """A part of documents that several documents share: changing it raises TypeError
    (it would change every record that holds it, and every one built after)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a part shared by several audit documents is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


def _read_only(value: Any) -> Any:
    if isinstance(value, dict):
        return ReadOnlyPart({k: _read_only(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_read_only(v) for v in value)
    return value


# The identity, statement and decision of a session's records repeat (the proxy copies
# them from one message per session, statement and cached decision): each is built once
# per distinct serialized message, then handed out read-only and shared, or as a new
# object parsed from its JSON.
# Bounded by entries and by each entry's size: a few MiB at most per kind of part (key,
# text and objects), whatever statements come.
PART_MEMO_MAX = 1024  # entries per kind of part
PART_KEY_MAX = 1024  # bytes: a part serialized longer (a long statement) is built each time
_Part = TypeVar("_Part", bound=Message)
_Memo = dict[bytes, tuple[ReadOnlyPart, bytes]]
_identities: _Memo = {}
_statements: _Memo = {}
_decisions: _Memo = {}


def _part(
    memo: _Memo, message: _Part, build: Callable[[_Part], dict[str, Any]], shared: bool
) -> dict[str, Any]:
    key = message.SerializeToString()
    known = memo.get(key)
    if known is None:
        part = build(message)
        if len(key) > PART_KEY_MAX:
            return part
        if len(memo) >= PART_MEMO_MAX:
            memo.clear()
        known = memo[key] = (_read_only(part), orjson.dumps(part))
    if shared:
        return known[0]
    copy: dict[str, Any] = orjson.loads(known[1])
    return copy


def _identity(i: pb.Identity) -> dict[str, Any]:
    return {
        "subject": i.subject,
        "issuer": i.issuer,
        "groups": list(i.groups),
        "auth_method": i.auth_method,
    }


def _statement(s: pb.AuditStatement) -> dict[str, Any]:
    return {
        "fingerprint": s.fingerprint,
        "sql": s.sql,
        "sql_has_literals": s.sql_has_literals,
        "command": s.command,
        "protocol": s.protocol,
        "relations": [
            {"schema": r.schema, "name": r.name, "kind": r.kind, "access": r.access}
            for r in s.relations
        ],
    }


def _decision(d: pb.AuditDecision) -> dict[str, Any]:
    return {
        "action": ACTIONS.get(d.action, "deny"),
        "reasons": list(d.reasons),
        "mask": dict(sorted(d.mask.items())),
        "row_limit": d.row_limit if d.HasField("row_limit") else None,
        "dry_run": d.dry_run,
        "revision": d.revision,
        "code": d.code,
        "cached": d.cached,
    }


def _outcome(o: pb.AuditOutcome) -> dict[str, Any]:
    return {
        "status": o.status,
        "rows": o.rows,
        "rows_affected": o.rows_affected if o.HasField("rows_affected") else None,
        "bytes_sent": o.bytes_sent,
        "duration_us": o.duration_us,
        "sqlstate": o.sqlstate,
        "row_limit_reached": o.row_limit_reached,
    }


def _session_stats(t: pb.AuditSessionStats) -> dict[str, Any]:
    return {
        "statements": t.statements,
        "refusals": t.refusals,
        "rows": t.rows,
        "bytes_sent": t.bytes_sent,
        "duration_us": t.duration_us,
        "reason": t.reason,
    }


def _auth(a: pb.AuditAuthRefusal) -> dict[str, Any]:
    return {
        "code": a.code,
        "sqlstate": a.sqlstate,
        "context": dict(sorted(a.context.items())),
    }
