"""Re-fuse a run's scored files with the current ``fuse``: how far do its error-ranking figures move?

    python benchmarks/refuse_scored.py benchmarks/results/RUN.json [...]

A change to the fusion maths (``steerunc/scoring/fusion.py``) changes every
score computed from the views, but re-scoring a run takes hours. The scored
files keep each view's option probabilities, so the views can be fused again
without the model: each view's log-probabilities (``log p``, the same
distribution as its logits) are handed to ``fuse`` with the run's settings
(tau, fusion method, alpha, top-m), in float64 as the options readout does.
Runs scored before the options readout fused in float64 stored float32
probabilities: an option whose stored probability is 0 (below about 1e-45) is
read as 1e-45 and counted.

For every evaluated file the script prints, per score, the AUROC of the score
for the base prediction's errors as stored and as re-fused, and the largest
relative change of the score on any record. Only records with options are
re-fused. Nothing is written: the calibrators and the combined score are not
re-fitted (re-judge with ``bench_quality.py --reuse-scored`` after re-scoring).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from typing import Any

import torch
from sklearn.metrics import roc_auc_score

from quality_scoring import fused_fields
from steerunc.scoring.fusion import SCORE_NAMES, FusionConfig, fuse

#: what a stored probability of 0 is read as: about the smallest float32 above 0
SMALLEST = 1e-45


def fusion_of(run: dict[str, Any]) -> FusionConfig:
    """The fusion settings a bench_quality run scored with."""
    s = run["settings"]
    return FusionConfig(tau=s["tau"], alpha=s["alpha"], top_m=s["top_m"], method=s["fusion"])


def refuse(row: dict[str, Any], fusion: FusionConfig) -> tuple[dict[str, Any], bool]:
    """One scored line fused again from its views' stored probabilities; and whether an option's
    probability of 0 had to be read as :data:`SMALLEST`."""
    if row.get("mode") != "options" or not row.get("views"):
        return row, False
    labels, names = list(row["base_probs"]), list(row["views"])
    probs = [row["base_probs"]] + [row["views"][n]["probs"] for n in names]
    p = torch.tensor([[view[o] for o in labels] for view in probs], dtype=torch.float64)
    clamped = bool((p <= 0).any())
    fused = fuse(p.clamp_min(SMALLEST).log(), fusion)
    fields = fused_fields(fused, labels, names)
    out = {**row, **{k: v for k, v in fields.items() if not k.startswith("base_")}}  # the stored base view kept
    if row.get("label") is not None:
        out["correct"] = out["prediction"] == row["label"]
    return out, clamped


def refuse_file(path: str, fusion: FusionConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The stored and the re-fused lines of one scored file, and how many had a probability of 0."""
    stored, refused, clamped = [], [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            new, was_clamped = refuse(row, fusion)
            stored.append(row)
            refused.append(new)
            clamped += was_clamped
    return stored, refused, clamped


def _auroc(rows: list[dict[str, Any]], score: str) -> float:
    rows = [r for r in rows if "scores" in r and r.get("base_correct") is not None]
    errors = [not r["base_correct"] for r in rows]
    if len(set(errors)) < 2:
        return math.nan
    return float(roc_auc_score(errors, [r["scores"][score] for r in rows]))


def _largest_change(before: list[dict[str, Any]], after: list[dict[str, Any]], score: str) -> float:
    worst = 0.0
    for a, b in zip(before, after):
        if "scores" in a:
            x, y = a["scores"][score], b["scores"][score]
            if x != y:
                worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="bench_quality result JSONs; their scored files are in <run>/")
    args = parser.parse_args(argv)
    missing = 0
    for run_path in args.runs:
        with open(run_path, encoding="utf-8") as handle:
            run = json.load(handle)
        fusion = fusion_of(run)
        work = run_path[: -len(".json")]
        paths = sorted(glob.glob(os.path.join(work, "scored-*.jsonl")))
        if not paths:
            print(f"{run_path}: no scored files in {work}", file=sys.stderr)
            missing += 1
            continue
        print(f"{run['run']} (tau {fusion.tau}, {fusion.method}):")
        for path in paths:
            stored, refused, clamped = refuse_file(path, fusion)
            name = os.path.basename(path)
            note = f", {clamped} with a probability of 0 read as {SMALLEST:g}" if clamped else ""
            print(f"  {name}: {len(stored)} lines{note}")
            if name.endswith("-eval.jsonl"):
                for score in SCORE_NAMES:
                    a, b = _auroc(stored, score), _auroc(refused, score)
                    print(f"    {score:14s} AUROC {a:.4f} -> {b:.4f} ({b - a:+.4f}); "
                          f"largest relative change {_largest_change(stored, refused, score):.1e}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
