"""Every relative link and ``#anchor`` in README.md and docs/*.md resolves, by GitHub's rules.

A link is a file (or folder) of the repository, relative to the page; its anchor is the slug of a
heading of the target page as GitHub makes it (lower case, punctuation other than ``-`` and ``_``
dropped, spaces to ``-``, ``-1``, ``-2``... for repeated headings). Links inside code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the target ends at the first space or closing parenthesis
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication).

    >>> github_slug("Does face-recognition pretraining help?")
    'does-face-recognition-pretraining-help'
    >>> github_slug("Losses (`pipeline/train/losses.py`)")
    'losses-pipelinetrainlossespy'
    >>> github_slug("Aligned crops for the pipeline: `mmaffect crop`")
    'aligned-crops-for-the-pipeline-mmaffect-crop'
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of ``path`` outside fenced code blocks, with their numbers."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """Every heading anchor of ``path``, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match[2])
        if slug in seen:
            seen[slug] += 1
            found.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of ``path`` outside code, with its line number."""
    found = []
    for number, line in _prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match[1]))
    return found


def broken_links(path: Path, root: Path) -> list[str]:
    """``file:line: target: why`` for every relative link or anchor of ``path`` that does not resolve."""
    problems = []
    for number, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: no heading with that anchor in {destination.relative_to(root)}")
    return problems


def test_every_link_and_anchor_of_the_docs_resolves() -> None:
    problems = [problem for page in PAGES for problem in broken_links(page, ROOT)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target, ok", [
    ("other.md", True), ("other.md#a-heading", True), ("other.md#a-heading-1", True), ("#local", True),
    ("missing.md", False), ("other.md#nowhere", False), ("#nowhere", False), ("https://example.org/x", True),
])
def test_the_checker_finds_broken_links_and_anchors(tmp_path: Path, target: str, ok: bool) -> None:
    (tmp_path / "other.md").write_text("# A heading\n\n## A heading\n")
    page = tmp_path / "page.md"
    page.write_text(f"## Local\n\nSee [there]({target}) and `[not a link](nowhere.md)`.\n\n```\n[code](gone.md)\n```\n")
    assert (broken_links(page, tmp_path) == []) is ok
