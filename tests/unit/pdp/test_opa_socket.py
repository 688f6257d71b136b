"""Where the supervised OPA's Unix socket goes (no processes)."""

from __future__ import annotations

from pathlib import Path

from pgwarden.pdp.opa_supervisor import UNIX_SOCKET_PATH_MAX, unix_socket_in


def test_the_socket_sits_in_the_snapshot_directory(tmp_path: Path) -> None:
    assert unix_socket_in(tmp_path) == str(tmp_path / "opa.sock")


def test_a_path_too_long_for_a_unix_socket_means_tcp() -> None:
    fits = Path("/" + "d" * (UNIX_SOCKET_PATH_MAX - len("/opa.sock") - 1))
    assert unix_socket_in(fits) == f"{fits}/opa.sock"
    assert len(f"{fits}/opa.sock") == UNIX_SOCKET_PATH_MAX
    assert unix_socket_in(fits.with_name(fits.name + "d")) is None
