"""The benchmark scripts: each measures one thing and writes a JSON record to ``benchmarks/results/``.

Run one from the repository root as a module, ``python -m benchmarks.NAME [options]`` (``--help``
lists its options). They share the harness in :mod:`tooling.bench`; a script that reuses another's
measurement imports it from this package (``from benchmarks.pack_frames import read_rate``).
"""
