"""The proxy relays a plain session end to end."""

from __future__ import annotations

import psycopg

from tests.integration.conftest import ProxyUnderTest


def test_select_through_the_proxy(proxy: ProxyUnderTest) -> None:
    with psycopg.connect(proxy.dsn()) as conn:
        row = conn.execute("SELECT count(*), current_user FROM items").fetchone()
    assert row == (100, "pgwarden_proxy")
