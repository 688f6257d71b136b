"""Evaluation: ask OPA for ``data.pgwarden.decision`` / ``data.pgwarden.session``.

One :class:`OpaTarget` per OPA instance: an opa-python-client ``AsyncOpaClient`` (one
aiohttp session, so connections are reused) and the revision that instance was loaded
with. Requests take the target in force when they start, so the revision a decision
reports is the one it was evaluated with, even while the supervisor swaps instances.

Every failure becomes a refusal with its own code, never an exception: connection refused
or reset → ``opa_unavailable``; no answer within the timeout → ``opa_timeout``; an
evaluation error (e.g. conflicting complete rules: several results) → ``invalid_decision``.
A batch is evaluated with concurrent queries (see Evaluator.decide). The client's own
retries are disabled (``retries=0``): retrying with sleeps would blow
the proxy's deadline; the proxy's next statement is the retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opa_client.opa_async import AsyncOpaClient

from pgwarden.pdp.response import (
    PolicyDecision,
    SessionDecision,
    decision_of,
    session_decision_of,
)
from pgwarden.proxy.decision import DecisionCode

log = logging.getLogger("pgwarden.pdp.evaluation")

DECISION_PACKAGE = "pgwarden"
DECISION_RULE = "decision"
SESSION_RULE = "session"


class OpaError(Exception):
    """OPA could not give an answer; ``code`` says why (a DecisionCode)."""

    def __init__(self, code: DecisionCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def opa_client_for(url: str, *, timeout_s: float, token: str | None = None) -> AsyncOpaClient:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an OPA URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return AsyncOpaClient(
        host=parts.hostname,
        port=port,
        ssl=parts.scheme == "https",
        token=token,
        retries=0,
        timeout=timeout_s,
    )


def _error_of(exc: BaseException) -> OpaError:
    # aiohttp's ServerTimeoutError is both a connection error and a timeout: timeout first.
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return OpaError(DecisionCode.OPA_TIMEOUT, "OPA did not answer in time")
    if isinstance(exc, aiohttp.ClientResponseError) and exc.status == 500:
        return OpaError(
            DecisionCode.INVALID_DECISION, "policy evaluation failed (OPA returned HTTP 500)"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return OpaError(DecisionCode.OPA_UNAVAILABLE, f"OPA returned HTTP {exc.status}")
    return OpaError(DecisionCode.OPA_UNAVAILABLE, f"OPA is unreachable ({type(exc).__name__})")


@dataclass
class OpaTarget:
    """One OPA instance the PDP evaluates with, and the revision it was loaded with."""

    url: str
    revision: str
    client: AsyncOpaClient

    @classmethod
    async def open(
        cls, url: str, revision: str, *, timeout_s: float, token: str | None = None
    ) -> OpaTarget:
        client = opa_client_for(url, timeout_s=timeout_s, token=token)
        await client._init_session()  # the async client's own way to open its session
        return cls(url, revision, client)

    async def close(self) -> None:
        await self.client.close_connection()

    async def healthy(self) -> bool:
        return bool(await self.client.check_health())

    async def query(self, rule: str, document: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.client.query_rule(document, DECISION_PACKAGE, rule)
        except Exception as exc:
            raise _error_of(exc) from exc
        return result


def _decision_or_refusal(outcome: dict[str, Any] | BaseException) -> PolicyDecision:
    if isinstance(outcome, OpaError):
        return PolicyDecision.refusal(outcome.code, outcome.reason)
    if isinstance(outcome, BaseException):
        error = _error_of(outcome)
        return PolicyDecision.refusal(error.code, error.reason)
    return decision_of(outcome)


class Evaluator:
    """Decisions from whichever OPA instance is in force (see OpaSupervisor)."""

    def __init__(self) -> None:
        self.target: OpaTarget | None = None

    @property
    def revision(self) -> str:
        return self.target.revision if self.target else ""

    async def decide(self, documents: Sequence[dict[str, Any]]) -> tuple[list[PolicyDecision], str]:
        """One validated decision per input document, and the revision they came from."""
        target = self.target
        if target is None:
            refusal = PolicyDecision.refusal(
                DecisionCode.OPA_UNAVAILABLE, "no policy is loaded yet"
            )
            return [refusal] * len(documents), ""
        if len(documents) == 1:
            try:
                response = await target.query(DECISION_RULE, documents[0])
            except OpaError as exc:
                return [PolicyDecision.refusal(exc.code, exc.reason)], target.revision
            return [decision_of(response)], target.revision
        # A batch: one data-API query per statement, concurrently over the client's pooled
        # keep-alive connections. OPA's only batch form, an ad-hoc query with every input
        # inlined (opa-python-client's bulk_query_rule), is compiled on every call and
        # measured slower at every batch size (8 statements: 3.5 ms vs 1.9 ms).
        outcomes = await asyncio.gather(
            *(target.query(DECISION_RULE, d) for d in documents), return_exceptions=True
        )
        return [_decision_or_refusal(o) for o in outcomes], target.revision

    async def open_session(self, document: dict[str, Any]) -> tuple[SessionDecision, str]:
        target = self.target
        if target is None:
            return SessionDecision.refusal(
                DecisionCode.OPA_UNAVAILABLE, "no policy is loaded yet"
            ), ""
        try:
            response = await target.query(SESSION_RULE, document)
        except OpaError as exc:
            return SessionDecision.refusal(exc.code, exc.reason), target.revision
        return session_decision_of(response), target.revision
