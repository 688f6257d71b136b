"""Scanner-based normalization and search_path values."""

from __future__ import annotations

import pytest

from pgwarden.proxy.analysis import sqltext


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        ("SELECT 1, 'a', 1.5, B'01', X'ff', $$d$$", "SELECT $1, $2, $3, $4, $5, $6"),
        ("SELECT a FROM t WHERE x = $1 AND y = 'z'", "SELECT a FROM t WHERE x = $1 AND y = $2"),
        ("SELECT a /* hidden 'x' */ FROM t -- tail", "SELECT a FROM t"),
        ("  SELECT\n  a  ", "SELECT\n  a"),
        ("SELECT U&'d\\0061t'", "SELECT $1"),
    ],
)
def test_every_literal_becomes_a_parameter(sql: str, normalized: str) -> None:
    assert sqltext.normalize_tokens(sql, sqltext.scan(sql)) == normalized


def test_the_memo_key_keeps_everything_but_literal_values() -> None:
    one = "SELECT a FROM t WHERE b = 'x' LIMIT 10"
    two = "SELECT a FROM t WHERE b = 'yy' LIMIT 20"
    other = "SELECT a AS c FROM t WHERE b = 'x' LIMIT 10"
    key = sqltext.memo_key_text
    assert key(one, sqltext.scan(one)) == key(two, sqltext.scan(two))
    assert key(one, sqltext.scan(one)) != key(other, sqltext.scan(other))


def test_non_ascii_offsets() -> None:
    offsets = sqltext.Offsets("SELECT 'é', 1")
    assert offsets.char(12) == 11  # the byte offset of "1" is one more than its index


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ('"$user", public', ("$user", "public")),
        ("Analytics,  PUBLIC", ("analytics", "public")),
        ('"My Schema", "a""b"', ("My Schema", 'a"b')),
        ("", ()),
    ],
)
def test_search_path_values(value: str, names: tuple[str, ...]) -> None:
    assert sqltext.split_search_path(value) == names
    assert sqltext.split_search_path(sqltext.join_search_path(names)) == names


@pytest.mark.parametrize(
    ("text", "value"),
    [("100", 100), ("+7", 7), ("-3", -3), ("0x10", 16), ("1_000", 1000), ("1e2", None)],
)
def test_integer_constants(text: str, value: int | None) -> None:
    assert sqltext.parse_int(text) == value
