"""Reading the fenced code blocks of a Markdown page (shared by the docs tests)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass
class Block:
    """One fenced block: language, ``title="..."`` (a file name) if any, text, first line."""

    lang: str
    title: str | None
    body: str
    line: int


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of the page, in order (fences at the start of a line only)."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        title = TITLE.search(m["info"])
        line = text.count("\n", 0, m.start()) + 2  # first line of the body
        blocks.append(Block(m["lang"], title["title"] if title else None, m["body"], line))
    return blocks


@dataclass
class Command:
    """A ``detlab`` command line: its arguments after ``detlab`` and its environment prefix."""

    argv: list[str]
    env: dict[str, str]
    text: str


def parse_command(line: str) -> Command:
    """``PYTHONPATH=. detlab train x.py a=1  # comment`` → argv, env. Raises ValueError for a
    line that is not a ``detlab`` command."""
    words = shlex.split(line, comments=True)
    env = {}
    while words and ENV.match(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words or words[0] != "detlab":
        raise ValueError(f"not a detlab command: {line!r}")
    return Command(words[1:], env, line)


def bash_commands(body: str) -> list[Command]:
    """The commands of a ``bash`` block (blank and comment lines skipped, ``\\`` joins lines)."""
    joined = body.replace("\\\n", " ")
    lines = [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [parse_command(ln) for ln in lines]


def console_session(body: str) -> list[tuple[Command, list[str]]]:
    """``$ detlab ...`` lines of a ``console`` block with the output lines that follow each."""
    session: list[tuple[Command, list[str]]] = []
    for ln in body.splitlines():
        if ln.startswith("$ "):
            session.append((parse_command(ln[2:]), []))
        elif session and ln.strip():
            session[-1][1].append(ln.rstrip())
        elif ln.strip():
            raise ValueError(f"console output before any '$ ' command: {ln!r}")
    return session
