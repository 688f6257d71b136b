"""Generate the Python gRPC code of protos/ into pgwarden/v1/ (or --out DIR).

Generated files are committed and never edited; the test suite regenerates them into a
temporary directory and fails when the committed copy is stale.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "protos"


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(files("grpc_tools") / "_proto")
    plugins = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside our python
    argv = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed")
    for package in {Path(s).parent for s in sources}:
        init = out / package / "__init__.py"
        init.write_text('"""Generated from protos/ by scripts/gen_protos.py; do not edit."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO,
        help="root to write pgwarden/v1/ under (default: the repository)",
    )
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
