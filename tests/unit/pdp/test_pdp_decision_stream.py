"""The client's DecideStream: a call the PDP ends without accepting it fails with its own
status, never a write's INTERNAL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from pgwarden.proxy.decision import DecisionCode
from pgwarden.proxy.pdp_client import PdpError, _DecisionStream
from pgwarden.v1 import decision_pb2 as pb


class EndedCall:
    """A DecideStream call the PDP has already ended (e.g. refused credentials) whose end
    the client's reader has not seen yet."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    async def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # a call that ended at once: trailers only, no acceptance header

    async def write(self, request: Any) -> None:
        raise asyncio.InvalidStateError("RPC already finished")

    async def code(self) -> grpc.StatusCode:
        return self._code

    async def details(self) -> str:
        return "refused"

    def cancel(self) -> bool:
        return True

    async def _never(self) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield  # pragma: no cover

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._never()


class Stub:
    def __init__(self, call: EndedCall) -> None:
        self.call = call

    def DecideStream(self, metadata: Any) -> EndedCall:
        return self.call


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, DecisionCode.PDP_UNAUTHENTICATED),
        (grpc.StatusCode.UNAVAILABLE, DecisionCode.PDP_UNAVAILABLE),
    ],
)
async def test_a_write_on_an_ended_call_fails_with_the_call_status(
    status: grpc.StatusCode, code: DecisionCode
) -> None:
    stream = _DecisionStream(Stub(EndedCall(status)), (), "pdp.test:1")
    try:
        with pytest.raises(PdpError) as info:
            await stream.decide(pb.DecideRequest())
        assert info.value.code is code
    finally:
        await stream.close()
