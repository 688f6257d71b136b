"""The relay's fast lane (a client packet that is exactly Bind/Describe/Execute/Sync, or
Parse before them) must do exactly what the frame-by-frame path does: the same bytes to
the server and the client, the same executions reported, the same refusals."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import pytest

from pgwarden.proxy.decision import Action, Decision, Statement
from pgwarden.proxy.masking import MaskKey
from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.relay import Analysis, Execution, Refusal, Refused, RelayCore

ROW_DESCRIPTION = m.frame(
    b"T", struct.pack("!h", 1) + b"email\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
)
DATA_ROW = m.frame(b"D", struct.pack("!hi", 1, 11) + b"a@b.example")
READY = m.build_ready_for_query("I")


class _Analyzed:
    def __init__(self, sql: str) -> None:
        self.statement = Statement.of({"sql": sql, "outputs": []})


class SqlAnalyzer:
    """Facts are the SQL; ``BAD`` makes it unparseable, an empty SQL runs nothing."""

    def parsed(self, name: str, sql: str) -> None:
        pass

    def closed(self, name: str) -> None:
        pass

    def completed(self, analysis: object, *, rolled_back: bool = False) -> None:
        pass

    def ready(self, status: str, *, failed: bool) -> None:
        pass

    def portal_bound(self, portal: str, sql: str | None, params: object, formats: object) -> None:
        pass

    def parameter_status(self, name: str, value: str) -> None:
        pass

    def changes_resolution(self, analysis: object) -> bool:
        return False

    def simple_query(self, sql: str) -> list[Analysis]:
        return [self._one(s) for s in sql.split(";") if s.strip()]

    def execution(
        self, sql: str, params: Sequence[bytes | None], param_formats: Sequence[int]
    ) -> Analysis | None:
        return self._one(sql) if sql else None

    def preparation(self, sql: str) -> Analysis | None:
        return self.execution(sql, (), ())

    def unknown_portal(self, portal: str) -> Analysis:
        return self._one(f"FETCH {portal}")

    def unknown_statement(self, name: str) -> Analysis:
        return self._one(f"EXECUTE {name}")

    def _one(self, sql: str) -> Analysis:
        return Refusal("42601", "syntax error") if "BAD" in sql else _Analyzed(sql)


def decide(statements: Sequence[Statement]) -> list[Decision]:
    decisions = []
    for s in statements:
        sql = str(s.facts["sql"])
        if "secret" in sql:
            decisions.append(Decision(Action.DENY, ("secret",), "d-deny"))
        elif "mask" in sql:
            decisions.append(Decision(Action.ALLOW, (), "d-mask", detect=("email",)))
        elif "limit" in sql:
            decisions.append(Decision(Action.ALLOW, (), "d-limit", row_limit=1))
        else:
            decisions.append(Decision(Action.ALLOW, (), "d-allow"))
    return decisions


class Session:
    def __init__(self, *, fast: bool) -> None:
        self.events: list[tuple[str, object]] = []
        self.relay = RelayCore(
            SqlAnalyzer(),
            max_message_size=1 << 20,
            mask_key=MaskKey(b"k" * 32),
            on_complete=self._complete,
            on_refused=self._refused,
        )
        self.relay.marker = "pgwarden_refused_test"
        if not fast:
            self.relay._whole_batch = lambda data: None  # type: ignore[method-assign]
        self.server: list[bytes] = []
        self.client: list[bytes] = []

    def _complete(self, e: Execution) -> None:
        self.events.append(
            ("exec", (e.status, e.rows, e.bytes_sent, e.sqlstate, e.limit_reached, e.portal))
        )

    def _refused(self, r: Refused) -> None:
        self.events.append(("refused", (r.sqlstate, r.message)))

    def client_data(self, data: bytes) -> None:
        request = self.relay.client_data(data)
        while request is not None:
            request = self.relay.resolve(decide(request.statements))
        self.server.append(b"".join(self.relay.to_server))
        self.relay.to_server.clear()

    def server_data(self, data: bytes) -> None:
        self.relay.server_data(data)
        self.client.append(b"".join(self.relay.to_client))
        self.relay.to_client.clear()


def _execution(rng: random.Random, sql: str) -> bytes:
    portal = rng.choice(["", "p1"])
    packet = (
        m.build_bind(portal, rng.choice(["", "s1", "unknown"]), [b"1"])
        + m.build_describe("P", portal)
        + m.build_execute(portal, rng.choice([0, 0, 1]))
        + m.build_sync()
    )
    if rng.random() < 0.5:
        packet = m.build_parse(rng.choice(["", "s1"]), sql) + packet
    return packet


def _packet(rng: random.Random) -> bytes:
    sql = rng.choice(
        ["SELECT 1", "SELECT secret", "SELECT mask", "SELECT limit", "BAD", "", "SELECT 2"]
    )
    shape = rng.random()
    if shape < 0.6:
        return _execution(rng, sql)
    if shape < 0.7:  # two executions in one packet: not a fast-lane shape
        return _execution(rng, sql) + _execution(rng, "SELECT 3")
    if shape < 0.8:
        return m.build_parse("s1", sql) + m.build_sync()
    if shape < 0.9:
        return m.build_query(sql or "SELECT 4")
    return _execution(rng, sql)[:-5]  # no Sync yet: the next packet brings it


def _reply(rng: random.Random) -> bytes:
    rows = DATA_ROW * rng.choice([0, 1, 3])
    return rng.choice(
        [
            m.frame(b"2", b"") + ROW_DESCRIPTION + rows + m.frame(b"C", b"SELECT 3\0") + READY,
            m.frame(b"1", b"") + m.frame(b"2", b"") + ROW_DESCRIPTION + rows,
            m.frame(b"C", b"SELECT 1\0") + READY,
            m.build_error_response("42P01", "pgwarden_refused_test does not exist") + READY,
            m.build_error_response("22012", "division by zero") + READY,
            READY,
        ]
    )


@pytest.mark.parametrize("seed", range(40))
def test_allow_fast_lane_matches_the_frame_by_frame_path(seed: int) -> None:
    rng = random.Random(seed)
    steps = [("c", _packet(rng)) if rng.random() < 0.6 else ("s", _reply(rng)) for _ in range(60)]
    sessions = [Session(fast=True), Session(fast=False)]
    for side, data in steps:
        outcomes = []
        for session in sessions:
            try:
                if side == "c":
                    session.client_data(data)
                else:
                    session.server_data(data)
                outcomes.append(None)
            except m.ProtocolViolation as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]
        if outcomes[0] is not None:
            break
    fast, slow = sessions
    assert fast.server == slow.server
    assert fast.client == slow.client
    assert fast.events == slow.events


def test_allow_fast_lane_forwards_the_packet_as_it_came() -> None:
    session = Session(fast=True)
    packet = (
        m.build_bind("", "", [])
        + m.build_describe("P", "")
        + m.build_execute("")
        + (m.build_sync())
    )
    session.client_data(m.build_parse("", "SELECT 1") + packet)
    assert session.server == [m.build_parse("", "SELECT 1") + packet]
