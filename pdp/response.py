"""OPA result → validated decision (contract v1), and decision → gRPC message.

Validation is strict: anything that does not match the contract exactly — an undefined
result, a missing or unknown action, a wrong type, an unknown mask function, an unknown
top-level key — becomes a deny with code ``invalid_decision``. The policy never gets the
benefit of the doubt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgwarden.proxy.decision import Action, DecisionCode
from pgwarden.v1 import decision_pb2 as pb

MASK_FUNCTIONS = frozenset({"partial_email", "last4", "hash", "redact", "null"})
DECISION_KEYS = frozenset(
    {"action", "reasons", "mask", "row_limit", "cache_ttl_s", "dry_run", "detect", "cache_scope"}
)
# "identity": the policy declares that the decision read neither input.session.id nor
# input.session.client_addr, so every session of that identity (with the same other
# session facts) may reuse it; "session" (the default): only the session that asked.
CACHE_SCOPES = {"session": pb.CACHE_SCOPE_SESSION, "identity": pb.CACHE_SCOPE_IDENTITY}
DETECTORS = frozenset({"email", "card_number", "ssn"})
SESSION_KEYS = frozenset({"allowed", "upstream_role", "reasons"})
# A policy may ask for long caching; the PDP caps it so a stale allow cannot live for days.
MAX_CACHE_TTL_S = 3600

_ACTIONS = {a.value: a for a in Action}
_ACTION_TO_PB = {
    Action.ALLOW: pb.ACTION_ALLOW,
    Action.DENY: pb.ACTION_DENY,
    Action.REQUIRE_APPROVAL: pb.ACTION_REQUIRE_APPROVAL,
}


class InvalidDecision(ValueError):
    """The policy's result does not match contract v1; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """A decision for one statement: the policy's (validated) or the PDP's own refusal."""

    action: Action
    reasons: tuple[str, ...]
    mask: Mapping[str, str] = field(default_factory=dict)
    row_limit: int | None = None
    cache_ttl_s: int = 0
    dry_run: bool = False
    code: str = ""
    detect: tuple[str, ...] = ()
    cache_scope: str = "session"

    @classmethod
    def refusal(cls, code: DecisionCode, reason: str) -> PolicyDecision:
        """The PDP's own deny (never cached, never dry-run: fail closed)."""
        return cls(Action.DENY, (f"{reason} [{code.value}]",), code=code.value)


@dataclass(frozen=True, slots=True)
class SessionDecision:
    """Whether a session may open (``data.pgwarden.session``), validated."""

    allowed: bool
    upstream_role: str
    reasons: tuple[str, ...]
    code: str = ""

    @classmethod
    def refusal(cls, code: DecisionCode, reason: str) -> SessionDecision:
        return cls(False, "", (f"{reason} [{code.value}]",), code=code.value)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidDecision(f"{key} must be a list of strings")
    return tuple(value)


def _int(value: Any, key: str) -> int:
    # bool is an int in Python and JSON true must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidDecision(f"{key} must be a non-negative integer")
    return value


def parse_decision(result: Any) -> PolicyDecision:
    """Validate the value of ``data.pgwarden.decision``; raise InvalidDecision."""
    if not isinstance(result, Mapping):
        raise InvalidDecision(f"decision must be an object, got {type(result).__name__}")
    unknown = sorted(set(result) - DECISION_KEYS)
    if unknown:
        raise InvalidDecision(f"unknown key {unknown[0]!r}")
    if "action" not in result:
        raise InvalidDecision("action is missing")
    action = _ACTIONS.get(result["action"]) if isinstance(result["action"], str) else None
    if action is None:
        raise InvalidDecision(f"action must be one of {sorted(_ACTIONS)}")
    reasons = _strings(result.get("reasons", []), "reasons")
    mask_value = result.get("mask", {})
    if not isinstance(mask_value, Mapping):
        raise InvalidDecision("mask must be an object")
    mask: dict[str, str] = {}
    for column, function in mask_value.items():
        if not isinstance(function, str) or function not in MASK_FUNCTIONS:
            raise InvalidDecision(f"mask of {column!r}: unknown mask function {function!r}")
        mask[column] = function
    row_limit_value = result.get("row_limit")
    row_limit = None if row_limit_value is None else _int(row_limit_value, "row_limit")
    cache_ttl_s = min(_int(result.get("cache_ttl_s", 0), "cache_ttl_s"), MAX_CACHE_TTL_S)
    dry_run = result.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidDecision("dry_run must be a boolean")
    detect = _strings(result.get("detect", []), "detect")
    for name in detect:
        if name not in DETECTORS:
            raise InvalidDecision(f"detect: unknown detector {name!r}")
    cache_scope = result.get("cache_scope", "session")
    if not isinstance(cache_scope, str) or cache_scope not in CACHE_SCOPES:
        raise InvalidDecision(f"cache_scope must be one of {sorted(CACHE_SCOPES)}")
    return PolicyDecision(
        action,
        reasons,
        mask,
        row_limit,
        cache_ttl_s,
        dry_run,
        detect=tuple(sorted(set(detect))),
        cache_scope=cache_scope,
    )


def decision_of(response: Mapping[str, Any]) -> PolicyDecision:
    """The decision in an OPA data API response; undefined or invalid → invalid_decision."""
    if "result" not in response:
        return PolicyDecision.refusal(DecisionCode.INVALID_DECISION, "policy decision is undefined")
    try:
        return parse_decision(response["result"])
    except InvalidDecision as exc:
        return PolicyDecision.refusal(DecisionCode.INVALID_DECISION, f"invalid decision: {exc}")


def parse_session(result: Any) -> SessionDecision:
    """Validate the value of ``data.pgwarden.session``; raise InvalidDecision."""
    if not isinstance(result, Mapping):
        raise InvalidDecision(f"session decision must be an object, got {type(result).__name__}")
    unknown = sorted(set(result) - SESSION_KEYS)
    if unknown:
        raise InvalidDecision(f"unknown key {unknown[0]!r}")
    allowed = result.get("allowed")
    if not isinstance(allowed, bool):
        raise InvalidDecision("allowed must be a boolean")
    role = result.get("upstream_role", "")
    if not isinstance(role, str):
        raise InvalidDecision("upstream_role must be a string")
    if allowed and not role:
        raise InvalidDecision("an allowed session needs an upstream_role")
    reasons = _strings(result.get("reasons", []), "reasons")
    return SessionDecision(allowed, role if allowed else "", reasons)


def session_decision_of(response: Mapping[str, Any]) -> SessionDecision:
    if "result" not in response:
        return SessionDecision.refusal(
            DecisionCode.INVALID_DECISION, "session decision is undefined"
        )
    try:
        return parse_session(response["result"])
    except InvalidDecision as exc:
        return SessionDecision.refusal(
            DecisionCode.INVALID_DECISION, f"invalid session decision: {exc}"
        )


def with_dry_run(decision: PolicyDecision) -> PolicyDecision:
    """Dry run by config: a policy's refusal is logged and audited but the statement runs.
    The PDP's own refusals (OPA down, invalid decision) stay refusals: fail closed."""
    if decision.code or decision.action is Action.ALLOW or decision.dry_run:
        return decision
    return PolicyDecision(
        decision.action,
        decision.reasons,
        decision.mask,
        decision.row_limit,
        decision.cache_ttl_s,
        True,
        detect=decision.detect,
        cache_scope=decision.cache_scope,
    )


def decision_message(decision: PolicyDecision, decision_id: str, revision: str) -> pb.Decision:
    message = pb.Decision(
        action=_ACTION_TO_PB[decision.action],
        reasons=decision.reasons,
        mask=dict(decision.mask),
        cache_ttl_s=decision.cache_ttl_s,
        dry_run=decision.dry_run,
        decision_id=decision_id,
        revision=revision,
        code=decision.code,
        detect=decision.detect,
        cache_scope=CACHE_SCOPES[decision.cache_scope],
    )
    if decision.row_limit is not None:
        message.row_limit = decision.row_limit
    return message


def decision_ids_trailer(ids: Sequence[str]) -> tuple[tuple[str, str]]:
    """The trailing metadata that carries the decision ids, in request order."""
    return (("pgwarden-decision-ids", ",".join(ids)),)
