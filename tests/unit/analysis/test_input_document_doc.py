"""docs/input-document.md lists exactly the command and column-usage vocabularies the
analyzer reports."""

from __future__ import annotations

import re
from pathlib import Path

from pgwarden.proxy.analysis import COMMANDS
from pgwarden.proxy.analysis.document import USAGES

DOC = Path(__file__).resolve().parents[3] / "docs" / "input-document.md"


def test_the_documented_vocabulary_is_the_analyzers() -> None:
    text = DOC.read_text()
    block = re.search(r"<!-- commands:[^>]*-->\s*```\n(.*?)```", text, re.DOTALL)
    assert block is not None
    documented = {c.strip() for c in block.group(1).replace("\n", " ").split(",")}
    assert documented == set(COMMANDS)


def test_the_documented_usages_are_the_analyzers() -> None:
    text = DOC.read_text()
    section = text.split("### `columns`", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+)` \|", section, re.MULTILINE))
    assert documented == set(USAGES)
