"""SQL text without a parse tree: literal-free normalization on pglast's scanner, byte to
character offsets, ``search_path`` values.

``pglast.parser.normalize`` (libpg_query's ``pg_query_normalize``) exists in pglast 8.8 but
leaves literals in place inside utility statements (``COPY t TO PROGRAM 'curl …'``,
``PREPARE p AS … LIMIT 3``, ``EXECUTE p(5)``, column defaults), and the input document must
never carry a literal; so normalization is done here on the scanner's tokens: every literal
token becomes ``$n`` and comments are dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pglast import parser as pg_parser

#: Scanner token names of literal constants.
LITERAL_TOKENS = frozenset({"SCONST", "ICONST", "FCONST", "BCONST", "XCONST", "USCONST"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})


@dataclass(frozen=True, slots=True)
class Token:
    """One scanner token: ``text[start:end]`` (``end`` exclusive) and its scanner name."""

    start: int
    end: int
    name: str


def scan(text: str) -> list[Token]:
    """The scanner's tokens of ``text`` (character offsets); raises ``pglast.parser.Error``."""
    return [Token(t.start, t.end + 1, t.name) for t in pg_parser.scan(text)]


def literal_tokens(tokens: Sequence[Token]) -> list[Token]:
    return [t for t in tokens if t.name in LITERAL_TOKENS]


def normalize_tokens(
    text: str,
    tokens: Sequence[Token],
    start: int = 0,
    end: int | None = None,
    hidden: Collection[int] = (),
) -> str:
    """``text[start:end]`` with every literal token, and every token that starts at one of
    the ``hidden`` character offsets, replaced by ``$n``, comments removed; ``n`` counts on
    from the highest ``$n`` parameter already in the range, as PostgreSQL's own
    normalization does."""
    stop = len(text) if end is None else end
    inside = [t for t in tokens if t.start >= start and t.end <= stop]
    number = 0
    for t in inside:
        if t.name == "PARAM":
            digits = text[t.start + 1 : t.end]
            if digits.isdigit():
                number = max(number, int(digits))
    out: list[str] = []
    position = start
    for t in inside:
        if t.name in _COMMENT_TOKENS:
            before = text[position : t.start].rstrip()
            out.append(before)
            out.append(" " if before else "")
            position = t.end
            while position < stop and text[position].isspace():
                position += 1
        elif t.name in LITERAL_TOKENS or t.start in hidden:
            number += 1
            out.append(text[position : t.start])
            out.append(f"${number}")
            position = t.end
    out.append(text[position:stop])
    return "".join(out).strip()


def memo_key_text(text: str, tokens: Sequence[Token]) -> str:
    """The memo key of a query string: literal values out, everything else kept."""
    out: list[str] = []
    position = 0
    for t in tokens:
        if t.name in LITERAL_TOKENS:
            out.append(text[position : t.start])
            out.append("\x00")
            position = t.end
    out.append(text[position:])
    return "".join(out)


class Offsets:
    """Byte offsets of the UTF-8 encoding (what the parser reports) to character offsets
    (what the scanner and ``str`` slicing use)."""

    __slots__ = ("_map", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._map: list[int] | None = None
        if not text.isascii():
            mapping: list[int] = []
            for index, char in enumerate(text):
                mapping.extend([index] * len(char.encode("utf-8")))
            mapping.append(len(text))
            self._map = mapping

    def char(self, byte_offset: int) -> int:
        if self._map is None:
            return byte_offset
        if byte_offset >= len(self._map):
            return len(self.text)
        return self._map[byte_offset]


def literal_value(text: str, token: Token) -> str | None:
    """The value of a literal token as text (string and numeric constants), else None."""
    raw = text[token.start : token.end]
    if token.name in ("ICONST", "FCONST"):
        return raw
    if token.name == "SCONST":
        return _string_constant(raw)
    return None


def _string_constant(raw: str) -> str | None:
    if raw.startswith("$"):
        tag_end = raw.index("$", 1) + 1
        return raw[tag_end : len(raw) - tag_end]
    if raw[:1] in ("E", "e"):
        return None  # escape strings: resolved through the parse tree instead
    if raw[:1] in ("N", "n"):
        raw = raw[1:]
    if len(raw) >= 2 and raw[0] == "'" and raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return None


def parse_int(value: str | None) -> int | None:
    """An integer from constant text (``'100'``, ``100``, ``1e2`` is not), else None."""
    if value is None:
        return None
    stripped = value.strip().replace("_", "")
    sign = 1
    if stripped[:1] in ("+", "-"):
        sign = -1 if stripped[0] == "-" else 1
        stripped = stripped[1:]
    if stripped.isdigit():
        return sign * int(stripped)
    lowered = stripped.lower()
    try:
        if lowered.startswith("0x"):
            return sign * int(lowered[2:], 16)
        if lowered.startswith("0o"):
            return sign * int(lowered[2:], 8)
        if lowered.startswith("0b"):
            return sign * int(lowered[2:], 2)
    except ValueError:
        return None
    return None


def split_search_path(value: str) -> tuple[str, ...]:
    """The schema names of a ``search_path`` setting (``"$user", public`` → ``("$user",
    "public")``); quoted names keep their case, unquoted ones are folded to lower case."""
    names: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            j = i + 1
            buf: list[str] = []
            while j < n:
                if value[j] == '"':
                    if j + 1 < n and value[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(value[j])
                j += 1
            names.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and value[j] != ",":
                j += 1
            names.append(value[i:j].strip().lower())
            i = j
    return tuple(name for name in names if name)


def quote_ident(name: str) -> str:
    """A schema name as it would appear in a ``search_path`` value."""
    if (
        name
        and (name[0].isalpha() or name[0] == "_")
        and name == name.lower()
        and all(c.isalnum() or c in "_$" for c in name)
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


def join_search_path(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(n) if n != "$user" else '"$user"' for n in names)
