"""The result blocks committed in README.md and docs/ are what their committed JSON files render to."""

from __future__ import annotations

from pathlib import Path

from tooling.report.blocks import find_blocks
from tooling.report.catalog import RENDERERS
from tooling.report.run import doc_files, render_docs

ROOT = Path(__file__).resolve().parents[2]


def test_committed_docs_match_their_source_files() -> None:
    stale = render_docs(ROOT, doc_files(ROOT), RENDERERS, check=True)
    assert not stale, "run `mmaffect report`:\n" + "\n".join(map(str, stale))


def test_the_readme_results_are_rendered_blocks() -> None:
    names = {block.name for block in find_blocks((ROOT / "README.md").read_text(), "README.md")}
    assert {"results-headline", "results-gains", "repro-time", "full-size-summary"} <= names
    in_results = {block.name for block in find_blocks((ROOT / "docs/results.md").read_text(), "docs/results.md")}
    assert {"results", "ablation-training-seeds", "cross-cpu", "ablation-draws", "ablation-pretrain"} <= in_results
