"""Configuration files: TOML, validated at start-up with errors that name the key and file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError naming it."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


class Section:
    """Typed access to one table of a config file; every error names ``source`` and the
    dotted key. Unknown keys are errors too, so a typo never silently falls back."""

    def __init__(self, data: Mapping[str, Any], *, source: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def get(
        self, name: str, kind: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        self._seen.add(name)
        if name not in self.data:
            if required or default is None:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        # bool is an int in Python; a config int must not accept true/false.
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(name, f"must be {kind.__name__}, got {type(value).__name__}")
        return value

    def number(self, name: str, default: float) -> float:
        """An int or float (never a bool), e.g. a duration in seconds."""
        self._seen.add(name)
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {type(value).__name__}")
        return float(value)

    def optional(self, name: str, kind: type[T]) -> T | None:
        self._seen.add(name)
        if name not in self.data:
            return None
        return self.get(name, kind)

    def section(self, name: str, *, required: bool = False) -> Section:
        self._seen.add(name)
        value = self.data.get(name, None)
        if value is None:
            if required:
                raise self.error(name, "is required")
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(name, "must be a table")
        return Section(value, source=self.source, prefix=self.key(name))

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key")
