"""Render every block of a set of Markdown files from its JSON sources, or list the stale ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline.fsio import atomic_path
from tooling.report.blocks import find_blocks, replace_blocks
from tooling.report.registry import Renderer, render


@dataclass(frozen=True)
class StaleBlock:
    """A block whose committed text differs from what its source files render to."""

    path: Path
    line: int
    name: str
    sources: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: block '{self.name}' differs from {', '.join(self.sources)}"


def doc_files(root: Path) -> list[Path]:
    """README.md and docs/*.md under ``root``: the files whose figures are rendered."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load_sources(root: Path, renderer: Renderer, where: str) -> dict[str, Any]:
    """Parse the renderer's JSON files under ``root``; ``where`` (file:line) names the block in errors."""
    loaded: dict[str, Any] = {}
    for source in renderer.sources:
        path = root / source
        if not path.is_file():
            raise FileNotFoundError(f"{where}: block '{renderer.name}' renders from {path}, which does not exist")
        try:
            loaded[source] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); needed by block '{renderer.name}' at {where}") from err
    return loaded


def render_docs(root: Path, paths: Iterable[Path], registry: dict[str, Renderer], check: bool) -> list[StaleBlock]:
    """Rewrite the blocks of ``paths`` (``check=False``) or only compare them (``check=True``).

    Returns the blocks whose text differed from their rendering (rewritten unless ``check``). An
    unknown block name, a missing or unreadable source file, or a bad marker raises an error naming
    the file and line, and so does a source file that lacks a value its block shows.
    """
    stale: list[StaleBlock] = []
    for path in paths:
        text = path.read_text()
        rendered: dict[str, str] = {}
        for block in find_blocks(text, path):
            where = f"{path}:{block.line}"
            if block.name not in registry:
                raise ValueError(f"{where}: unknown report block '{block.name}'; registered: {', '.join(sorted(registry))}")
            renderer = registry[block.name]
            if renderer.missing is not None and not all((root / source).is_file() for source in renderer.sources):
                new = renderer.missing.strip("\n")
            else:
                new = _render_block(renderer, load_sources(root, renderer, where), where)
            rendered[block.name] = new
            if new != block.body.strip("\n"):
                stale.append(StaleBlock(path, block.line, block.name, renderer.sources))
        updated = replace_blocks(text, rendered, path)
        if not check and updated != text:
            with atomic_path(path) as tmp:
                tmp.write_text(updated)
    return stale


def _render_block(renderer: Renderer, loaded: dict[str, Any], where: str) -> str:
    """The Markdown of one block; a source file without a value the block needs is a ValueError
    naming the block, its files and the missing key (a renderer indexes the JSON directly)."""
    try:
        return render(renderer, loaded).strip("\n")
    except KeyError as err:
        missing = err.args[0] if err.args else "?"
        raise ValueError(f"{where}: block '{renderer.name}': {', '.join(renderer.sources)} has no key "
                         f"{missing!r}; rerun the command that writes it, or fix the file") from err
    except (IndexError, TypeError) as err:
        raise ValueError(f"{where}: block '{renderer.name}': {', '.join(renderer.sources)} does not have the "
                         f"layout the block reads ({type(err).__name__}: {err})") from err
