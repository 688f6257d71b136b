"""The proxy's decision point: the interface every statement passes through before any of
it reaches the upstream, the contract v1 types it speaks, and local implementations.

The PDP client (gRPC, with its decision cache) implements :class:`DecisionPoint` too; the
proxy does not know which one it talks to.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Action(StrEnum):
    """What the policy decided for a statement (contract v1)."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class DecisionCode(StrEnum):
    """Why a statement was refused without a policy decision; also a metric label."""

    PDP_UNAVAILABLE = "pdp_unavailable"
    PDP_TIMEOUT = "pdp_timeout"
    OPA_UNAVAILABLE = "opa_unavailable"
    OPA_TIMEOUT = "opa_timeout"
    INVALID_DECISION = "invalid_decision"
    ANALYSIS_FAILED = "analysis_failed"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    PDP_UNAUTHENTICATED = "pdp_unauthenticated"


class ProcessIds:
    """Ids unique to this process: 16 hex digits of 64 random bits naming the process,
    ``separator``, then 16 hex digits of a counter, one more per id. As unique as uuid4,
    without a getrandom(2) system call and a UUID object per id. A forked child draws new
    bits and starts counting again: it must not mint its parent's ids."""

    __slots__ = ("_counter", "process", "separator")

    def __init__(self, separator: str = "") -> None:
        self.separator = separator
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self.process = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self.process}{self.separator}{next(self._counter):016x}"


new_decision_id = ProcessIds().next


def digest_of(document: Mapping[str, Any]) -> bytes:
    """A stable digest of a JSON-ready document; computed once and reused as a cache key."""
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(data.encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the verified token (or certificate) says the client is: ``input.identity``."""

    subject: str
    issuer: str
    groups: tuple[str, ...] = ()
    auth_method: str = "jwt"
    claims: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "groups": list(self.groups),
            "auth_method": self.auth_method,
            "claims": dict(self.claims),
        }


# The session facts that name the connection itself rather than what it is: a decision
# whose cache_scope is "identity" read neither, so the sessions that differ only in them
# share it (see PdpClient and docs/pdp.md "Decision cache").
CONNECTION_FACTS = frozenset({"id", "client_addr"})


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """``input.session``; ``in_transaction`` changes per statement and is passed apart."""

    id: str
    proxy_id: str
    client_addr: str
    database: str
    application_name: str
    tls: bool
    requested_user: str
    client_port: int = 0  # audit records only; not part of the input document

    def document(self, *, in_transaction: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "proxy_id": self.proxy_id,
            "client_addr": self.client_addr,
            "database": self.database,
            "application_name": self.application_name,
            "tls": self.tls,
            "in_transaction": in_transaction,
            "requested_user": self.requested_user,
        }


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement to decide: its facts (``input.statement``) and their digest."""

    facts: Mapping[str, Any]
    digest: bytes

    @classmethod
    def of(cls, facts: Mapping[str, Any]) -> Statement:
        return cls(facts, digest_of(facts))


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one statement (contract v1) with its identifiers."""

    action: Action
    reasons: tuple[str, ...]
    decision_id: str
    mask: Mapping[str, str] = field(default_factory=dict)
    row_limit: int | None = None
    cache_ttl_s: int = 0
    dry_run: bool = False
    revision: str = ""
    code: str = ""
    # Content detectors for text outputs that no mask covers ("email", "card_number", "ssn").
    detect: tuple[str, ...] = ()
    # Which sessions may reuse it from the cache: "session" (the one that asked) or
    # "identity" (every session of the identity with the same other session facts).
    cache_scope: str = "session"

    @property
    def cacheable(self) -> bool:
        """Whether a decision cache may keep it and hand it out again: a TTL, and not a
        refusal of the PDP or the proxy itself (a code)."""
        return self.cache_ttl_s > 0 and not self.code

    @property
    def permits(self) -> bool:
        """Whether the statement runs: allowed, or a would-be refusal in dry-run mode."""
        return self.action is Action.ALLOW or self.dry_run

    def refusal_message(self) -> str:
        """The client-facing message of a refusal (ErrorResponse 'M')."""
        reasons = "; ".join(self.reasons) or "refused by policy"
        if self.action is Action.REQUIRE_APPROVAL:
            return f"statement requires approval: {reasons}"
        return f"pgwarden: {reasons}"


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """Whether an identity may open a session, and as which upstream role."""

    allowed: bool
    upstream_role: str
    reasons: tuple[str, ...] = ()
    decision_id: str = ""


class DecisionPoint(Protocol):
    """Decides sessions and statements. Implementations fail closed: on any error they
    return refusals carrying a :class:`DecisionCode`, they never raise to the proxy."""

    async def open_session(self, identity: Identity, session: SessionFacts) -> SessionGrant: ...

    def decide_now(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision] | None:
        """The decisions if they are at hand without waiting (e.g. all cached), else None;
        the proxy's hot path tries this before awaiting :meth:`decide`."""
        ...

    async def decide(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision]: ...

    def forget_session(self, session: SessionFacts) -> None:
        """The session ended: drop whatever was kept for it."""
        ...


class LocalDecisionPoint:
    """In-process decisions for tests and development: allow everything except statements
    whose normalized SQL matches one of ``deny_patterns`` (case-insensitive regexes), with
    the same ``mask`` and ``row_limit`` on every allowed statement."""

    def __init__(
        self,
        upstream_role: str,
        deny_patterns: Sequence[str] = (),
        *,
        mask: Mapping[str, str] | None = None,
        row_limit: int | None = None,
        detect: Sequence[str] = (),
    ) -> None:
        self.upstream_role = upstream_role
        self._deny = [re.compile(p, re.IGNORECASE) for p in deny_patterns]
        self._mask = dict(mask or {})
        self._row_limit = row_limit
        self._detect = tuple(detect)

    async def open_session(self, identity: Identity, session: SessionFacts) -> SessionGrant:
        return SessionGrant(True, self.upstream_role, decision_id=new_decision_id())

    def decide_now(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision]:
        return [self._decide_one(s) for s in statements]

    async def decide(
        self,
        identity: Identity,
        session: SessionFacts,
        statements: Sequence[Statement],
        *,
        in_transaction: bool,
    ) -> list[Decision]:
        return self.decide_now(identity, session, statements, in_transaction=in_transaction)

    def forget_session(self, session: SessionFacts) -> None:
        """Nothing is kept per session."""

    def _decide_one(self, statement: Statement) -> Decision:
        sql = str(statement.facts.get("sql_normalized", ""))
        for pattern in self._deny:
            if pattern.search(sql):
                return Decision(
                    Action.DENY,
                    (f"matches deny-list pattern {pattern.pattern!r}",),
                    new_decision_id(),
                )
        return Decision(
            Action.ALLOW,
            (),
            new_decision_id(),
            mask=self._mask,
            row_limit=self._row_limit,
            detect=self._detect,
        )
