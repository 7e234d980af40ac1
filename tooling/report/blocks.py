"""Finding and replacing ``<!-- report:NAME -->`` … ``<!-- /report:NAME -->`` blocks in Markdown text.

Example:
    >>> text = "intro\\n<!-- report:x -->\\nold\\n<!-- /report:x -->\\nend\\n"
    >>> [(b.name, b.body) for b in find_blocks(text, "README.md")]
    [('x', 'old')]
    >>> replace_blocks(text, {"x": "new"}, "README.md")
    'intro\\n<!-- report:x -->\\nnew\\n<!-- /report:x -->\\nend\\n'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

OPEN = re.compile(r"^<!-- report:([a-z0-9][a-z0-9-]*) -->$")
CLOSE = re.compile(r"^<!-- /report:([a-z0-9][a-z0-9-]*) -->$")


class BlockError(ValueError):
    """A marker without its partner, or nested or misnamed markers; the message names file and line."""


@dataclass(frozen=True)
class Block:
    """One rendered block: its name, the 1-based line of its opening marker, and the text between."""

    name: str
    line: int
    body: str


def find_blocks(text: str, source: str | Path) -> list[Block]:
    """Every block of ``text`` in order; ``source`` names the file in errors."""
    blocks: list[Block] = []
    open_name, open_line, body = None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        opening, closing = OPEN.match(line.strip()), CLOSE.match(line.strip())
        if opening:
            if open_name is not None:
                raise BlockError(f"{source}:{number}: block '{opening[1]}' opens inside block '{open_name}' (line {open_line})")
            open_name, open_line, body = opening[1], number, []
        elif closing:
            if closing[1] != open_name:
                raise BlockError(f"{source}:{number}: '/report:{closing[1]}' closes no open block (open: {open_name})")
            blocks.append(Block(open_name, open_line, "\n".join(body)))
            open_name = None
        elif open_name is not None:
            body.append(line)
        elif "<!-- report:" in line or "<!-- /report:" in line:
            raise BlockError(f"{source}:{number}: a report marker must stand alone on its line: {line.strip()!r}")
    if open_name is not None:
        raise BlockError(f"{source}:{open_line}: block '{open_name}' is never closed")
    return blocks


def replace_blocks(text: str, rendered: dict[str, str], source: str | Path) -> str:
    """``text`` with the body of every block named in ``rendered`` replaced by its new text."""
    find_blocks(text, source)  # validates the markers before anything is replaced
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        opening, closing = OPEN.match(line.strip()), CLOSE.match(line.strip())
        if closing and skipping:
            skipping = False
        if not skipping:
            out.append(line)
        if opening and opening[1] in rendered:
            body = rendered[opening[1]].strip("\n")
            out.append(body + "\n" if body else "")
            skipping = True
    return "".join(out)
