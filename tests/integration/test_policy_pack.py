"""The shipped policy pack (``policies/``) decides the reference scenario as documented.

``policy_cases.json`` holds reference-scenario statements as the proxy describes them
(statement facts, input contract v1) and, for each reference identity, the decision the
pack must return. Every case is evaluated by a real OPA server loaded with ``policies/``
(the ``policy_opa`` fixture), over its REST API as the PDP does, and compared in full:
action, reasons (in order), masks, row limit, cache TTL and dry run.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opa_client.opa_async import AsyncOpaClient

from pgwarden.stack.opa import OpaServer

REPO = Path(__file__).resolve().parents[2]
TABLE = json.loads(Path(__file__).with_name("policy_cases.json").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]

IDENTITIES: dict[str, dict[str, Any]] = {
    "agent:reporting": {"groups": ["analytics"], "auth_method": "jwt"},
    "agent:etl": {"groups": ["etl"], "auth_method": "jwt"},
    "human:dba": {"groups": ["dba"], "auth_method": "mtls"},
}
DECISION_KEYS = {"action", "reasons", "mask", "row_limit", "cache_ttl_s", "dry_run", "cache_scope"}


def identity(subject: str, groups: list[str], auth_method: str = "jwt") -> dict[str, Any]:
    return {
        "subject": subject,
        "issuer": "https://idp.example",
        "groups": groups,
        "auth_method": auth_method,
        "claims": {},
    }


def session(requested_user: str = "") -> dict[str, Any]:
    return {
        "id": "3f1c",
        "proxy_id": "edge-1",
        "client_addr": "10.0.0.7",
        "database": "shop",
        "application_name": "policy-pack-tests",
        "tls": True,
        "in_transaction": False,
        "requested_user": requested_user,
    }


def input_document(
    who: dict[str, Any], statement: dict[str, Any], *, approved: bool = False
) -> dict[str, Any]:
    return {
        "identity": who,
        "session": session(),
        "statement": statement,
        "context": {
            "now": "2026-11-24T06:00:00Z",
            "usage": {"rows_last_hour": 0},
            "approved": approved,
        },
    }


def query(opa: OpaServer, path: str, document: dict[str, Any]) -> Any:
    """POST ``{"input": document}`` to ``/v1/data/<path>`` and return the result."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built by the harness
        f"{opa.url}/v1/data/{path}",
        data=json.dumps({"input": document}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body = json.loads(response.read())
    assert "result" in body, f"{path} is undefined for {document}"
    return body["result"]


def decide(opa: OpaServer, who: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    decision: dict[str, Any] = query(opa, "pgwarden/decision", input_document(who, statement))
    return decision


def test_table_has_at_least_80_statements_for_each_identity() -> None:
    for subject in IDENTITIES:
        expected = [case["expect"][subject] for case in CASES]
        assert len(expected) >= 80, f"{subject}: {len(expected)} cases"
        assert all(set(e) == DECISION_KEYS - {"dry_run", "cache_scope"} for e in expected)
        actions = {e["action"] for e in expected}
        # The agents are denied, the DBA is asked for approval; all are allowed some.
        refusal = "require_approval" if subject == "human:dba" else "deny"
        assert actions == {"allow", refusal}, f"{subject}: {actions}"
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"


@pytest.mark.parametrize("subject", sorted(IDENTITIES))
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_reference_decision(policy_opa: OpaServer, case: dict[str, Any], subject: str) -> None:
    who = identity(subject, **IDENTITIES[subject])
    decision = decide(policy_opa, who, case["statement"])
    assert set(decision) == DECISION_KEYS, decision
    assert decision["dry_run"] is False
    assert decision["cache_scope"] == "identity"  # no rule reads the connection's facts
    expected = case["expect"][subject]
    actual = {key: decision[key] for key in expected}
    assert actual == expected, (
        f"{case['name']} for {subject}: {case['statement']['sql_normalized']}"
    )


@pytest.mark.parametrize("matched_by", ["subject", "group"])
@pytest.mark.parametrize("subject", sorted(IDENTITIES))
def test_identity_matched_by_subject_or_group_alone_gets_the_same_decisions(
    policy_opa: OpaServer, subject: str, matched_by: str
) -> None:
    groups = IDENTITIES[subject]["groups"]
    who = (
        identity(subject, [])
        if matched_by == "subject"
        # A workload whose token carries the group under another subject.
        else identity(f"{subject}-replica", groups)
    )
    mismatched = [
        case["name"]
        for case in CASES
        if {
            k: v
            for k, v in decide(policy_opa, who, case["statement"]).items()
            if k not in {"dry_run", "cache_scope"}
        }
        != case["expect"][subject]
    ]
    assert not mismatched


@pytest.mark.parametrize(
    "who",
    [
        identity("agent:nobody", ["sales"]),
        identity("agent:nobody", []),
        identity("", []),
        identity("agent:reporting-but-not-quite", ["Analytics"]),
    ],
    ids=["unknown-group", "no-groups", "empty-subject", "case-variant-group"],
)
def test_identity_that_matches_no_profile_is_denied_everything(
    policy_opa: OpaServer, who: dict[str, Any]
) -> None:
    expected_reason = f'identity: "{who["subject"]}" matches no profile'
    allowed = []
    for case in CASES:
        decision = decide(policy_opa, who, case["statement"])
        if decision["action"] != "deny" or expected_reason not in decision["reasons"]:
            allowed.append((case["name"], decision["action"], decision["reasons"]))
    assert not allowed


def test_approval_recorded_in_context_lets_the_dba_statement_through(policy_opa: OpaServer) -> None:
    drop = next(case for case in CASES if case["name"] == "drop orders")
    dba = identity("human:dba", ["dba"], "mtls")
    waiting = query(policy_opa, "pgwarden/decision", input_document(dba, drop["statement"]))
    approved = query(
        policy_opa, "pgwarden/decision", input_document(dba, drop["statement"], approved=True)
    )
    assert waiting["action"] == "require_approval"
    assert approved["action"] == "allow"
    assert approved["cache_ttl_s"] == 0
    assert approved["reasons"] == [
        *waiting["reasons"],
        "decision: the approval recorded in context.approved applies",
    ]
    # An approval never lifts a deny.
    etl = identity("agent:etl", ["etl"])
    assert (
        query(
            policy_opa, "pgwarden/decision", input_document(etl, drop["statement"], approved=True)
        )["action"]
        == "deny"
    )


def test_input_without_statement_gets_a_complete_deny(policy_opa: OpaServer) -> None:
    decision = query(policy_opa, "pgwarden/decision", {"identity": identity("human:dba", ["dba"])})
    assert decision == {
        "action": "deny",
        "reasons": ["decision: the input document has no statement"],
        "mask": {},
        "row_limit": None,
        "cache_ttl_s": 0,
        "dry_run": False,
    }


async def test_session_entry_point_through_the_async_client(policy_opa: OpaServer) -> None:
    async def open_session(who: dict[str, Any], requested_user: str = "") -> Any:
        async with AsyncOpaClient(
            host=policy_opa.host, port=policy_opa.port, retries=0, timeout=5
        ) as client:
            answer = await client.query_rule(
                {"identity": who, "session": session(requested_user)},
                package_path="pgwarden",
                rule_name="session",
            )
        return answer["result"]

    reporting = await open_session(identity("agent:reporting", ["analytics"]), "shop_dba")
    assert reporting == {
        "allowed": True,
        "upstream_role": "shop_reporting",
        "reasons": ['session: "agent:reporting" connects as shop_reporting (profile reporting)'],
    }
    assert (await open_session(identity("agent:etl", ["etl"])))["upstream_role"] == "shop_etl"
    assert (await open_session(identity("human:dba", ["dba"])))["upstream_role"] == "shop_dba"
    owner = await open_session(identity("human:dba", ["dba"]), "shop_owner")
    assert owner["upstream_role"] == "shop_owner"
    assert await open_session(identity("agent:nobody", ["sales"]), "shop_dba") == {
        "allowed": False,
        "upstream_role": "",
        "reasons": ['session: "agent:nobody" matches no profile'],
    }


def test_data_files_are_loaded_under_data_data(policy_opa: OpaServer) -> None:
    """``opa run policies/`` puts each ``policies/data/*.json`` top-level key at data.data.<key>."""
    with urllib.request.urlopen(f"{policy_opa.url}/v1/data/data", timeout=10) as response:  # noqa: S310
        loaded = json.loads(response.read())["result"]
    on_disk: dict[str, Any] = {}
    for path in sorted((REPO / "policies" / "data").glob("*.json")):
        on_disk.update(json.loads(path.read_text()))
    assert loaded == on_disk
    assert set(loaded) >= {"classification", "identities", "masking", "settings", "functions"}


TEST_NAME = re.compile(r"^(test_\w+) if\b", re.MULTILINE)


def test_every_topic_has_allow_and_deny_tests() -> None:
    topics = sorted((REPO / "policies" / "pgwarden").glob("*.rego"))
    rule_files = [p for p in topics if not p.stem.endswith("_test")]
    assert {p.stem for p in rule_files} >= {
        "decision",
        "session",
        "exfiltration",
        "privilege",
        "opaque_code",
        "masking",
        "destructive",
        "identities",
    }
    for rules in rule_files:
        tests = rules.with_name(f"{rules.stem}_test.rego")
        assert tests.is_file(), f"{rules.name} has no {tests.name}"
        names = TEST_NAME.findall(tests.read_text())
        assert any(n.startswith("test_allow_") for n in names), f"{tests.name}: no test_allow_"
        assert any(n.startswith("test_deny_") for n in names), f"{tests.name}: no test_deny_"
        odd = [n for n in names if not n.startswith(("test_allow_", "test_deny_"))]
        assert not odd, f"{tests.name}: tests must be named test_allow_… or test_deny_…: {odd}"
