"""The judging half of the quality benchmark: calibrate on one split, evaluate on another.

For each scored pair of files (calibration, evaluated) and each target
prediction (base or fused) it does what

    steerunc calibrate CAL.jsonl --score S --method isotonic --target T -o S.json
    steerunc evaluate EVAL.jsonl --target T --calibrator S.json ... --json

do, in process, and keeps the numbers the results table needs: AUROC and PRR
of every score as a detector of the target's errors (with bootstrap
intervals; every score against the same errors, so they compare), the raw ECE
of a confidence that belongs to the target's prediction, ECE of every score after isotonic calibration fitted on the
calibration split, accuracy, and the Jensen-Shannon distance to the human
label distribution where there is one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from steerunc.judging.calibration import CalibrationError, make_calibrator, save_calibrator
from steerunc.judging.evaluation import evaluate
from steerunc.judging.distances import js_distance
from steerunc.judging.metrics import bootstrap_interval, compute_metrics, prr
from steerunc.scored import TARGETS, ScoredFile, read_scored, record_groups, score_of

__all__ = ["judge", "human_js", "SCORES", "read_grouped"]

#: uncertainty scores evaluated (steerunc's output) plus the two confidences read from the probabilities
SCORES = ("msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy", "fused_confidence")


def _fit(cal_path: str, score: str, target: str, out_dir: str) -> tuple[str, Any] | None:
    """An isotonic calibrator of ``score`` fitted on the calibration split; None if it cannot be
    fitted (a split where every prediction is right, or every one wrong)."""
    scored = read_scored(cal_path)
    records, correct, _ = scored.labelled(TARGETS[target])
    values = np.array([score_of(d, score, cal_path, ln) for ln, d in records], dtype=np.float64)
    try:
        calibrator = make_calibrator("isotonic", score, target=target).fit(values, correct)
    except CalibrationError:
        return None
    path = os.path.join(out_dir, f"cal-{target}-{score}.json")
    save_calibrator(calibrator, path, source=os.path.basename(cal_path))
    return path, calibrator


def read_grouped(path: str, groups: dict[Any, str] | None = None) -> ScoredFile:
    """A scored file whose records get their ``group`` from ``groups`` (id -> group) where they lack
    one: files scored before ``score`` carried the field (the records files have it)."""
    scored = read_scored(path)
    for _, data in scored.records if groups else ():
        if "group" not in data and data.get("id") in (groups or {}):
            data["group"] = (groups or {})[data["id"]]
    return scored


def human_js(eval_path: str, n_boot: int, seed: int, groups: dict[Any, str] | None = None) -> dict[str, Any] | None:
    """Mean JS distance (base 2) of base and fused probabilities to ``human_probs``, with intervals
    (resampling whole groups where the records have them)."""
    scored = read_grouped(eval_path, groups)
    rows: dict[str, list[float]] = {"base": [], "fused": []}
    kept = []
    for line, data in scored.records:
        human = data.get("human_probs")
        if not human:
            continue
        options = sorted(human)
        h = [human[o] for o in options]
        for target, field in (("base", "base_probs"), ("fused", "probs")):
            p = [data[field].get(o, 0.0) for o in options]
            rows[target].append(float(js_distance([p], [h])[0]))
        kept.append((line, data))
    if not rows["base"]:
        return None
    out: dict[str, Any] = {"n": len(rows["base"])}
    base, fused = np.array(rows["base"]), np.array(rows["fused"])
    for name, values in (("base", base), ("fused", fused), ("fused_minus_base", fused - base)):
        out[name] = {"js_distance": float(values.mean()),
                     "ci": bootstrap_interval(lambda v: float(v.mean()), [values], n_boot, seed=seed,
                                              groups=record_groups(kept))}
    return out


def judge(cal_path: str, eval_path: str, out_dir: str, n_boot: int = 1000, seed: int = 0,
          groups: dict[Any, str] | None = None) -> dict[str, Any]:
    """Every metric of the results table for one method's scored files (see the module docstring);
    intervals resample whole groups where records have one (``groups``: id -> group, for files
    scored before records carried it)."""
    os.makedirs(out_dir, exist_ok=True)
    result: dict[str, Any] = {}
    for target in ("base", "fused"):
        calibrators = [c for c in (_fit(cal_path, s, target, out_dir) for s in SCORES) if c is not None]
        evaluation = evaluate(read_grouped(eval_path, groups), target=target, calibrators=calibrators, n_boot=n_boot,
                              seed=seed, smooth=False)
        report = evaluation.report
        rows: dict[str, Any] = {}
        by_name = {row.name: row for row in evaluation.rows}
        for score in SCORES:
            # a results table compares scores at detecting the errors of one prediction (the target),
            # so the ranking metrics of every score are recomputed against the target's correctness;
            # a raw confidence's ECE is kept only when it belongs to the target's prediction
            row = by_name[score]
            raw = report["scores"][score]
            ranking = compute_metrics(row.uncertainty, evaluation.correct, n_boot=n_boot, seed=seed, smooth=False,
                                      groups=evaluation.groups)
            calibrated = report["scores"].get(f"{score}@isotonic") or {}
            rows[score] = {
                "auroc": ranking["auroc"], "auroc_ci": ranking["auroc_ci"], "auprc": ranking["auprc"],
                "aurc": ranking["aurc"], "prr": ranking["prr"],
                "prr_ci": bootstrap_interval(prr, [row.uncertainty, evaluation.correct], n_boot, seed=seed,
                                             groups=evaluation.groups),
                "ece_raw": raw["ece"] if row.judged_against == target else None,
                "ece_cal": calibrated.get("ece"), "ece_cal_ci": calibrated.get("ece_ci"),
                "brier_cal": calibrated.get("brier"),
                "selective_accuracy": ranking["selective_accuracy"],
            }
        result[target] = {"n": report["records"]["evaluated"], "accuracy": report["accuracy"],
                          "errors": report["records"]["errors"], "scores": rows,
                          "resampled": report["settings"]["resampled"], "n_groups": report["settings"]["n_groups"]}
    result["human"] = human_js(eval_path, n_boot, seed, groups)
    result["accuracy_fused_minus_base"] = paired_accuracy(eval_path, n_boot, seed, groups)
    return result


def paired_accuracy(eval_path: str, n_boot: int, seed: int, groups: dict[Any, str] | None = None) -> dict[str, Any] | None:
    """Accuracy of the fused prediction minus the base one on the same records, with a paired
    bootstrap interval (records, or their groups, resampled together)."""
    scored = read_grouped(eval_path, groups)
    fused_records, fused_ok, _ = scored.labelled(TARGETS["fused"])
    base_records, base_ok, _ = scored.labelled(TARGETS["base"])
    if not fused_records or [ln for ln, _ in fused_records] != [ln for ln, _ in base_records]:
        return None
    diff = fused_ok - base_ok
    return {"n": int(diff.size), "difference": float(diff.mean()), "changed": int(np.sum(diff != 0)),
            "ci": bootstrap_interval(lambda v: float(v.mean()), [diff], n_boot, seed=seed,
                                     groups=record_groups(base_records))}
