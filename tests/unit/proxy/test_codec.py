"""The I/O-free codec: round trips, framing at any split, and hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.proxy.protocol import messages as m
from pgwarden.proxy.protocol.framing import FrameBuffer

MAX = 1 << 20

FRONTEND_PARSERS = {
    b"Q": m.parse_query,
    b"P": m.parse_parse,
    b"B": m.parse_bind,
    b"D": m.parse_describe,
    b"E": m.parse_execute,
    b"C": m.parse_close,
}

names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)
params = st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=5)
frontend_messages = st.one_of(
    names.map(m.build_query),
    st.tuples(names, names, st.lists(st.integers(0, 2**31 - 1), max_size=4)).map(
        lambda t: m.build_parse(*t)
    ),
    st.tuples(names, names, params).map(lambda t: m.build_bind(t[0], t[1], t[2])),
    st.tuples(st.sampled_from("SP"), names).map(lambda t: m.build_describe(*t)),
    st.tuples(names, st.integers(0, 2**31 - 1)).map(lambda t: m.build_execute(*t)),
    st.tuples(st.sampled_from("SP"), names).map(lambda t: m.build_close(*t)),
    st.just(m.build_sync()),
    st.just(m.build_flush()),
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return chunks


@settings(max_examples=300)
@given(st.lists(frontend_messages, min_size=1, max_size=20), st.lists(st.integers(0, 10**6)))
def test_stream_split_anywhere_decodes_to_the_same_messages(
    msgs: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(msgs)
    whole = FrameBuffer(MAX)
    whole.feed(stream)
    expected = []
    while (msg := whole.next_message()) is not None:
        expected.append(msg)
    assert len(expected) == len(msgs)

    pieces = FrameBuffer(MAX)
    got = []
    for chunk in split_at(stream, cuts):
        pieces.feed(chunk)
        while (msg := pieces.next_message()) is not None:
            got.append(msg)
    assert got == expected
    for (type_, body), raw in zip(got, msgs, strict=True):
        assert m.frame(type_, body) == raw
        if type_ in FRONTEND_PARSERS:
            FRONTEND_PARSERS[type_](body)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_violations(data: bytes) -> None:
    buf = FrameBuffer(4096)
    buf.feed(data)
    try:
        while (msg := buf.next_message()) is not None:
            parser = FRONTEND_PARSERS.get(msg[0])
            if parser is not None:
                parser(msg[1])
    except m.ProtocolViolation:
        pass
    startup = FrameBuffer(4096)
    startup.feed(data)
    try:
        body = startup.next_startup()
        if body is not None:
            m.parse_startup_packet(body)
    except m.ProtocolViolation:
        pass


@given(st.binary(max_size=200))
def test_random_bodies_raise_only_protocol_violations(body: bytes) -> None:
    for parse in (
        *FRONTEND_PARSERS.values(),
        m.parse_error_response,
        m.parse_ready_for_query,
        m.parse_parameter_status,
        m.parse_backend_key_data,
        m.parse_authentication,
    ):
        with contextlib.suppress(m.ProtocolViolation):
            parse(body)


def test_bind_round_trip() -> None:
    raw = m.build_bind("p1", "s1", [b"10", None, b""], [0, 1], [1])
    buf = FrameBuffer(MAX)
    buf.feed(raw)
    msg = buf.next_message()
    assert msg is not None
    assert m.parse_bind(msg[1]) == m.Bind("p1", "s1", (0, 1), (b"10", None, b""), (1,))


def test_startup_packets() -> None:
    raw = m.build_startup_message({"user": "agent", "database": "shop"})
    buf = FrameBuffer(MAX)
    buf.feed(raw + m.build_ssl_request() + m.build_cancel_request(7, -9))
    bodies = [buf.next_startup(), buf.next_startup(), buf.next_startup()]
    assert [m.parse_startup_packet(b) for b in bodies if b is not None] == [
        m.StartupMessage(m.PROTOCOL_3_0, {"user": "agent", "database": "shop"}),
        m.SSLRequest(),
        m.CancelRequest(7, -9),
    ]


def test_oversized_message_is_refused_before_it_is_buffered() -> None:
    buf = FrameBuffer(1024)
    buf.feed(b"Q\x00\x10\x00\x00")  # announces 1 MiB
    with pytest.raises(m.ProtocolViolation, match="exceeds the maximum of 1024"):
        buf.next_message()


def test_length_below_minimum_is_a_violation() -> None:
    buf = FrameBuffer(1024)
    buf.feed(b"Q\x00\x00\x00\x02")
    with pytest.raises(m.ProtocolViolation, match="invalid message length 2"):
        buf.next_message()


def test_error_response_fields() -> None:
    raw = m.build_error_response("42501", "no", detail="decision_id=abc")
    err = m.parse_error_response(raw[5:])
    assert (err.sqlstate, err.message, err.fields["D"], err.fields["S"]) == (
        "42501",
        "no",
        "decision_id=abc",
        "ERROR",
    )


def test_unsupported_protocol_version() -> None:
    body = (2 << 16).to_bytes(4, "big") + b"\0"
    with pytest.raises(m.ProtocolViolation, match=r"unsupported frontend protocol 2\.0"):
        m.parse_startup_packet(body)
