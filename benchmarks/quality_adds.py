"""What steering adds, measured with the judging wing's own estimators (issue #11, items 1 and 2).

For one data set's scored files (calibration split, evaluated split; one pair per method):

* ``steering_adds``: the combined calibrator ``msp+mutual_info+mean_kl+flip_rate@logistic``
  (:class:`~steerunc.judging.calibration_combined.CombinedCalibrator`, what
  ``steerunc calibrate --scores msp,mutual_info,mean_kl,flip_rate --method logistic`` fits, with
  its guard; where the guard keeps msp alone, the unguarded combination's figures are kept beside)
  against calibrated ``msp`` alone (``--scores msp --method logistic``: Platt scaling), both
  fitted on the calibration split only and judged on the evaluated split against the same
  errors: AUROC and PRR of each, and the paired difference with a 95 % percentile bootstrap
  interval (the evaluated records resampled, the same resample for both scores). Built from
  each method's scores, so the random-vector and prompt-ensemble runs are the controls; each
  control's combination is also compared with the steering one, paired.
* ``prior_effect``: the option prior (:class:`~steerunc.judging.option_prior.OptionPrior`, what
  ``steerunc calibrate-prior`` fits) fitted on the calibration split and applied to the
  evaluated split: accuracy before and after, paired, with the accuracy of always answering the
  calibration split's most frequent label beside it.

Calibrated confidences are read from the records with :mod:`steerunc.judging.confidence`, as
``steerunc evaluate --calibrator`` reads them; a ranking metric of a calibrated score uses
-g(scores), as ``evaluate`` does, so a score whose fitted weight is negative ranks the other way.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from steerunc.judging.calibration import CalibrationError, make_calibrator, save_calibrator
from steerunc.judging.confidence import calibrated_confidence
from steerunc.errors import InputError
from steerunc.judging.metrics import bootstrap_interval, error_auroc, prr
from steerunc.judging.option_prior import OptionPrior, option_logits, save_prior
from steerunc.scored import TARGETS, read_scored, record_keys, score_matrix

__all__ = ["COMBINED", "steering_adds", "prior_effect", "paired", "record_groups_by_id"]

#: the scores the combined calibrator reads (the combination docs/calibration.md leads with)
COMBINED = ("msp", "mutual_info", "mean_kl", "flip_rate")
Metric = Callable[[np.ndarray, np.ndarray], float | None]
METRICS: dict[str, Metric] = {"auroc": error_auroc, "prr": prr}


def paired(metric: Metric, first: np.ndarray, second: np.ndarray, correct_first: np.ndarray,
           correct_second: np.ndarray, n_boot: int, seed: int, groups: list[str] | None = None) -> dict[str, Any]:
    """metric(first) - metric(second), each against its own correctness, on the same records, with
    a percentile bootstrap interval (one resample of the records, or of their groups, for both)."""
    def diff(u1: np.ndarray, u2: np.ndarray, y1: np.ndarray, y2: np.ndarray) -> float | None:
        a, b = metric(u1, y1), metric(u2, y2)
        return None if a is None or b is None else a - b

    value = diff(first, second, correct_first, correct_second)
    ci = bootstrap_interval(diff, [first, second, correct_first, correct_second], n_boot, seed=seed, groups=groups)
    return {"difference": value, "ci": None if ci is None else list(ci)}


def _fit_and_apply(cal_path: str, eval_path: str, scores: list[str], target: str, out: str, guard: bool = True,
                   groups: dict[Any, str] | None = None) -> tuple[Any, np.ndarray, np.ndarray, list[Any]]:
    """A logistic calibrator of ``scores`` fitted on the calibration file and saved to ``out``; its
    uncertainty -g(scores) on the evaluated file's labelled records, their correctness and ids.
    CalibrationError when the calibration split cannot be calibrated (no errors, or no correct)."""
    cal = read_scored(cal_path)
    records, correct, _ = cal.labelled(TARGETS[target])
    params: dict[str, Any] = {"guard": guard} if len(scores) > 1 else {}
    calibrator: Any = make_calibrator("logistic", scores[0], target=target, scores=scores, **params)
    values = score_matrix(records, scores, cal_path)
    if calibrator.input_kind == "scores" and groups:  # as `steerunc calibrate` reads a record's 'group'
        calibrator.fit(values, correct, groups=[groups.get(d.get("id"), f"id {d.get('id')}") for _, d in records])
    else:
        calibrator.fit(values if calibrator.input_kind == "scores" else values[:, 0], correct)
    calibrator.fitted_on_ = frozenset(record_keys(d for _, d in records))
    save_calibrator(calibrator, out, source=os.path.basename(cal_path))
    evaluated, ok, _ = read_scored(eval_path).labelled(TARGETS[target])
    confidence = calibrated_confidence(calibrator, evaluated, eval_path)
    return calibrator, -confidence, ok, [d.get("id") for _, d in evaluated]


def record_groups_by_id(records_path: str | None) -> dict[Any, str] | None:
    """id -> 'group' of the calibration records (GlobalOpinionQA: the question), or None when none has one."""
    if not records_path or not os.path.exists(records_path):
        return None
    with open(records_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    found = {row.get("id"): str(row["group"]) for row in rows if "group" in row}
    return found or None


def _metrics(u: np.ndarray, y: np.ndarray, n_boot: int, seed: int, groups: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, metric in METRICS.items():
        ci = bootstrap_interval(metric, [u, y], n_boot, seed=seed, groups=groups)
        out[name], out[f"{name}_ci"] = metric(u, y), None if ci is None else list(ci)
    return out


def _aligned(ids: list[Any], groups: dict[Any, str] | None) -> list[str] | None:
    """The groups of the records with these ids, in order (an id without one: its own group)."""
    return None if not groups else [groups.get(i, f"id {i}") for i in ids]


def _raw_msp(eval_path: str, target: str) -> np.ndarray:
    """The msp score itself (1 - max of the base probabilities) on the evaluated file's labelled records."""
    records, _, _ = read_scored(eval_path).labelled(TARGETS[target])
    return score_matrix(records, ["msp"], eval_path)[:, 0]


def _one(cal_path: str, eval_path: str, target: str, out_dir: str, n_boot: int, seed: int,
         groups: dict[Any, str] | None = None, eval_groups: dict[Any, str] | None = None
         ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, list[Any]] | None]:
    """Combined vs calibrated msp for one method's files and one target; ``groups`` / ``eval_groups``:
    id -> group of the calibration / evaluated records (the guard's folds; whole groups resampled)."""
    try:
        combined, u_c, y, ids = _fit_and_apply(cal_path, eval_path, list(COMBINED), target,
                                               os.path.join(out_dir, f"cal-{target}-combined.json"), groups=groups)
        single, u_m, y_m, ids_m = _fit_and_apply(cal_path, eval_path, ["msp"], target,
                                                 os.path.join(out_dir, f"cal-{target}-msp-logistic.json"))
    except CalibrationError as exc:
        return {"skipped": str(exc)}, None
    if ids != ids_m or not np.array_equal(y, y_m):  # pragma: no cover  (the same records, read twice)
        raise RuntimeError(f"{eval_path}: the records read for the two calibrators differ")
    g = _aligned(ids, eval_groups)
    result: dict[str, Any] = {
        "n": int(y.size), "errors": int(np.sum(y == 0)),
        "combined": {"label": combined.label, "weights": dict(zip(COMBINED, map(float, combined.coef_))),
                     "guard": getattr(combined, "guard_", None), **_metrics(u_c, y, n_boot, seed, g)},
        "msp": {"label": single.label, "slope": float(single.coef_), **_metrics(u_m, y, n_boot, seed, g),
                "raw_auroc": error_auroc(_raw_msp(eval_path, target), y)},
    }
    for name, metric in METRICS.items():
        result[f"{name}_combined_minus_msp"] = paired(metric, u_c, u_m, y, y, n_boot, seed, g)
    if getattr(combined, "kept", None) == "first score":  # what the combination would have done unguarded
        free, u_f, _, _ = _fit_and_apply(cal_path, eval_path, list(COMBINED), target,
                                         os.path.join(out_dir, f"cal-{target}-combined-unguarded.json"), guard=False)
        result["unguarded"] = {"weights": dict(zip(COMBINED, map(float, free.coef_))), **_metrics(u_f, y, n_boot, seed, g),
                               **{f"{name}_minus_msp": paired(metric, u_f, u_m, y, y, n_boot, seed, g)
                                  for name, metric in METRICS.items()}}
    return result, (u_c, y, ids)


def steering_adds(files: dict[str, str], methods: list[str], work: str, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """For each method and target (base, fused): combined vs calibrated msp; for each control method,
    its combination vs the steering one (paired over the evaluated records)."""
    out: dict[str, Any] = {"scores": list(COMBINED),
                           "method": "logistic (L2, C=1, standardised scores), guarded (the combination is kept only "
                                     "where cross-validation on the calibration split shows it clearly better than "
                                     "msp alone; else msp alone)",
                           "baseline": "msp@platt (steerunc calibrate --scores msp --method logistic)"}
    groups = record_groups_by_id(files.get("records_cal"))  # the same calibration records for every method and target
    eval_groups = record_groups_by_id(files.get("records_eval"))
    for target in ("base", "fused"):
        per: dict[str, Any] = {}
        kept: dict[str, tuple[np.ndarray, np.ndarray, list[Any]]] = {}
        for method in methods:
            folder = os.path.join(work, method)
            os.makedirs(folder, exist_ok=True)
            per[method], arrays = _one(files[f"{method}_cal"], files[f"{method}_eval"], target, folder, n_boot, seed,
                                       groups=groups, eval_groups=eval_groups)
            if arrays is not None:
                kept[method] = arrays
        for method in methods:
            if method == "steer" or method not in kept or "steer" not in kept or kept[method][2] != kept["steer"][2]:
                continue
            (u_x, y_x, _), (u_s, y_s, _) = kept[method], kept["steer"]
            per[method]["combined_minus_steer"] = {
                name: paired(metric, u_x, u_s, y_x, y_s, n_boot, seed, _aligned(kept["steer"][2], eval_groups))
                for name, metric in METRICS.items()}
        out[target] = per
    return out


def _labelled_logits(path: str, target: str) -> tuple[list[str], np.ndarray, np.ndarray, list[tuple[int, dict]]]:
    """Option logits (records x options, in the first record's order), label indices and the records;
    InputError when the records do not all offer the same options."""
    scored = read_scored(path)
    records = [(ln, d) for ln, d in scored.records if d.get("label") is not None]
    if not records:
        raise InputError("no labelled records", path=path)
    rows = [option_logits(d, target, path, ln) for ln, d in records]
    options = list(rows[0])
    for (line, _), row in zip(records, rows):
        if sorted(row) != sorted(options):
            raise InputError(f"records offer different option lists ({options} on line {records[0][0]}, "
                             f"{list(row)} on line {line}): one prior per option list", path=path)
    z = np.array([[row[o] for o in options] for row in rows])
    labels = np.array([options.index(str(d["label"])) for _, d in records])
    return options, z, labels, records


def prior_effect(cal_path: str, eval_path: str, out_dir: str, n_boot: int = 1000, seed: int = 0,
                 targets: tuple[str, ...] = ("base", "fused"), groups: dict[Any, str] | None = None) -> dict[str, Any]:
    """Accuracy of each target's prediction before and after the option prior fitted on the
    calibration split, on the evaluated split, paired; or ``{"skipped": why}``. ``groups``: id ->
    group of the evaluated records, resampled whole."""
    out: dict[str, Any] = {}
    os.makedirs(out_dir, exist_ok=True)
    for target in targets:
        try:
            options, z, labels, records = _labelled_logits(cal_path, target)
            evaluated = _labelled_logits(eval_path, target)[3]
            prior = OptionPrior(target).fit(z, labels, options)
            prior.fitted_on_ = frozenset(record_keys(d for _, d in records))
            corrected = [prior.correct(d, eval_path, ln) for ln, d in evaluated]
        except InputError as exc:
            out[target] = {"skipped": "records offer different option lists" if "option lists" in str(exc)
                           else "cannot be fitted", "detail": f"{os.path.basename(exc.path or '')}: {exc.message}"}
            continue
        save_prior(prior, os.path.join(out_dir, f"prior-{target}.json"), source=os.path.basename(cal_path))
        tgt = TARGETS[target]
        before = np.array([float(d[tgt.prediction] == d["label"]) for _, d in evaluated])
        after = np.array([float(d[tgt.correct]) for d in corrected])
        majority = Counter(options[i] for i in labels).most_common(1)[0][0]
        diff = after - before
        ci = bootstrap_interval(lambda v: float(v.mean()), [diff], n_boot, seed=seed,
                                groups=_aligned([d.get("id") for _, d in evaluated], groups))
        out[target] = {
            "n": int(diff.size), "options": options, "temperature": prior.temperature_,
            "bias": dict(zip(options, map(float, prior.bias_))), "n_cal": int(labels.size),
            "accuracy": float(before.mean()), "accuracy_prior": float(after.mean()),
            "difference": float(diff.mean()), "ci": None if ci is None else list(ci),
            "changed": int(sum(d[tgt.prediction] != e[tgt.prediction] for d, (_, e) in zip(corrected, evaluated))),
            "majority_label": majority,
            "majority_accuracy": float(np.mean([d["label"] == majority for _, d in evaluated])),
        }
    return out
