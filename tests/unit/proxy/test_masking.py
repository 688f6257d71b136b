"""Mask functions, the content detectors (the second net), and how RowDescription columns
are named through the catalog."""

from __future__ import annotations

import pytest

from pgwarden.proxy.analysis import catalog_of
from pgwarden.proxy.masking import (
    MaskKey,
    column_namer,
    content_detector,
    last4,
    luhn_valid,
    partial_email,
    value_mask,
)


def test_partial_email_and_last4() -> None:
    assert partial_email("quux@example.org") == "q***@example.org"
    assert partial_email("not an address") == "[redacted]"
    assert last4("4111111111111111") == "************1111"
    assert last4("123") == "***"


def test_hash_is_keyed_and_stable() -> None:
    one, other = MaskKey(b"a" * 16), MaskKey(b"b" * 16)
    hashed = value_mask("hash", 25, direct=True, key=one)
    assert hashed(b"x") == hashed(b"x") != value_mask("hash", 25, direct=True, key=other)(b"x")


def test_non_text_values_become_null() -> None:
    assert value_mask("partial_email", 1082, direct=True, key=MaskKey(b"k" * 16))(b"x") is None


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        (b"4111111111111111", True),
        (b"4111111111111112", False),
        (b"378282246310005", True),
    ],
)
def test_luhn(digits: bytes, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_detectors_redact_what_they_find_and_keep_the_rest() -> None:
    detect = content_detector(["email", "card_number", "ssn"])
    text = b"call bob@example.com, card 4111 1111 1111 1111, ssn 987-65-4329, order 12345"
    assert detect(text) == (b"call [redacted], card [redacted], ssn [redacted], order 12345")
    # Not Luhn-valid: a long number that is no card stays.
    assert detect(b"ref 4111111111111112") == b"ref 4111111111111112"


def test_only_the_named_detectors_run() -> None:
    assert content_detector(["ssn"])(b"a@b.io 987-65-4329") == b"a@b.io [redacted]"
    with pytest.raises(ValueError, match="unknown detector 'iban'"):
        content_detector(["iban"])


def test_a_childs_column_is_named_as_its_root_tables() -> None:
    catalog = catalog_of(
        {
            "public.customers": ["id", "email"],
            "public.contacts": ["id", "email", "phone"],
            "public.customers_2026": ["id", "email", "archived_at"],
            "public.merged": ["id", "email", "phone"],
        },
        views={"public.v": (["email"], "SELECT c.email FROM public.customers c")},
        inherits={
            "public.customers_2026": ["public.customers"],
            "public.merged": ["public.customers", "public.contacts"],
        },
    )
    name = column_namer(catalog)

    def oid(table: str) -> int:
        relation = catalog.relation("public", table)
        assert relation is not None
        return relation.oid

    assert name(oid("customers"), 2) == "public.customers.email"
    assert name(oid("customers_2026"), 2) == "public.customers.email"
    assert name(oid("customers_2026"), 3) == "public.customers_2026.archived_at"
    assert name(oid("merged"), 3) == "public.contacts.phone"
    assert name(oid("merged"), 2) is None  # two roots have it: lineage decides
    assert name(oid("v"), 1) is None  # a view's column: lineage decides
    assert column_namer(None)(oid("customers"), 2) is None
