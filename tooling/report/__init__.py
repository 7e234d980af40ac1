"""Rendered result blocks in README.md and docs/: every figure comes from a committed JSON file.

A block in a Markdown file is the text between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``
(each marker on its own line). ``NAME`` is registered in :mod:`tooling.report.catalog` with the
JSON files it reads (``metrics/*.json`` written by the stages, ``benchmarks/results/*.json`` written by
the benchmark scripts) and the function that renders them. :func:`tooling.report.run.render_docs`
rewrites the blocks, or lists those whose text differs from what their files say.
"""
