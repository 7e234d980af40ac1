"""Class-layer memory of the margin softmax head for 10k, 100k and 360k identities, with and without
Partial-FC sampling.

Sizes are computed from the shapes (float32): the class centres (C x D), their gradient (dense: the
head indexes a full parameter) and their SGD momentum buffer, and the main tensors of one step: the
scored centres (gathered when sampled, then normalised) and the logits (B x K). K is at most
max(int(sample_rate * C), B): every class of the batch is scored.
The smallest class count is then allocated for real (one SGD step on the CPU) and the tensors'
sizes are compared with the computed ones. Prints the JSON record and writes it to ``--out``
(default ``benchmarks/results/margin_memory.json``, rendered into docs/pretrain.md).

    python -m benchmarks.margin_memory
    python -m benchmarks.margin_memory --batch 128 --sample-rate 0.1 --dim 512
"""

from __future__ import annotations


import torch

from pipeline.models.margin import MarginSoftmax
from tooling.bench import harness

FLOAT = 4
MIB = 1 << 20


def computed(classes: int, dim: int, batch: int, sample_rate: float) -> dict[str, object]:
    """Bytes of every class-layer tensor for ``classes`` identities, full and sampled."""
    matrix = classes * dim * FLOAT
    scored = {"full": classes, "sampled": max(int(sample_rate * classes), min(batch, classes))}
    out: dict[str, object] = {
        "classes": classes, "weights_bytes": matrix, "momentum_bytes": matrix, "grad_bytes": matrix,
        "weights_plus_momentum_mib": round(2 * matrix / MIB, 1),
    }
    for mode, k in scored.items():
        gathered = 0 if mode == "full" else k * dim * FLOAT        # weight[index] copy
        step = gathered + k * dim * FLOAT + batch * k * FLOAT       # + normalised centres + logits
        out[mode] = {"scored_classes": k, "logits_bytes": batch * k * FLOAT, "per_step_main_bytes": step,
                     "total_mib": round((3 * matrix + step) / MIB, 1)}
    return out


def measured(classes: int, dim: int, batch: int, sample_rate: float) -> dict[str, int]:
    """Allocate the head, run one SGD step, and read the tensors' sizes."""
    torch.manual_seed(0)
    head = MarginSoftmax(classes, embedding_size=dim, sample_rate=sample_rate)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    embeddings, labels = torch.randn(batch, dim), torch.randint(0, classes, (batch,))
    logits, local = head.logits(embeddings, labels, generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(logits, local).backward()
    optimiser.step()
    momentum = optimiser.state[head.weight]["momentum_buffer"]
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    return {"weights_bytes": size(head.weight), "grad_bytes": size(head.weight.grad),
            "momentum_bytes": size(momentum), "logits_bytes": size(logits), "scored_classes": logits.shape[1]}


def main() -> None:
    parser = harness.parser("margin_memory", __doc__)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sample-rate", type=float, default=0.1)
    args = parser.parse_args()
    bench = harness.start("margin_memory")
    rows = [computed(c, args.dim, args.batch, args.sample_rate) for c in (10_000, 100_000, 360_000)]
    check = {}
    for mode, rate in (("full", 1.0), ("sampled", args.sample_rate)):
        real = measured(rows[0]["classes"], args.dim, args.batch, rate)
        expected = {**{k: rows[0][k] for k in ("weights_bytes", "grad_bytes", "momentum_bytes")},
                    "logits_bytes": rows[0][mode]["logits_bytes"], "scored_classes": rows[0][mode]["scored_classes"]}
        check[mode] = {"measured": real, "matches_computed": real == expected}
    bench.publish({"dim": args.dim, "batch": args.batch, "sample_rate": args.sample_rate,
                 "dtype": "float32", "rows": rows, "check_10k": check}, torch.get_num_threads(), args.out)


if __name__ == "__main__":
    main()
