"""Structured logs: one JSON object per line on stderr.

Never log SQL literal values or tokens: decision lines carry ids, the subject, the
statement fingerprint and the policy's reasons (written from facts that hold no literals).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import orjson

# A decision writes one line per statement: orjson writes it for a fraction of json.dumps's
# CPU (non-ASCII as UTF-8 rather than \u escapes: the same JSON value). Values it cannot
# encode (e.g. a lone surrogate in a str) take json.dumps, which escapes them.
_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def log_event(event: str, *, level: str = "info", **fields: Any) -> None:
    record = {"ts": round(time.time(), 6), "level": level, "event": event, **fields}
    try:
        line = orjson.dumps(record, default=str, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    sys.stderr.write(line)
