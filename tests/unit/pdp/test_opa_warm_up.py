"""OpaTarget.warm_up: each rule asked once before the target answers statements."""

from __future__ import annotations

from typing import Any, cast

from pgwarden.pdp.evaluation import OpaTarget
from pgwarden.pdp.opa_http import HttpAnswer, OpaDataClient, OpaHttpError


class RecordingOpa:
    """Stands in for OpaDataClient: records each POST, answers or fails."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.posts: list[tuple[str, bytes]] = []

    async def post(self, path: str, body: bytes) -> HttpAnswer:
        self.posts.append((path, body))
        if self.fail:
            raise OpaHttpError("ConnectionRefusedError")
        return HttpAnswer(200, b"{}")


def target_on(data: RecordingOpa) -> OpaTarget:
    return OpaTarget("http://opa.test", "r1", cast(Any, None), cast(OpaDataClient, data))


async def test_warm_up_asks_the_decision_and_the_session_rule() -> None:
    data = RecordingOpa()
    await target_on(data).warm_up()
    assert data.posts == [
        ("/v1/data/pgwarden/decision", b'{"input":{}}'),
        ("/v1/data/pgwarden/session", b'{"input":{}}'),
    ]


async def test_warm_up_does_not_fail_when_opa_does() -> None:
    data = RecordingOpa(fail=True)
    await target_on(data).warm_up()  # the first real query reports the failure
    assert len(data.posts) == 2
