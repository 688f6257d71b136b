"""Column masking on the wire: which result fields to mask, and rewriting DataRow values.

A field is masked when its base column (table oid + attnum from RowDescription, through
the catalog) has a mask in the decision, or when the analyzer's lineage says the field's
value is computed from such a column (``lower(email)``, ``row_to_json(c)``, ...). A direct
column gets its mask function; a derived value is masked as a whole. Text-like values
(text, varchar, char, name) carry the same bytes in the text and binary formats, so their
masks are format-independent; a masked value of any other type becomes NULL, which every
client can decode whatever the format.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgwarden.proxy.protocol.messages import ProtocolViolation

if TYPE_CHECKING:
    from pgwarden.proxy.analysis.catalog import Catalog

MASK_FUNCTIONS = ("partial_email", "last4", "hash", "redact", "null")
# Text-like types whose binary format is the UTF-8 text itself.
TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705})  # text, varchar, bpchar, name, unknown
REDACTED = "[redacted]"
# Relations whose RowDescription columns are base columns (a view's are not: lineage).
BASE_RELATION_KINDS = frozenset({"table", "partitioned_table", "foreign_table"})

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


@dataclass(frozen=True, slots=True)
class Field:
    """(B) One field of a RowDescription."""

    name: str
    table_oid: int
    attnum: int
    type_oid: int
    format: int


def parse_row_description(body: bytes) -> list[Field]:
    """(B) RowDescription."""
    try:
        (count,) = _I16.unpack_from(body, 0)
        pos, fields = 2, []
        for _ in range(count):
            end = body.index(b"\0", pos)
            name = body[pos:end].decode()
            table_oid, attnum, type_oid, _size, _mod, fmt = struct.unpack_from(
                "!IhIhih", body, end + 1
            )
            pos = end + 19
            fields.append(Field(name, table_oid, attnum, type_oid, fmt))
    except (struct.error, ValueError, UnicodeDecodeError):
        raise ProtocolViolation("malformed RowDescription") from None
    return fields


class MaskKey:
    """The key of ``hash``: an HMAC key, so equal values stay equal (joins, group-bys)
    without being reversible."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the masking hash key must have at least 16 bytes")
        self._key = key

    def digest(self, value: bytes) -> str:
        return hmac.new(self._key, value, hashlib.sha256).hexdigest()[:32]


def partial_email(value: str) -> str:
    local, at, domain = value.partition("@")
    if not at or not local:
        return REDACTED
    return f"{local[0]}***@{domain}"


def last4(value: str) -> str:
    if len(value) <= 4:
        return "*" * len(value)
    return "*" * (len(value) - 4) + value[-4:]


ValueMask = Callable[[bytes], bytes | None]


def value_mask(function: str, type_oid: int, *, direct: bool, key: MaskKey) -> ValueMask:
    """The byte-level mask of one field: ``function`` for a direct text column; the whole
    value replaced for a derived one; NULL for a value that is not text."""
    if function not in MASK_FUNCTIONS:
        raise ValueError(f"unknown mask function {function!r}")
    if function == "null" or type_oid not in TEXT_TYPES:
        return lambda _value: None
    if function == "hash":
        return lambda value: key.digest(value).encode()
    if not direct or function == "redact":
        return lambda _value: REDACTED.encode()
    text_mask = partial_email if function == "partial_email" else last4
    return lambda value: text_mask(value.decode(errors="replace")).encode()


# Strongest first: a field fed by several masked columns gets the strongest of their masks.
_STRENGTH = {"null": 0, "redact": 1, "hash": 2, "last4": 3, "partial_email": 4}


def strongest(functions: Sequence[str]) -> str:
    return min(functions, key=lambda f: _STRENGTH.get(f, -1))


@dataclass(frozen=True, slots=True)
class RowMask:
    """Masks for some fields of a result; ``masks[i]`` is None for a field left alone."""

    masks: tuple[ValueMask | None, ...]
    masked_columns: tuple[str, ...]

    def apply(self, body: bytes) -> bytes:
        """(B) DataRow body with masked values, lengths recomputed."""
        try:
            (count,) = _I16.unpack_from(body, 0)
            if count != len(self.masks):
                raise ProtocolViolation("DataRow does not match its RowDescription")
            out = [body[:2]]
            pos = 2
            for mask in self.masks:
                (size,) = _I32.unpack_from(body, pos)
                pos += 4
                value = None if size < 0 else body[pos : pos + size]
                if size > 0:
                    pos += size
                if mask is not None and value is not None:
                    value = mask(value)
                out.append(_I32.pack(-1) if value is None else _I32.pack(len(value)) + value)
        except struct.error:
            raise ProtocolViolation("malformed DataRow") from None
        return b"".join(out)


# -- content detectors: the second net for text that no classification covers ---------------

_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SSN = re.compile(rb"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_CARD = re.compile(rb"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
DETECTORS = ("email", "card_number", "ssn")


def luhn_valid(digits: bytes) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = char - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[bytes]) -> bytes:
    digits = bytes(c for c in match.group() if 48 <= c <= 57)
    return REDACTED.encode() if luhn_valid(digits) else match.group()


def content_detector(names: Sequence[str]) -> ValueMask:
    """A mask that redacts what looks like an e-mail address, a card number (Luhn-valid)
    or an SSN inside a text value, and leaves the rest of the value as it is."""
    unknown = set(names) - set(DETECTORS)
    if unknown:
        raise ValueError(f"unknown detector {sorted(unknown)[0]!r}")
    redacted = REDACTED.encode()
    emails, ssns, cards = "email" in names, "ssn" in names, "card_number" in names

    def detect(value: bytes) -> bytes:
        if emails:
            value = _EMAIL.sub(redacted, value)
        if ssns:
            value = _SSN.sub(redacted, value)
        if cards:
            value = _CARD.sub(_card, value)
        return value

    return detect


def column_namer(catalog: Catalog | None) -> Callable[[int, int], str | None]:
    """``(table oid, attnum) -> "schema.table.column"`` from the catalog, if any."""
    if catalog is None:
        return lambda oid, attnum: None

    def name(oid: int, attnum: int) -> str | None:
        found = catalog.column(oid, attnum)
        if found is None:
            return None
        relation, column = found
        if relation.kind not in BASE_RELATION_KINDS:
            # A view's column: masks name base columns, so let lineage decide.
            return None
        # A partition's or inheritance child's column is its root table's (the analyzer
        # names it so); with several roots that have it, lineage decides.
        roots = [r for r in catalog.roots(relation.oid) if column.name in r.column_names()]
        if len(roots) > 1:
            return None
        owner = roots[0] if roots else relation
        return f"{owner.schema}.{owner.name}.{column.name}"

    return name


def plan_row_mask(
    fields: Sequence[Field],
    mask: Mapping[str, str],
    *,
    column_name: Callable[[int, int], str | None],
    outputs: Sequence[Mapping[str, object]] | None,
    key: MaskKey,
    detect: Sequence[str] = (),
) -> RowMask | None:
    """Which fields of a result to mask, or None when nothing needs masking.

    ``column_name(table_oid, attnum)`` names a base column ("schema.table.column");
    ``outputs`` is the analyzer's lineage, one entry per result column, or None when it is
    unknown — then every field that is not a known unmasked base column is masked whole.
    ``detect`` names content detectors run on text fields that no mask covers.
    """
    if not mask and not detect:
        return None
    detector = content_detector(detect) if detect else None
    lineage = outputs if outputs is not None and len(outputs) == len(fields) else None
    masks: list[ValueMask | None] = []
    masked: list[str] = []
    for i, field in enumerate(fields):
        base = column_name(field.table_oid, field.attnum) if field.table_oid else None
        if base is not None:
            if base in mask:
                masks.append(value_mask(mask[base], field.type_oid, direct=True, key=key))
                masked.append(base)
            else:
                masks.append(detector if field.type_oid in TEXT_TYPES else None)
            continue
        direct = False
        if lineage is None:
            sources: list[str] = list(mask)  # unknown lineage: assume the worst
        else:
            raw = lineage[i].get("sources", [])
            sources = [s for s in raw if isinstance(s, str)] if isinstance(raw, list) else []
            # A column passed through unchanged (e.g. by a view) keeps its own mask.
            direct = lineage[i].get("direct") is True and len(sources) == 1
        hit = [s for s in sources if s in mask]
        if hit:
            function = strongest([mask[s] for s in hit])
            masks.append(value_mask(function, field.type_oid, direct=direct, key=key))
            masked.extend(hit)
        else:
            masks.append(detector if field.type_oid in TEXT_TYPES else None)
    if all(m is None for m in masks):
        return None
    return RowMask(tuple(masks), tuple(dict.fromkeys(masked)))
