"""A calibrator's confidence on scored records: read its input from each record, map it, break ties.

The estimators in :mod:`steerunc.judging.calibration` take arrays; this module is the
one place that knows which record fields each kind of calibrator reads
(``input_kind``): one score (``"score"``), several (``"scores"``, an
(n, k) matrix) or the option logits (``"logits"``, temperature scaling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc.judging.calibration import Calibrator
from steerunc.scored import TARGETS, logits_matrix, score_matrix, score_names, score_of

__all__ = [
    "calibrated_confidence",
    "calibrator_input",
    "confidence_warning",
    "input_names",
    "offers_input",
    "raw_certainty",
    "raw_name",
]


def input_names(calibrator: Calibrator) -> list[str]:
    """The record fields or scores the calibrator reads: its score(s), or the target's logits field."""
    if calibrator.input_kind == "logits":
        return [TARGETS[calibrator.target].logits]
    if calibrator.input_kind == "scores":
        return list(getattr(calibrator, "scores"))
    return [calibrator.score]


def offers_input(calibrator: Calibrator, data: Mapping[str, Any]) -> bool:
    """Whether a record carries every input the calibrator reads (values not checked)."""
    if calibrator.input_kind == "logits":
        return isinstance(data.get(TARGETS[calibrator.target].logits), dict)
    names = score_names(data)
    return all(name in names for name in input_names(calibrator))


def calibrator_input(
    calibrator: Calibrator, records: Sequence[tuple[int, Mapping[str, Any]]], path: str | None = None
) -> NDArray[np.float64]:
    """What ``calibrator.predict`` takes for these records: scores (n,), a score matrix (n, k) or option
    logits (n, C); InputError naming file and line when a record lacks it."""
    where = path or "<records>"
    if calibrator.input_kind == "logits":
        matrix, _, _ = logits_matrix([(ln, dict(d)) for ln, d in records], TARGETS[calibrator.target], where,
                                     labels=False)
        return matrix
    if calibrator.input_kind == "scores":
        return score_matrix(records, input_names(calibrator), where)
    return np.asarray([score_of(d, calibrator.score, where, ln) for ln, d in records], dtype=np.float64)


def calibrated_confidence(
    calibrator: Calibrator, records: Sequence[tuple[int, Mapping[str, Any]]], path: str | None = None
) -> NDArray[np.float64]:
    """g(input) for usable records; InputError naming file and line when one lacks the calibrator's input."""
    if not records:
        return np.zeros(0)
    return calibrator.predict(calibrator_input(calibrator, records, path))


def raw_certainty(
    calibrator: Calibrator, records: Sequence[tuple[int, Mapping[str, Any]]], path: str | None = None
) -> NDArray[np.float64]:
    """The calibrator's input oriented so that higher = more sure: what breaks ties in g(input).

    The score itself, negated when the calibrator reads it as an uncertainty
    (orientation ``uncertain``); for temperature scaling, the max softmax of the
    option logits; for a combination of scores, its log-odds w . z + b.
    """
    if not records:
        return np.zeros(0)
    x = calibrator_input(calibrator, records, path)
    if calibrator.input_kind == "logits":
        return 1.0 / np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1)  # max of the softmax
    if calibrator.input_kind == "scores":
        return np.asarray(getattr(calibrator, "decision_function")(x), dtype=np.float64)
    return -x if calibrator.orientation_ == "uncertain" else x


def raw_name(calibrator: Calibrator) -> str:
    """What :func:`raw_certainty` is, in words: ``-mutual_info``, ``fused_confidence``, ..."""
    if calibrator.input_kind == "logits":
        return f"max softmax of {TARGETS[calibrator.target].logits}"
    if calibrator.input_kind == "scores":
        return f"log-odds of {calibrator.label}"
    return f"-{calibrator.score}" if calibrator.orientation_ == "uncertain" else calibrator.score


def confidence_warning(confidence: ArrayLike, calibrator: Calibrator) -> str | None:
    """A one-line warning when the calibrated confidence on a file is (nearly) constant or takes at
    most 3 distinct values (over more records than that); None otherwise."""
    c = np.asarray(confidence, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size < 2:
        return None
    tail = f"a --budget is then met by breaking ties on the raw score ({raw_name(calibrator)})"
    what = calibrator.label
    if float(c.max() - c.min()) < 1e-3:
        return (
            f"warning: the calibrated confidence of {what} is (nearly) constant on these {c.size} records "
            f"({c.min():.4f} to {c.max():.4f}): the calibrator hardly tells them apart; {tail}"
        )
    distinct = np.unique(c)
    if distinct.size <= 3 and c.size > distinct.size:
        values = ", ".join(f"{v:.4f}" for v in distinct)
        return (
            f"warning: the calibrated confidence of {what} takes only {distinct.size} distinct values on these "
            f"{c.size} records ({values}): a threshold on it cannot split records that share a value; {tail}"
        )
    return None


