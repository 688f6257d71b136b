"""Structured logs: one JSON object per line on stderr.

Never log SQL literal values or tokens: decision lines carry ids, the subject, the
statement fingerprint and the policy's reasons (written from facts that hold no literals).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def log_event(event: str, *, level: str = "info", **fields: Any) -> None:
    record = {"ts": round(time.time(), 6), "level": level, "event": event, **fields}
    sys.stderr.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
