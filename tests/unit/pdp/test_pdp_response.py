"""OPA result → decision: strict validation of contract v1 (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from pgwarden.pdp.response import (
    MAX_CACHE_TTL_S,
    InvalidDecision,
    PolicyDecision,
    decision_message,
    decision_of,
    parse_decision,
    parse_session,
    session_decision_of,
    with_dry_run,
)
from pgwarden.proxy.decision import Action
from pgwarden.v1 import decision_pb2 as pb


def test_allow_full_decision() -> None:
    decision = parse_decision(
        {
            "action": "allow",
            "reasons": ["reporting may read customers"],
            "mask": {"public.customers.email": "partial_email", "public.customers.ssn": "null"},
            "row_limit": 1000,
            "cache_ttl_s": 60,
            "dry_run": False,
        }
    )
    assert decision.action is Action.ALLOW
    assert decision.reasons == ("reporting may read customers",)
    assert decision.mask == {
        "public.customers.email": "partial_email",
        "public.customers.ssn": "null",
    }
    assert decision.row_limit == 1000
    assert decision.cache_ttl_s == 60
    assert decision.code == ""


def test_minimal_decision_takes_defaults() -> None:
    decision = parse_decision({"action": "deny"})
    assert decision == PolicyDecision(Action.DENY, (), {}, None, 0, False)


@pytest.mark.parametrize("action", ["allow", "deny", "require_approval"])
def test_every_contract_action_is_accepted(action: str) -> None:
    assert parse_decision({"action": action}).action.value == action


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (None, "must be an object"),
        ([{"action": "allow"}], "must be an object"),
        ("allow", "must be an object"),
        ({}, "action is missing"),
        ({"reasons": ["x"]}, "action is missing"),
        ({"action": "permit"}, "action must be one of"),
        ({"action": "ALLOW"}, "action must be one of"),
        ({"action": 1}, "action must be one of"),
        ({"action": "allow", "reasons": "x"}, "reasons must be a list of strings"),
        ({"action": "allow", "reasons": [1]}, "reasons must be a list of strings"),
        ({"action": "allow", "mask": ["a"]}, "mask must be an object"),
        ({"action": "allow", "mask": {"t.c": "rot13"}}, "unknown mask function"),
        ({"action": "allow", "mask": {"t.c": 1}}, "unknown mask function"),
        ({"action": "allow", "row_limit": "10"}, "row_limit must be"),
        ({"action": "allow", "row_limit": -1}, "row_limit must be"),
        ({"action": "allow", "row_limit": 1.5}, "row_limit must be"),
        ({"action": "allow", "row_limit": True}, "row_limit must be"),
        ({"action": "allow", "cache_ttl_s": 1.5}, "cache_ttl_s must be"),
        ({"action": "allow", "cache_ttl_s": -5}, "cache_ttl_s must be"),
        ({"action": "allow", "cache_ttl_s": None}, "cache_ttl_s must be"),
        ({"action": "allow", "dry_run": "yes"}, "dry_run must be a boolean"),
        ({"action": "allow", "dry_run": 1}, "dry_run must be a boolean"),
        ({"action": "allow", "allow": True}, "unknown key 'allow'"),
        ({"action": "allow", "ttl": 5}, "unknown key 'ttl'"),
        ({"action": "allow", "detect": "email"}, "detect must be a list of strings"),
        ({"action": "allow", "detect": ["iban"]}, "unknown detector 'iban'"),
        ({"action": "allow", "cache_scope": "global"}, "cache_scope must be one of"),
        ({"action": "allow", "cache_scope": ["identity"]}, "cache_scope must be one of"),
    ],
)
def test_deny_invalid_results(result: Any, problem: str) -> None:
    with pytest.raises(InvalidDecision, match=problem):
        parse_decision(result)
    decision = decision_of({"result": result})
    assert decision.action is Action.DENY
    assert decision.code == "invalid_decision"
    assert decision.cache_ttl_s == 0
    assert problem.split("'", maxsplit=1)[0] in decision.reasons[0]


def test_deny_undefined_result() -> None:
    decision = decision_of({})
    assert decision.action is Action.DENY
    assert decision.code == "invalid_decision"
    assert "undefined" in decision.reasons[0]


def test_cache_ttl_is_capped() -> None:
    assert parse_decision({"action": "allow", "cache_ttl_s": 10**9}).cache_ttl_s == MAX_CACHE_TTL_S


def test_session_decision() -> None:
    allowed = parse_session({"allowed": True, "upstream_role": "reporting", "reasons": ["ok"]})
    assert (allowed.allowed, allowed.upstream_role, allowed.reasons) == (True, "reporting", ("ok",))
    refused = parse_session({"allowed": False, "upstream_role": "x", "reasons": ["no"]})
    assert (refused.allowed, refused.upstream_role) == (False, "")


@pytest.mark.parametrize(
    "result",
    [
        None,
        {},
        {"allowed": "yes"},
        {"allowed": True},
        {"allowed": True, "upstream_role": ""},
        {"allowed": True, "upstream_role": 3},
        {"allowed": False, "reasons": "no"},
        {"allowed": False, "role": "x"},
    ],
)
def test_deny_invalid_session_results(result: Any) -> None:
    decision = session_decision_of({"result": result})
    assert not decision.allowed
    assert decision.upstream_role == ""
    assert decision.code == "invalid_decision"


def test_deny_undefined_session() -> None:
    assert session_decision_of({}).code == "invalid_decision"


def test_dry_run_by_config_applies_to_policy_refusals_only() -> None:
    deny = parse_decision({"action": "deny", "reasons": ["no"]})
    assert with_dry_run(deny).dry_run
    approval = parse_decision({"action": "require_approval"})
    assert with_dry_run(approval).dry_run
    allow = parse_decision({"action": "allow"})
    assert with_dry_run(allow) is allow
    invalid = decision_of({})
    assert not with_dry_run(invalid).dry_run  # fail closed: the PDP's own refusals stay


def test_decision_message_carries_ids_and_optional_row_limit() -> None:
    message = decision_message(
        parse_decision({"action": "allow", "row_limit": 0, "mask": {"a.b.c": "hash"}}),
        "id-1",
        "rev-1",
    )
    assert message.action == pb.ACTION_ALLOW
    assert message.HasField("row_limit")
    assert message.row_limit == 0
    assert dict(message.mask) == {"a.b.c": "hash"}
    assert (message.decision_id, message.revision) == ("id-1", "rev-1")
    without = decision_message(parse_decision({"action": "deny"}), "id-2", "rev-1")
    assert not without.HasField("row_limit")
    assert without.action == pb.ACTION_DENY


def test_allow_detectors_are_carried_to_the_proxy() -> None:
    decision = parse_decision({"action": "allow", "detect": ["ssn", "email", "ssn"]})
    assert decision.detect == ("email", "ssn")
    message = decision_message(decision, "d1", "r1")
    assert list(message.detect) == ["email", "ssn"]


def test_allow_cache_scope_is_carried_to_the_proxy() -> None:
    """Absent means "session"; "identity" is what lets other sessions reuse a decision."""
    assert parse_decision({"action": "allow"}).cache_scope == "session"
    assert decision_message(parse_decision({"action": "allow"}), "d", "r").cache_scope == (
        pb.CACHE_SCOPE_SESSION
    )
    shared = parse_decision({"action": "deny", "cache_scope": "identity"})
    assert shared.cache_scope == "identity"
    assert decision_message(shared, "d", "r").cache_scope == pb.CACHE_SCOPE_IDENTITY
    assert with_dry_run(shared).cache_scope == "identity"
