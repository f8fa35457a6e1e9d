"""The code blocks of README.md and the ``<!-- readme-test: ... -->`` directives before them.

A directive is an HTML comment (invisible on the rendered page) on the lines just before
a fenced block, blank lines allowed in between::

    <!-- readme-test: daemon http stream -->
    ```sh
    curl -N localhost:8630/events
    ```

Words (any order, several allowed):

- ``skip (reason)``: not run; only for what cannot run in a test (installing the package).
- ``sketch``: a Python API sketch (``...`` bodies, free names): compiled, not run.
- ``pending (what is missing)``: run, and expected to fail until that work is merged; a
  pass fails the test so the marker gets removed.
- ``daemon``: the session's shared daemon runs during the block (``http``: the same, said
  for the reader; the shared daemon always serves the HTTP API). The session's free port
  replaces ``8630`` in every block and in the configuration.
- ``stream``: the block's last command follows ``/events`` until the daemon stops.
- ``config``: a TOML block to add to config.toml: the blocks after it (and the shared
  daemon) run with it, as a reader who followed the README would.
- ``pytest``: a Python block run by pytest (also inferred from ``def test_``).
- ``output``: a plain-text block showing output: each of its lines (numbers aside) must
  appear in what the example before it printed (or the shared daemon logged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
WORDS = {"skip", "sketch", "pending", "daemon", "http", "stream", "config", "pytest", "output"}
NEEDS_REASON = {"skip", "pending"}
LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python", "py": "python", "toml": "toml"}


class ReadmeFormatError(ValueError):
    """README.md has a directive the harness does not understand, or a fence left open."""


@dataclass(frozen=True)
class Directive:
    """What a ``<!-- readme-test: ... -->`` comment asks for."""

    words: frozenset[str] = frozenset()
    reason: str = ""

    def __contains__(self, word: str) -> bool:
        return word in self.words


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # 1-based line of the opening fence
    language: str  # as written after the fence ("" for plain text)
    text: str
    heading: str  # the closest heading above it
    directive: Directive = field(default_factory=Directive)

    @property
    def kind(self) -> str | None:
        """``shell``, ``python`` or ``toml`` for an example the tests run; None for text."""
        return LANGUAGES.get(self.language.lower())

    @property
    def test_id(self) -> str:
        """A stable, readable pytest id: ``quick-start-L27-sh``."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-") or "top"
        return f"{slug}-L{self.line}-{self.language or 'text'}"


def parse_directive(body: str, line: int) -> Directive:
    """``daemon http`` / ``skip (why)`` → a Directive; anything unknown is an error."""
    reason = ""
    match = re.search(r"\((.*)\)\s*$", body)
    if match:
        reason = match.group(1).strip()
        body = body[: match.start()]
    words = frozenset(body.replace(",", " ").split())
    unknown = words - WORDS
    if unknown:
        raise ReadmeFormatError(f"README.md line {line}: unknown readme-test word(s) {sorted(unknown)}; "
                                f"known: {sorted(WORDS)}")
    if words & NEEDS_REASON and not reason:
        raise ReadmeFormatError(f"README.md line {line}: {sorted(words & NEEDS_REASON)} needs a reason in parentheses")
    if not words:
        raise ReadmeFormatError(f"README.md line {line}: empty readme-test directive")
    return Directive(words, reason)


def parse_readme(text: str) -> list[Block]:
    """Every fenced block of ``text`` in order, with its directive (ReadmeFormatError on a bad one)."""
    blocks: list[Block] = []
    heading = ""
    pending: Directive | None = None
    pending_line = 0
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        fence = FENCE.match(line)
        if directive:
            if pending is not None:
                raise ReadmeFormatError(f"README.md line {pending_line}: directive not followed by a code block")
            pending, pending_line = parse_directive(directive.group("body"), i + 1), i + 1
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ReadmeFormatError(f"README.md line {i + 1}: code block never closed")
            blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n", heading,
                                pending or Directive()))
            pending = None
            i = end
        elif line.strip():
            if pending is not None:
                raise ReadmeFormatError(f"README.md line {pending_line}: directive not followed by a code block")
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
        i += 1
    if pending is not None:
        raise ReadmeFormatError(f"README.md line {pending_line}: directive not followed by a code block")
    return blocks


def readme_blocks() -> list[Block]:
    """The blocks of the repository's README.md."""
    return parse_readme(README.read_text(encoding="utf-8"))


def readme_test_command() -> str:
    """The README's test command: the second line of its first code block, without the comment."""
    first = readme_blocks()[0]
    return first.text.splitlines()[1].split("  #", 1)[0].strip()
