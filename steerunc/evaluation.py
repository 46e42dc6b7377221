"""Evaluate every score of a scored JSONL file: the engine behind ``steerunc evaluate``.

One row per score. Ranking metrics (does the score pick out the errors?) use
the score itself, oriented so higher = less sure. Calibration metrics need a
confidence, which only some rows have without a calibrator:

============================ =========================================
row                          raw confidence
============================ =========================================
fused_confidence             max of ``probs`` (the fused prediction)
base_confidence              max of ``base_probs``
msp                          1 - msp (= the base max-probability)
anything else                none: pass ``--calibrator``
``<score>@<method>``         g(score) from a fitted calibrator
============================ =========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from steerunc import __version__
from steerunc.calibration import Calibrator
from steerunc.errors import InputError
from steerunc.metrics import compute_metrics, js_distance, kl_divergence
from steerunc.scored import TARGETS, ScoredFile, distribution, orientation_of, score_names, score_of
from steerunc.triage import calibrated_confidence

__all__ = ["RAW_CONFIDENCE", "Evaluation", "Row", "evaluate"]

#: rows with a raw confidence, and what it is
RAW_CONFIDENCE: dict[str, str] = {
    "fused_confidence": "max of probs",
    "base_confidence": "max of base_probs",
    "msp": "1 - msp (the base max-probability)",
}

Array = NDArray[np.float64]


@dataclass
class Row:
    """One evaluated score: its uncertainty (higher = less sure) and, where defined, a confidence."""

    name: str
    uncertainty: Array
    confidence: Array | None
    confidence_source: str | None
    calibrator: str | None = None


@dataclass
class Evaluation:
    """The report (JSON-ready) and the rows and correctness it came from (for plots)."""

    report: dict[str, Any]
    rows: list[Row]
    correct: Array
    settings: dict[str, Any] = field(default_factory=dict)


def _raw_row(name: str, values: Array) -> Row:
    if name == "msp":
        return Row(name, values, np.clip(1.0 - values, 0.0, 1.0), RAW_CONFIDENCE[name])
    if orientation_of(name) == "confident":
        return Row(name, -values, np.clip(values, 0.0, 1.0), RAW_CONFIDENCE[name])
    return Row(name, values, None, None)


def _human(scored: ScoredFile) -> dict[str, Any] | None:
    """Mean JS distance and KL(human || predicted) for base and fused predictions."""
    out: dict[str, Any] = {}
    for target in ("fused", "base"):
        field_name = TARGETS[target].probs
        pairs: list[tuple[list[float], list[float]]] = []
        for line, data in scored.records:
            if data.get("human_probs") is None or data.get(field_name) is None:
                continue
            human = distribution(data, "human_probs", scored.path, line)
            pred = distribution(data, field_name, scored.path, line)
            if sum(human.values()) <= 0 or sum(pred.values()) <= 0:
                raise InputError(f"'human_probs' or '{field_name}' sums to zero", path=scored.path, line=line)
            options = sorted(set(human) | set(pred))
            pairs.append(([pred.get(o, 0.0) for o in options], [human.get(o, 0.0) for o in options]))
        if pairs:
            js = [float(js_distance([p], [h])[0]) for p, h in pairs]
            kl = [float(kl_divergence([h], [p])[0]) for p, h in pairs]
            out[target] = {"n": len(pairs), "js_distance": float(np.mean(js)), "kl_human_to_pred": float(np.mean(kl))}
    return out or None


def evaluate(
    scored: ScoredFile,
    *,
    target: str = "fused",
    calibrators: Sequence[tuple[str, Calibrator]] = (),
    n_bins: int = 15,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    coverages: Sequence[float] = (0.5, 0.8, 0.9),
    smooth: bool = True,
) -> Evaluation:
    """Metrics of every score (and every calibrated score) on the labelled records of ``scored``."""
    tgt = TARGETS[target]
    records, correct, unlabelled = scored.labelled(tgt)
    if not records:
        raise InputError(
            f"no labelled records to evaluate (need 'label' or '{tgt.correct}'; skipped: "
            f"{scored.skipped_text(unlabelled)})",
            path=scored.path,
        )
    names = score_names(records[0][1])
    if not names:
        raise InputError("no 'scores' object and no probabilities to evaluate", path=scored.path, line=records[0][0])
    rows = []
    for name in names:
        values = np.array([score_of(d, name, scored.path, ln) for ln, d in records], dtype=np.float64)
        rows.append(_raw_row(name, values))
    for cal_path, cal in calibrators:
        if cal.target != target:
            raise InputError(
                f"calibrator was fitted for target '{cal.target}', evaluating target '{target}' "
                f"(use --target {cal.target})",
                path=cal_path,
            )
        try:
            conf = calibrated_confidence(cal, records, scored.path)
        except InputError as exc:
            raise InputError(f"{exc.message} (the calibrator {cal_path} needs it)", exc.path, exc.line) from exc
        rows.append(Row(f"{cal.score}@{cal.method}", -conf, conf, f"{cal.method} calibrator", cal_path))
    settings = {"n_bins": n_bins, "bootstrap": n_boot, "level": level, "seed": seed, "coverages": list(coverages)}
    report: dict[str, Any] = {
        "file": scored.path,
        "target": target,
        "steerunc_version": __version__,
        "records": {
            "lines": len(scored.lines),
            "evaluated": len(records),
            "errors": scored.counts["error"] + scored.counts["malformed"],
            "continuation": scored.counts["continuation"],
            "unlabelled": unlabelled,
        },
        "accuracy": float(correct.mean()),
        "settings": {**settings, "bins": "ece/mce: equal-width; ece_equal_mass: equal-mass"},
        "scores": {},
        "human": _human(scored),
    }
    for row in rows:
        metrics = compute_metrics(
            row.uncertainty,
            correct,
            row.confidence,
            n_bins=n_bins,
            n_boot=n_boot,
            level=level,
            seed=seed,
            coverages=coverages,
            smooth=smooth,
        )
        report["scores"][row.name] = {
            "higher_means": "uncertain"
            if row.calibrator is None and orientation_of(row.name) == "uncertain"
            else "confident",
            "confidence": row.confidence_source,
            "calibrator": row.calibrator,
            **metrics,
        }
    return Evaluation(report, rows, correct, settings)
