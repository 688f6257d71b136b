"""A real PDP process (``python -m pgwarden pdp``) on free loopback ports, for the
integration tests, the benchmark and local runs; ready when gRPC health says SERVING."""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pgwarden.stack.process import ManagedProcess, free_port


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML strings, numbers, booleans and arrays are JSON-like


class PdpProcess:
    """``pgwarden pdp --config`` with a generated config; ``address`` is its gRPC target."""

    def __init__(
        self,
        *,
        policies: Path | None = None,
        opa_url: str | None = None,
        log_dir: Path | None = None,
        token: str | None = None,
        dry_run: bool = False,
        tls: Sequence[Path] | None = None,
        port: int | None = None,
        extra_opa: dict[str, Any] | None = None,
        tls_server_name: str = "pdp.test",
    ) -> None:
        """``tls``: (server cert, server key, CA, client cert, client key) for mutual TLS
        instead of tokens; the client certificate is used to probe readiness."""
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pgwarden-pdp-"))
        self.port = port or free_port()
        self.http_port = free_port()
        self.tls = tuple(tls) if tls else None
        self.tls_server_name = tls_server_name
        self.token = None if self.tls else (token or secrets.token_urlsafe(16))
        lines = [
            "[pdp]",
            f'listen = "127.0.0.1:{self.port}"',
            f"dry_run = {_toml_value(dry_run)}",
            "grace_ms = 2000",
            "[pdp.http]",
            f'listen = "127.0.0.1:{self.http_port}"',
            "[pdp.auth]",
        ]
        if self.tls:
            cert, key, ca = self.tls[:3]
            lines += [f"tls_cert = {_toml_value(str(cert))}", f"tls_key = {_toml_value(str(key))}"]
            lines += [f"client_ca = {_toml_value(str(ca))}"]
        else:
            lines.append(f"tokens = [{_toml_value(self.token)}]")
        lines.append("[pdp.opa]")
        if opa_url:
            lines += ['mode = "external"', f"url = {_toml_value(opa_url)}"]
        else:
            assert policies is not None, "policies or opa_url"
            lines += [f"policies = {_toml_value(str(policies))}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in (extra_opa or {}).items()]
        self.config_path = self.log_dir / "pdp.toml"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = self.log_dir / "pdp.log"
        self.process = ManagedProcess(
            "pdp",
            [sys.executable, "-m", "pgwarden", "pdp", "--config", str(self.config_path)],
            log_path=self.log_path,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def is_serving(self) -> bool:
        """gRPC health: SERVING once OPA answers with a policy loaded."""
        if self.tls:
            ca, cert, key = self.tls[2], self.tls[3], self.tls[4]
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca.read_bytes(),
                private_key=key.read_bytes(),
                certificate_chain=cert.read_bytes(),
            )
            options = [("grpc.ssl_target_name_override", self.tls_server_name)]
            channel = grpc.secure_channel(self.address, creds, options=options)
        else:
            channel = grpc.insecure_channel(self.address)
        with channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def start(self, *, timeout_s: float = 30) -> PdpProcess:
        self.process.start()
        try:
            self.process.wait_ready(self.is_serving, timeout_s=timeout_s)
        except BaseException:
            self.process.stop()  # never leave a half-started PDP behind
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def log_records(self, event: str | None = None) -> list[dict[str, Any]]:
        """The PDP's JSON log lines (optionally only one ``event``)."""
        records = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event is None or record.get("event") == event:
                    records.append(record)
        return records

    def __enter__(self) -> PdpProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


EXAMPLE_POLICY = """\
# METADATA
# title: pgwarden example policy (tests and benchmarks)
package pgwarden

default decision := {
	"action": "deny",
	"reasons": ["no rule allows this statement"],
	"cache_ttl_s": 60,
}

decision := {
	"action": "allow",
	"reasons": ["reads are allowed"],
	"mask": {"public.customers.email": "partial_email"},
	"row_limit": 1000,
	"cache_ttl_s": 60,
} if input.statement.command == "SELECT"

# Reads context (the clock): must not be cached.
decision := {"action": "allow", "reasons": [input.context.now], "cache_ttl_s": 0} if {
	input.statement.command == "UPDATE"
}

decision := {"action": "deny", "reasons": [data.data.example.delete_reason], "cache_ttl_s": 60} if {
	input.statement.command == "DELETE"
}

decision := {"action": "require_approval", "reasons": ["DDL needs a DBA"], "cache_ttl_s": 60} if {
	input.statement.command == "DROP"
}

decision := {"action": "deny", "reasons": ["would be denied"], "dry_run": true} if {
	input.statement.command == "TRUNCATE"
}

# Echoes input text into the answer (e.g. non-ASCII text, both ways through OPA).
decision := {
	"action": "deny",
	"reasons": [sprintf("application %s may not LISTEN", [input.session.application_name])],
	"cache_ttl_s": 60,
} if input.statement.command == "LISTEN"

# Reads nothing of the connection itself: every session of the identity may reuse it.
decision := {
	"action": "allow",
	"reasons": ["transactions are allowed"],
	"cache_ttl_s": 60,
	"cache_scope": "identity",
} if input.statement.command == "BEGIN"

# Not contract v1: an unknown action.
decision := {"action": "permit"} if input.statement.command == "INSERT"

# Two complete definitions that both hold: OPA reports a conflict (several results).
decision := {"action": "allow"} if input.statement.command == "VACUUM"

decision := {"action": "deny"} if input.statement.command == "VACUUM"

default session := {"allowed": false, "upstream_role": "", "reasons": ["identity not admitted"]}

session := {"allowed": true, "upstream_role": "reporting", "reasons": ["analytics"]} if {
	"analytics" in input.identity.groups
}
"""


def write_example_policy(root: Path, *, delete_reason: str = "deletes are not allowed") -> Path:
    """A small policy directory: ``pgwarden/decision.rego`` and ``data/example.json``."""
    (root / "pgwarden").mkdir(parents=True, exist_ok=True)
    (root / "data" / "example").mkdir(parents=True, exist_ok=True)
    (root / "pgwarden" / "decision.rego").write_text(EXAMPLE_POLICY)
    (root / "data" / "example" / "data.json").write_text(
        json.dumps({"delete_reason": delete_reason})
    )
    return root
