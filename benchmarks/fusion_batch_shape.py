"""Does a record's fused score depend on the batch it is fused in? Synthetic nearly-certain items.

    python benchmarks/fusion_batch_shape.py [--items 300] [--seed 0]

Multi-token options (TruthfulQA) give summed log-probabilities that differ by
tens of nats, so every view is nearly certain and the true ``mutual_info`` is
far below the rounding of the largest logit. This script draws such items
(base + 6 views, 2 to 13 options, leads of up to 70 nats), fuses each alone and
inside padded batches of five (padded to the batch's widest item, then 3 and 16
entries wider), and prints, per score and input precision, how many of the
items got a different value (in any bit) and the largest relative difference.
Summation order changes with the width, so the last few bits may differ; a
score that depends on the batch only through them prints a largest relative
difference near float64's precision (since the fix: at most 3.1e-13; before
it, up to 38 %, docs/results.md). No model is loaded.
"""

from __future__ import annotations

import argparse

import torch

from steerunc.scoring.fusion import fuse

SCORES = ("msp", "mutual_info", "mean_kl", "fused_entropy")


def items(n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        c = int(torch.randint(2, 14, (1,), generator=gen))
        lead = torch.rand(c - 1, generator=gen) * 40 + float(torch.rand(1, generator=gen)) * 30
        base = torch.cat([torch.zeros(1), -lead]).double()
        z = base + torch.randn(7, c, generator=gen).double() * float(torch.rand(1, generator=gen)) * 2.0
        z[0] = base
        out.append(z)
    return out


def batched(zs: list[torch.Tensor], width: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    z = torch.zeros(len(zs), 7, width, dtype=dtype)
    mask = torch.zeros(len(zs), width, dtype=torch.bool)
    for i, one in enumerate(zs):
        z[i, :, : one.shape[1]], mask[i, : one.shape[1]] = one.to(dtype), True
    return fuse(z, mask=mask).scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    zs = items(args.items, args.seed)
    for dtype in (torch.float32, torch.float64):
        alone = [{k: float(v) for k, v in fuse(z.to(dtype)).scores.items()} for z in zs]
        for extra in (0, 3, 16):
            diffs: dict[str, list[float]] = {k: [] for k in SCORES}
            for lo in range(0, len(zs), 5):
                part = zs[lo: lo + 5]
                scores = batched(part, max(z.shape[1] for z in part) + extra, dtype)
                for j in range(len(part)):
                    for k in SCORES:
                        a, b = alone[lo + j][k], float(scores[k][j])
                        diffs[k].append(abs(a - b) / max(abs(a), abs(b), 1e-300))
            cells = ", ".join(f"{k} {sum(d > 0 for d in v)}/{len(v)} (max rel {max(v):.1e})" for k, v in diffs.items())
            print(f"{str(dtype).removeprefix('torch.')}, padded +{extra}: {cells}")


if __name__ == "__main__":
    main()
