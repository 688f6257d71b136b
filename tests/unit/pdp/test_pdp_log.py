"""pdp.log: one JSON object per line, whatever the fields hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgwarden.pdp.log import log_event


def logged(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    [line] = capsys.readouterr().err.splitlines()
    record: dict[str, Any] = json.loads(line)
    return record


def test_a_line_holds_the_event_level_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    log_event("decision", decision_id="d-1", reasons=["a", "b"], dry_run=False, latency_us=12)
    record = logged(capsys)
    assert (record["event"], record["level"]) == ("decision", "info")
    assert (record["reasons"], record["dry_run"], record["latency_us"]) == (["a", "b"], False, 12)
    assert isinstance(record["ts"], float)


def test_non_ascii_text_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    log_event("decision", subject="agent:réporting ✓")
    assert logged(capsys)["subject"] == "agent:réporting ✓"


def test_values_json_has_no_type_for_are_written_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_event("opa_started", path=Path("/srv/opa"), ids={1: "a"})
    record = logged(capsys)
    assert (record["path"], record["ids"]) == ("/srv/opa", {"1": "a"})


def test_a_lone_surrogate_is_escaped_not_lost(capsys: pytest.CaptureFixture[str]) -> None:
    log_event("unauthenticated", method="/x\udc80")
    assert logged(capsys)["method"] == "/x\udc80"
