"""The shipped pack declares cache_scope "identity": its rules must not read the
connection's own session facts (``input.session.id``, ``input.session.client_addr``).

Checked on OPA's own parse of every loaded module (``opa parse --format json``): every
reference into ``input`` must name its session fact literally, and that fact must not be
one of the connection's own; ``input`` or ``input.session`` as a whole, or indexed by a
variable, could read anything and fails too.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgwarden.proxy.decision import CONNECTION_FACTS

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
OPA = REPO / ".bin" / "opa"

pytestmark = pytest.mark.gates

OBJECT_GET = [{"type": "var", "value": "object"}, {"type": "string", "value": "get"}]


def input_paths(node: Any) -> Iterator[list[Any] | None]:
    """The literal path of every read of ``input`` in an AST (None: not literal)."""
    if isinstance(node, list):
        for child in node:
            yield from input_paths(child)
        return
    if not isinstance(node, dict):
        return
    call = node.get("terms") if isinstance(node.get("terms"), list) else None
    if node.get("type") == "call":
        call = node["value"]
    if call and call[0].get("value") == OBJECT_GET and len(call) > 2:
        target, keys = call[1], call[2]
        if target.get("type") == "ref" and target["value"] == [{"type": "var", "value": "input"}]:
            literal = keys.get("type") == "array" and all(
                t.get("type") == "string" for t in keys["value"]
            )
            yield [t["value"] for t in keys["value"]] if literal else None
            yield from input_paths(call[2:])
            return
    if node.get("type") == "var" and node.get("value") == "input":
        yield None  # input as a whole
        return
    if node.get("type") == "ref" and node["value"][0] == {"type": "var", "value": "input"}:
        path: list[Any] = []
        for term in node["value"][1:]:
            if term.get("type") != "string":
                break
            path.append(term["value"])
        yield path if path else None
        yield from input_paths(node["value"][1:])
        return
    for value in node.values():
        yield from input_paths(value)


def session_reads(path: list[Any] | None) -> bool:
    """Whether a read may see a connection fact."""
    if path is None:
        return True
    if not path or path[0] != "session":
        return False
    return len(path) < 2 or path[1] in CONNECTION_FACTS


def test_the_shipped_rules_read_no_connection_facts() -> None:
    settings = json.loads((POLICIES / "data" / "settings.json").read_text())["settings"]
    assert settings["cache_scope"] == "identity"
    offending = []
    modules = sorted(p for p in POLICIES.rglob("*.rego") if not p.name.endswith("_test.rego"))
    assert modules
    for module in modules:
        out = subprocess.run(
            [OPA, "parse", "--format", "json", module], capture_output=True, text=True, check=True
        )
        for rule in json.loads(out.stdout).get("rules", []):
            for path in input_paths(rule):
                if session_reads(path):
                    offending.append(f"{module.relative_to(REPO)}: input{path or ''}")
    assert not offending, "\n".join(offending)


@pytest.mark.parametrize(
    ("rego", "reads"),
    [
        ("x := input.session.database", False),
        ('x := object.get(input, ["session", "database"], "")', False),
        ("x := input.statement.command", False),
        ("x := input.session.client_addr", True),
        ('x := object.get(input, ["session", "id"], "")', True),
        ("x := input.session", True),
        ('x := input.session[k] if k := "id"', True),
        ("x := input", True),
        ("x := object.get(input, y, 1) if y := 2", True),
        ("f(s) := s.id\nx := f(input.session)", True),
    ],
)
def test_what_counts_as_reading_a_connection_fact(tmp_path: Path, rego: str, reads: bool) -> None:
    """The gate above can fail: each shape of reading input it must catch, and not."""
    module = tmp_path / "p.rego"
    module.write_text(f"package p\n\n{rego}\n")
    out = subprocess.run(
        [OPA, "parse", "--format", "json", module], capture_output=True, text=True, check=True
    )
    rules = json.loads(out.stdout)["rules"]
    assert any(session_reads(p) for p in input_paths(rules)) is reads
