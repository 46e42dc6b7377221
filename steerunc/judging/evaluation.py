"""Evaluate every score of a scored JSONL file: the engine behind ``steerunc evaluate``.

One row per score. Ranking metrics (does the score pick out the errors?) use
the score itself, oriented so higher = less sure. Calibration metrics need a
confidence, which only some rows have without a calibrator. Every metric of a
row (ranking and calibration) is computed against the correctness of the
prediction the row is about, its ``judged_against``:

============================ ========================================= ===================
row                          raw confidence                            judged against
============================ ========================================= ===================
fused_confidence             max of ``probs`` (the fused prediction)   fused
fused_entropy                none                                      fused
base_confidence              max of ``base_probs``                     base
msp                          1 - msp (= the base max-probability)      base
entropy                      none                                      base
anything else                none: pass ``--calibrator``               the target
``<score>@<method>``         g(score) from a fitted calibrator         its (= the) target
============================ ========================================= ===================

The records evaluated are those labelled for the target. A row judged
against the other prediction needs that prediction's correctness on every one
of them; where a record lacks it, the row is left out (``left_out`` in the
report says why).

With an option ``prior`` (:mod:`steerunc.judging.option_prior`) every record is
corrected first: the prior's target is then named ``base+prior`` (or
``fused+prior``) wherever the report names a prediction, and ``prior`` in the
report gives its accuracy before and after on the evaluated records.

Metrics on records a calibrator or the prior was fitted on are optimistic:
``evaluate`` refuses them (InputError naming both files and the overlap)
unless ``in_sample=True``, which labels the report (``in_sample``). A
calibrator or prior made for records scored with other settings is refused
(:func:`steerunc.judging.provenance.check_settings`); ``notes`` holds what could not
be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from steerunc import __version__
from steerunc.judging.calibration import Calibrator
from steerunc.judging.confidence import calibrated_confidence
from steerunc.errors import InputError
from steerunc.judging.distances import js_distance, kl_divergence
from steerunc.judging.metrics import compute_metrics
from steerunc.judging.option_prior import OptionPrior
from steerunc.judging.provenance import check_settings, overlap
from steerunc.scored import (
    TARGETS,
    ScoredFile,
    correctness,
    distribution,
    orientation_of,
    record_groups,
    score_names,
    score_of,
    scoring_provenance,
)
from steerunc.judging.option_prior import prior_mismatch

__all__ = ["JUDGED_AGAINST", "RAW_CONFIDENCE", "Evaluation", "Row", "evaluate", "judged_against"]

#: rows with a raw confidence, and what it is
RAW_CONFIDENCE: dict[str, str] = {
    "fused_confidence": "max of probs",
    "base_confidence": "max of base_probs",
    "msp": "1 - msp (the base max-probability)",
}

#: rows about one prediction whatever the target: the plain model's scores and the fused prediction's
JUDGED_AGAINST: dict[str, str] = {
    "msp": "base",
    "entropy": "base",
    "base_confidence": "base",
    "fused_confidence": "fused",
    "fused_entropy": "fused",
}

Array = NDArray[np.float64]


def judged_against(name: str, target: str) -> str:
    """The prediction whose correctness a raw score's row is judged against (see the module docstring).

    >>> judged_against("msp", "fused"), judged_against("mutual_info", "fused"), judged_against("fused_entropy", "base")
    ('base', 'fused', 'fused')
    """
    return JUDGED_AGAINST.get(name, target)


@dataclass
class Row:
    """One evaluated score: its uncertainty (higher = less sure), where defined a confidence, and the
    0/1 correctness of the prediction it is judged against (``judged_against``: "base" or "fused")."""

    name: str
    uncertainty: Array
    confidence: Array | None
    confidence_source: str | None
    judged_against: str
    correct: Array
    calibrator: str | None = None


@dataclass
class Evaluation:
    """The report (JSON-ready) and the rows it came from (for plots); ``correct`` is the target's
    correctness (each row carries its own)."""

    report: dict[str, Any]
    rows: list[Row]
    correct: Array
    settings: dict[str, Any] = field(default_factory=dict)
    #: warnings and notes for the user (settings that could not be checked, a steerunc version apart)
    notes: list[str] = field(default_factory=list)
    #: each evaluated record's group (what the intervals resampled), or None
    groups: list[str] | None = None

    @property
    def in_sample(self) -> bool:
        """Whether some evaluated records are among those a calibrator or the prior was fitted on."""
        return bool(self.report.get("in_sample"))


def _fitted_checks(
    scored: ScoredFile,
    records: list[tuple[int, dict[str, Any]]],
    fitted: Sequence[tuple[str, str, Calibrator | OptionPrior]],
    in_sample: bool,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Refuse (or, with ``in_sample``, describe) evaluated records that a calibrator or the prior was fitted
    on, and objects made for other scoring settings; returns the in-sample description and notes."""
    notes: list[str] = []
    shared_with: dict[str, Any] = {}
    if not fitted:  # raw scores only: nothing was made for these records
        return None, notes
    scored_with = scoring_provenance(records, scored.path)
    data = [d for _, d in records]
    for what, path, obj in fitted:
        notes += check_settings(obj.scoring_, scored_with, made_path=path, data_path=scored.path, what=what)
        found = overlap(obj, data)
        if found is None:
            notes.append(f"note: {path} does not record which records it was fitted on: cannot check that "
                         f"{scored.path} holds none of them")
            continue
        shared, n = found
        if shared and not in_sample:
            raise InputError(
                f"{shared} of these {n} labelled records evaluated are among the {len(obj.fitted_on_ or ())} the "
                f"{what} {path} was fitted on: metrics on them are in-sample (optimistic); evaluate on records it "
                "was not fitted on, or pass --in-sample to label the report in-sample",
                path=scored.path,
            )
        if shared:
            shared_with[path] = {"fitted": what, "records_fitted_on": shared, "records_evaluated": n}
    if in_sample and not shared_with:
        notes.append("note: --in-sample: no evaluated record is among those fitted on; the report is not "
                     "labelled in-sample")
    return shared_with or None, notes


def _prior_summary(
    prior: OptionPrior, path: str, original: ScoredFile, records: list[tuple[int, dict[str, Any]]]
) -> dict[str, Any]:
    """Accuracy of the prior's target before and after correction, on the evaluated records."""
    tgt = TARGETS[prior.target]
    by_line = {ln.number: ln.data for ln in original.lines}
    before, after, changed = [], [], 0
    for line, data in records:
        old = by_line.get(line) or {}
        was, now = correctness(old, tgt, original.path, line), correctness(data, tgt, original.path, line)
        changed += old.get(tgt.prediction) != data.get(tgt.prediction)
        if was is not None and now is not None:
            before.append(was)
            after.append(now)
    return {
        "file": path,
        "target": prior.target,
        "corrected": prior.name,
        "options": prior.options_,
        "temperature": prior.temperature_,
        "bias": dict(zip(prior.options_, prior.bias_.tolist())),
        "records": len(before),
        "accuracy_before": float(np.mean(before)) if before else None,
        "accuracy_after": float(np.mean(after)) if after else None,
        "changed_predictions": changed,
    }


def _raw_row(name: str, values: Array, against: str, correct: Array) -> Row:
    if name == "msp":
        return Row(name, values, np.clip(1.0 - values, 0.0, 1.0), RAW_CONFIDENCE[name], against, correct)
    if orientation_of(name) == "confident":
        return Row(name, -values, np.clip(values, 0.0, 1.0), RAW_CONFIDENCE[name], against, correct)
    return Row(name, values, None, None, against, correct)


def _correct_by_prediction(
    scored: ScoredFile, records: list[tuple[int, dict[str, Any]]], target: str, correct: Array
) -> tuple[dict[str, Array | None], dict[str, int]]:
    """0/1 correctness of each prediction on the evaluated records (None where a record lacks it),
    and the first line lacking it."""
    out: dict[str, Array | None] = {}
    first_missing: dict[str, int] = {}
    for name, tgt in TARGETS.items():
        if name == target:
            out[name] = correct
            continue
        values = [correctness(d, tgt, scored.path, ln) for ln, d in records]
        missing = [ln for (ln, _), ok in zip(records, values) if ok is None]
        if missing:
            out[name] = None
            first_missing[name] = missing[0]
        else:
            out[name] = np.asarray(values, dtype=np.float64)
    return out, first_missing


def _human(scored: ScoredFile, shown: dict[str, str]) -> dict[str, Any] | None:
    """Mean JS distance and KL(human || predicted) for base and fused predictions (keyed by their shown names)."""
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
            out[shown[target]] = {"n": len(pairs), "js_distance": float(np.mean(js)), "kl_human_to_pred": float(np.mean(kl))}
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
    prior: tuple[str, OptionPrior] | None = None,
    in_sample: bool = False,
) -> Evaluation:
    """Metrics of every score (and every calibrated score) on the labelled records of ``scored``, after
    the option ``prior`` (path, prior) corrects them, if given."""
    tgt = TARGETS[target]
    original = scored
    if prior is not None:
        scored = prior[1].correct_file(scored)
    shown = {name: prior[1].name if prior is not None and prior[1].target == name else name for name in TARGETS}
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
    fitted: list[tuple[str, str, Calibrator | OptionPrior]] = [("calibrator", p, c) for p, c in calibrators]
    for cal_path, cal in calibrators:
        mismatch = prior_mismatch(cal, None if prior is None else prior[1])
        if mismatch:
            raise InputError(mismatch, path=cal_path)
    if prior is not None:
        fitted.append(("option prior", prior[0], prior[1]))
    in_sample_info, notes = _fitted_checks(scored, records, fitted, in_sample)
    by_prediction, first_missing = _correct_by_prediction(scored, records, target, correct)
    rows = []
    left_out: dict[str, str] = {}
    for name in names:
        against = judged_against(name, target)
        row_correct = by_prediction[against]
        if row_correct is None:
            fields = f"'{TARGETS[against].correct}' or 'label' with '{TARGETS[against].prediction}'"
            left_out[name] = (
                f"judged against the {against} prediction, whose correctness ({fields}) line "
                f"{first_missing[against]} lacks"
            )
            continue
        values = np.array([score_of(d, name, scored.path, ln) for ln, d in records], dtype=np.float64)
        rows.append(_raw_row(name, values, shown[against], row_correct))
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
        rows.append(Row(cal.label, -conf, conf, f"{cal.label} calibrator", shown[cal.target], correct, cal_path))
    groups = record_groups(records)
    settings = {"n_bins": n_bins, "bootstrap": n_boot, "level": level, "seed": seed, "coverages": list(coverages),
                # records of one 'group' are resampled together: they are not independent
                "resampled": "records" if groups is None else "groups",
                "n_groups": None if groups is None else len(set(groups))}
    report: dict[str, Any] = {
        "file": scored.path,
        "target": shown[target],
        "in_sample": in_sample_info,
        "steerunc_version": __version__,
        "records": {
            "lines": len(scored.lines),
            "evaluated": len(records),
            "errors": scored.counts["error"] + scored.counts["malformed"],
            "continuation": scored.counts["continuation"],
            "unlabelled": unlabelled,
        },
        "accuracy": float(correct.mean()),
        "accuracy_by_prediction": {
            shown[name]: None if values is None else float(values.mean()) for name, values in by_prediction.items()
        },
        "prior": None if prior is None else _prior_summary(prior[1], prior[0], original, records),
        "notes": notes,
        "settings": {**settings, "bins": "ece/mce: equal-width; ece_equal_mass: equal-mass"},
        "scores": {},
        "left_out": left_out,
        "human": _human(scored, shown),
    }
    for row in rows:
        metrics = compute_metrics(
            row.uncertainty,
            row.correct,
            row.confidence,
            n_bins=n_bins,
            n_boot=n_boot,
            level=level,
            seed=seed,
            coverages=coverages,
            smooth=smooth,
            groups=groups,
        )
        report["scores"][row.name] = {
            "higher_means": "uncertain"
            if row.calibrator is None and orientation_of(row.name) == "uncertain"
            else "confident",
            "judged_against": row.judged_against,
            "confidence": row.confidence_source,
            "calibrator": row.calibrator,
            **metrics,
        }
    return Evaluation(report, rows, correct, settings, notes, groups)
