"""What every benchmark script shares: the run harness (:mod:`tooling.bench.harness`), the record it
writes (:mod:`tooling.bench.record`) and the timing loop (:mod:`tooling.bench.timing`).

The scripts live in ``benchmarks/`` and run from the repository root as modules,
``python -m benchmarks.NAME [options]``; each writes its record to ``benchmarks/results/NAME.json``
unless ``--out`` says otherwise.
"""
