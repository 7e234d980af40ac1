"""Maintenance tooling beside the library: rendering the README's and docs' figures from committed
JSON (:mod:`tooling.report`), the harness and record every benchmark script uses (:mod:`tooling.bench`)
and the full-size bill's arithmetic (:mod:`tooling.full_size`).

The library (``pipeline``) never imports this package; a stage shell (``mmaffect report``,
``mmaffect ablate``) or a benchmark script may.
"""
