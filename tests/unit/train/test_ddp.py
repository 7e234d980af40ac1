"""The cross-rank exchanges of ``pipeline.train.ddp`` carry tensors, never pickles.

Two gloo ranks meet through a file store (no socket listens for the rendezvous), with torch's
pickling collectives replaced by ones that fail, and exchange what the trainers exchange: rows of
uneven counts, losses, generator states and the digest of the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _no_pickles import forbid_pickled_collectives

from pipeline.train import ddp

DIGEST = "0123456789abcdef" * 4


def _env(rank: int, world: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "GLOO_SOCKET_IFNAME": "lo"})


def _exchange(rank: int, world: int, store: str, out: str) -> None:
    _env(rank, world)
    forbid_pickled_collectives()
    torch.set_num_threads(1)
    with ddp.distributed("cpu", init_method=f"file://{store}") as (ctx, _):
        rows = np.arange((3 - rank) * 12, dtype=np.int8).reshape(3 - rank, 12) + rank
        gathered = ddp.gather_rows(rows, ctx)
        floats = ddp.gather_floats([1.5, float("nan")][rank], ctx)
        state = torch.Generator().manual_seed(rank).get_state()
        states = ddp.gather_tensors(state, ctx)
        digest = ddp.broadcast_digest(DIGEST if ctx.is_main else None, ctx)
        try:
            ddp.gather_rows(np.zeros((1, 2), [np.float32, np.float64][rank]), ctx)
            mismatch = "no error"
        except ValueError as exc:
            mismatch = str(exc)
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "shapes": [p.shape for p in gathered], "dtypes": [p.dtype.name for p in gathered],
        "equal": all(np.array_equal(p, np.arange((3 - r) * 12, dtype=np.int8).reshape(3 - r, 12) + r)
                     for r, p in enumerate(gathered)),
        "floats": [repr(v) for v in floats], "non_finite": repr(ddp.non_finite_of_any(1.0, ddp.DistContext())),
        "states": [torch.equal(s, torch.Generator().manual_seed(r).get_state()) for r, s in enumerate(states)],
        "digest": digest, "mismatch": mismatch}))


@pytest.mark.slow
def test_two_ranks_exchange_rows_floats_states_and_digest_without_pickles(tmp_path: Path) -> None:
    mp.spawn(_exchange, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    got = results[0]
    assert got["shapes"] == [[3, 12], [2, 12]] and got["dtypes"] == ["int8", "int8"] and got["equal"]
    assert got["floats"] == ["1.5", "nan"]
    assert got["states"] == [True, True]
    assert got["digest"] == DIGEST
    assert "different trailing shapes or dtypes" in got["mismatch"]


def test_single_process_exchanges_return_their_input() -> None:
    ctx = ddp.DistContext()
    rows = np.ones((2, 3), np.float32)
    assert ddp.gather_rows(rows, ctx)[0] is rows
    assert ddp.gather_floats(2.0, ctx) == [2.0]
    assert ddp.broadcast_digest(DIGEST, ctx) == DIGEST
    with pytest.raises(ValueError, match="rank 0 must pass"):
        ddp.broadcast_digest(None, ctx)
