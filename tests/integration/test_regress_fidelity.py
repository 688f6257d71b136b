"""Fidelity on real SQL: every statement of PostgreSQL's regression suite.

The suite's ``.sql`` files ship in pglast's source distribution
(``libpg_query/test/sql/postgres_regress/``); the installed wheel does not carry them, so
the sdist of the installed version is fetched once with ``pip download`` into
``.cache/pglast-sdist/`` and read in place. The files are psql scripts: meta-commands,
``COPY … FROM stdin`` data and ``:variables`` are psql's, not SQL, and are taken out
(variables become constants) before the statements are split with PostgreSQL's scanner.

Every statement must give either a complete facts document (every key, well-typed, a
command from the vocabulary; nested documents too) or a parse error raised by
PostgreSQL's own parser (libpg_query) — the suite contains deliberate syntax errors.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pglast
import pytest
from pglast import parser as pg_parser

from pgwarden.proxy.analysis import Analyzer
from pgwarden.proxy.analysis.document import problems

REGRESS_DIR = "libpg_query/test/sql/postgres_regress/"
_META_TERMINATORS = re.compile(
    r"\\(g|gx|gset|gexec|gdesc|bind|bind_named|sendpipeline|crosstabview|watch)\b"
)
_VARIABLE = re.compile(r"(?<![:\w]):(?:'(\w+)'|\"(\w+)\"|([A-Za-z_]\w*))")


@pytest.fixture(scope="module")
def regress_files(repo_root: Path) -> dict[str, str]:
    version = pglast.__version__.lstrip("v")
    cache = repo_root / ".cache" / "pglast-sdist"
    sdist = cache / f"pglast-{version}.tar.gz"
    if not sdist.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--no-build-isolation",
                f"pglast=={version}",
                "-d",
                str(cache),
            ],
            check=True,
            capture_output=True,
            timeout=110,
        )
    files: dict[str, str] = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name.split("/", 1)[-1]
            if name.startswith(REGRESS_DIR) and name.endswith(".sql"):
                handle = archive.extractfile(member)
                assert handle is not None
                files[name[len(REGRESS_DIR) :]] = handle.read().decode("utf-8", "replace")
    return files


def _without_meta(line: str) -> str:
    """A line with its psql meta-command cut off; a query-sending one ends the query."""
    index = line.find("\\")
    while index >= 0:
        if line[:index].count("'") % 2 == 0:
            ends_query = bool(_META_TERMINATORS.match(line, index)) or line[index:].startswith(
                "\\\\"
            )
            return line[:index] + (";" if ends_query else "")
        index = line.find("\\", index + 1)
    return line


def psql_statements(script: str) -> Iterator[str]:
    """The SQL statements of a psql script."""
    lines: list[str] = []
    in_copy_data = False
    for line in script.splitlines():
        if in_copy_data:
            in_copy_data = not line.startswith("\\.")
            continue
        if line.lstrip().startswith("\\"):
            continue
        sql_line = _without_meta(line)
        lines.append(_VARIABLE.sub(_variable_value, sql_line))
        if re.search(r"(?i)\bfrom\s+stdin\b", sql_line) and sql_line.rstrip().endswith(";"):
            in_copy_data = True
    yield from split_like_psql("\n".join(lines))


_ROUTINE = re.compile(r"(?is)^\s*create\s+(or\s+replace\s+)?(function|procedure)\b")


def split_like_psql(text: str) -> Iterator[str]:
    """Split at top-level semicolons as psql's lexer does (quotes, dollar quotes,
    comments, parentheses, ``BEGIN ATOMIC … END`` bodies); lexical errors stay inside
    their statement for the parser to report."""
    start = 0
    i = 0
    n = len(text)
    depth = 0
    begin_depth = 0
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and text.startswith("/*", i):
            level = 0
            while i < n:
                if text.startswith("/*", i):
                    level += 1
                    i += 2
                elif text.startswith("*/", i):
                    level -= 1
                    i += 2
                    if level == 0:
                        break
                else:
                    i += 1
            continue
        if c == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            i += 1
            while i < n:
                if escapes and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == "'":
                    if text.startswith("''", i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if c == '"':
            j = text.find('"', i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == "$":
            match = re.match(r"\$([A-Za-z_]\w*)?\$", text[i:])
            if match and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                tag = match.group(0)
                j = text.find(tag, i + len(tag))
                i = n if j < 0 else j + len(tag)
                continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c.isalpha() and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            match = re.match(r"[A-Za-z_]\w*", text[i:])
            word = match.group(0).lower() if match else c
            if _ROUTINE.match(text[start:i]) or begin_depth:
                if word in ("begin", "case"):
                    begin_depth += 1
                elif word == "end":
                    begin_depth = max(0, begin_depth - 1)
            i += len(word)
            continue
        elif c == ";" and depth == 0 and begin_depth == 0:
            statement = text[start:i].strip()
            if statement:
                yield statement
            start = i + 1
        i += 1
    tail = text[start:].strip()
    if tail:
        yield tail


def _variable_value(match: re.Match[str]) -> str:
    if match.group(1):
        return "'psql_variable'"
    if match.group(2):
        return '"psql_variable"'
    return "1"


def test_every_regression_statement_gives_facts_or_a_postgresql_parse_error(
    regress_files: dict[str, str],
) -> None:
    counts: collections.Counter[str] = collections.Counter()
    errors_by_file: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    commands: collections.Counter[str] = collections.Counter()
    for name, script in sorted(regress_files.items()):
        analyzer = Analyzer(None)
        state = analyzer.new_session()
        for sql in psql_statements(script):
            counts["strings"] += 1
            try:
                results = analyzer.analyze_query(sql, state)
            except Exception as exc:  # the analyzer must never raise
                failures.append(f"{name}: {sql[:120]!r} raised {exc!r}")
                continue
            for result in results:
                if result.parse_error is not None:
                    counts["parse_error"] += 1
                    errors_by_file[name] += 1
                    # the same complaint from PostgreSQL's own parser
                    with pytest.raises(pg_parser.ParseError) as raised:
                        pg_parser.parse_sql_json(sql)
                    assert raised.value.args[0] == result.parse_error.message
                    continue
                counts["facts"] += 1
                commands[str(result.facts["command"])] += 1
                failures.extend(f"{name}: {p}" for p in problems(result.facts))
                if result.facts["command"] == "unknown":
                    counts["unknown"] += 1
                state.apply(result)
    print(
        f"\nregression suite: {len(regress_files)} files, {counts['strings']} statements,"
        f" {counts['facts']} fact documents, {counts['parse_error']} parse errors,"
        f" {counts['unknown']} with command unknown, {len(commands)} distinct commands"
    )
    print("parse errors by file:", dict(errors_by_file.most_common()))
    assert not failures, "\n".join(failures[:50])
    assert len(regress_files) > 200
    assert counts["facts"] > 40_000
    assert counts["unknown"] == 0
