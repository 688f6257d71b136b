"""gRPC request → OPA input document (contract v1), plus the PDP's ``context``.

The document is the one the proxy hashed for its cache key (``Identity.document()``,
``SessionFacts.document()``, ``Statement.facts``): same keys, absent messages as ``null``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict

from pgwarden.v1 import decision_pb2 as pb

PROTOCOLS = {
    pb.PROTOCOL_UNSPECIFIED: "unknown",
    pb.PROTOCOL_SIMPLE: "simple",
    pb.PROTOCOL_EXTENDED: "extended",
}


def identity_document(identity: pb.Identity) -> dict[str, Any]:
    return {
        "subject": identity.subject,
        "issuer": identity.issuer,
        "groups": list(identity.groups),
        "auth_method": identity.auth_method,
        # Struct numbers are doubles: a claim 3 arrives as 3.0.
        "claims": MessageToDict(identity.claims),
    }


def session_document(session: pb.Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "proxy_id": session.proxy_id,
        "client_addr": session.client_addr,
        "database": session.database,
        "application_name": session.application_name,
        "tls": session.tls,
        "in_transaction": session.in_transaction,
        "requested_user": session.requested_user,
    }


def statement_document(facts: pb.StatementFacts) -> dict[str, Any]:
    copy = facts.copy if facts.HasField("copy") else None
    set_command = facts.set if facts.HasField("set") else None
    return {
        "fingerprint": facts.fingerprint,
        "sql_normalized": facts.sql_normalized,
        "command": facts.command,
        "protocol": PROTOCOLS.get(facts.protocol, "unknown"),
        "read_only": facts.read_only,
        "relations": [
            {"schema": r.schema, "name": r.name, "kind": r.kind, "access": r.access}
            for r in facts.relations
        ],
        "columns": [
            {"relation": c.relation, "column": c.column, "usage": c.usage} for c in facts.columns
        ],
        "outputs": [
            {"name": o.name, "sources": list(o.sources), "direct": o.direct} for o in facts.outputs
        ],
        "star": list(facts.star),
        "functions": list(facts.functions),
        "copy": None
        if copy is None
        else {
            "direction": copy.direction,
            "target": copy.target,
            "relation": copy.relation,
            "query": copy.query,
        },
        "limit": facts.limit if facts.HasField("limit") else None,
        "has_where": facts.has_where,
        "set": None
        if set_command is None
        else {"kind": set_command.kind, "name": set_command.name, "local": set_command.local},
        "nested": [statement_document(n) for n in facts.nested],
        "unresolved": facts.unresolved,
    }


def context_document(*, now: datetime | None = None) -> dict[str, Any]:
    """Volatile facts the PDP adds; a decision that reads them must not be cached long."""
    moment = now or datetime.now(UTC)
    return {
        "now": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "usage": {},
        "approved": False,
    }


def session_input(request: pb.OpenSessionRequest) -> dict[str, Any]:
    """The input of ``data.pgwarden.session``."""
    return {
        "identity": identity_document(request.identity),
        "session": session_document(request.session),
        "context": context_document(),
    }


def decision_inputs(request: pb.DecideRequest) -> list[dict[str, Any]]:
    """One input of ``data.pgwarden.decision`` per statement, in request order."""
    identity = identity_document(request.identity)
    session = session_document(request.session)
    context = context_document()
    return [
        {
            "identity": identity,
            "session": session,
            "statement": statement_document(s.statement),
            "context": context,
        }
        for s in request.statements
    ]
