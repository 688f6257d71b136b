"""The decision path's HTTP/1.1 reader (pdp/opa_http.py), fed bytes: no sockets."""

from __future__ import annotations

import asyncio

import pytest

from pgwarden.pdp.opa_http import HttpAnswer, read_answer


async def answer_of(raw: bytes) -> tuple[HttpAnswer, bool]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    head = await reader.readuntil(b"\r\n\r\n")
    return await read_answer(reader, head)


async def test_content_length_answer_keeps_the_connection() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
        b'{"result":1}'
    )
    assert await answer_of(raw) == (HttpAnswer(200, b'{"result":1}'), True)


async def test_chunked_answer_with_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"res\r\n7;ext=1\r\nult":1}\r\n0\r\nX-Trailer: y\r\n\r\n'
    )
    assert await answer_of(raw) == (HttpAnswer(200, b'{"result":1}'), True)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 500 Internal Server Error\r\n\r\n{}",  # no length: to the end
    ],
)
async def test_answers_that_end_the_connection(raw: bytes) -> None:
    assert await answer_of(raw) == (HttpAnswer(500, b"{}"), False)


async def test_a_truncated_answer_is_an_error() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await answer_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
