"""The registry of block renderers: a name, the JSON files it reads, and the function that renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Renderer:
    """Renders block ``name`` from the JSON files ``sources`` (paths relative to the repository root).

    ``render`` receives the parsed files in the order of ``sources`` and returns Markdown. A block
    whose record is measured outside the test suite (on an idle machine, after a full run) sets
    ``missing``: the text it shows while a source file does not exist yet, so a figure that has not
    been measured reads as such instead of failing the report or showing an invented number.
    """

    name: str
    sources: tuple[str, ...]
    render: Callable[..., str]
    missing: str | None = None


def build_registry(renderers: Iterable[Renderer]) -> dict[str, Renderer]:
    """Index renderers by name, refusing a name registered twice."""
    registry: dict[str, Renderer] = {}
    for renderer in renderers:
        if renderer.name in registry:
            raise ValueError(f"report block '{renderer.name}' is already registered")
        registry[renderer.name] = renderer
    return registry


def render(renderer: Renderer, loaded: dict[str, Any]) -> str:
    """Run ``renderer`` on its already parsed source files (``loaded`` maps path -> JSON)."""
    return renderer.render(*(loaded[source] for source in renderer.sources))
