"""The shape of a statement facts document (``input.statement``, contract v1), checked.

Used by the tests (every analysis must produce a complete document) and available to
the proxy for a debug-mode self-check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgwarden.proxy.analysis.commands import COMMANDS

ACCESS = frozenset({"read", "write", "ddl"})
USAGES = frozenset({"output", "filter", "join", "order", "group", "limit", "from", "write"})
SET_KINDS = frozenset({"set", "reset", "set_role", "set_session_authorization", "set_config"})
COPY_TARGETS = frozenset({"stdout", "stdin", "program", "file"})
KEYS = (
    "fingerprint",
    "sql_normalized",
    "command",
    "protocol",
    "read_only",
    "relations",
    "columns",
    "outputs",
    "star",
    "functions",
    "copy",
    "limit",
    "has_where",
    "set",
    "nested",
    "unresolved",
)


def problems(doc: Mapping[str, Any], path: str = "statement") -> list[str]:
    """What is wrong with a facts document; empty when it is complete and well-typed."""
    out: list[str] = []

    def bad(message: str) -> None:
        out.append(f"{path}: {message}")

    if tuple(doc.keys()) != KEYS:
        bad(f"keys {list(doc.keys())}")
        return out
    if not isinstance(doc["fingerprint"], str) or not isinstance(doc["sql_normalized"], str):
        bad("fingerprint/sql_normalized not strings")
    if doc["command"] not in COMMANDS:
        bad(f"command {doc['command']!r} not in the vocabulary")
    if doc["protocol"] not in ("simple", "extended"):
        bad(f"protocol {doc['protocol']!r}")
    for key in ("read_only", "has_where", "unresolved"):
        if not isinstance(doc[key], bool):
            bad(f"{key} not a bool")
    for rel in doc["relations"]:
        if set(rel) != {"schema", "name", "kind", "access"} or rel["access"] not in ACCESS:
            bad(f"relation {rel}")
    for col in doc["columns"]:
        if set(col) != {"relation", "column", "usage"} or col["usage"] not in USAGES:
            bad(f"column {col}")
    for output in doc["outputs"]:
        if (
            set(output) != {"name", "sources", "direct"}
            or not isinstance(output["name"], str)
            or not all(isinstance(s, str) for s in output["sources"])
            or not isinstance(output["direct"], bool)
        ):
            bad(f"output {output}")
    if not all(isinstance(s, str) for s in doc["star"] + doc["functions"]):
        bad("star/functions not strings")
    copy = doc["copy"]
    if copy is not None and (
        set(copy) != {"direction", "target", "relation", "query"}
        or copy["direction"] not in ("to", "from")
        or copy["target"] not in COPY_TARGETS
    ):
        bad(f"copy {copy}")
    limit = doc["limit"]
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        bad(f"limit {limit!r}")
    setting = doc["set"]
    if setting is not None and (
        set(setting) != {"kind", "name", "local"} or setting["kind"] not in SET_KINDS
    ):
        bad(f"set {setting}")
    for index, nested in enumerate(doc["nested"]):
        out.extend(problems(nested, f"{path}.nested[{index}]"))
    return out
