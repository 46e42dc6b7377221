"""Choosing the triage threshold: a review budget, or a risk target with a finite-sample guarantee.

A record is accepted automatically when its calibrated confidence is at least
the threshold theta, and sent to review otherwise. A review budget
(:func:`budget_cut`) also breaks ties at theta by the calibrator's raw input
(higher = more sure, at least ``tie_threshold``), so that exactly the budget
goes to review even when the calibrated confidence takes few values.

Risk control (``max_risk`` = epsilon, ``delta``) follows learn-then-test
(Angelopoulos et al. 2021) with fixed-sequence testing. Candidate thresholds
are the distinct calibration confidences, from the highest down. For each,
the null hypothesis "the error rate among accepted records exceeds epsilon" is
rejected when the one-sided Clopper-Pearson upper bound on that rate, at
level 1 - delta, is at most epsilon (equivalently, the binomial p-value
P(Bin(n, epsilon) <= errors) is at most delta). Testing stops at the first
threshold that fails and the last one rejected is chosen, so that with
probability at least 1 - delta (over the draw of the calibration data) the
error rate among automatically accepted records is at most epsilon.

Fixed-sequence testing stops at the first failure, so where it starts
matters: at the smallest set that could be certified at all (zero errors among
ln delta / ln(1 - epsilon) records) a single early error ends it. It starts
instead at the first threshold accepting :func:`start_size` records, the
fewest for which an observed error rate of epsilon / 2 would be certified,
and then steps by ``step`` (2 %) of the records (fewer, larger steps give
random dips fewer chances to stop it, and lose at most ``step`` of coverage).
Where the candidates lie depends only on epsilon, delta and the unlabelled
confidences, never on the labels, so the guarantee holds.

With few calibration records or a strict target nothing may be certified;
then the threshold is None and every record goes to review.

Records that share a group (one question asked of several countries) are not
independent: they err together, the binomial bound counts them as separate
draws, and the guarantee is then optimistic. :func:`one_per_group` keeps one
record per group, drawn at random within it; where the groups are independent
draws, the kept records are independent draws of "a group, then one of its
records", and the guarantee holds for that draw: each group weighs the same,
whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BudgetCut",
    "RiskSelection",
    "budget_cut",
    "budget_threshold",
    "clopper_pearson_upper",
    "min_accepted",
    "one_per_group",
    "risk_threshold",
    "start_size",
]


def clopper_pearson_upper(errors: ArrayLike, n: ArrayLike, delta: float) -> NDArray[np.float64]:
    """One-sided (1 - delta) Clopper-Pearson upper bound on a binomial rate; 1 where errors == n.

    >>> round(float(clopper_pearson_upper(0, 45, 0.1)), 4)
    0.0499
    """
    from scipy.stats import beta

    e = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1.0 - delta, e + 1.0, np.maximum(m - e, 1e-300))
    return np.where(e >= m, 1.0, bound)


def min_accepted(max_risk: float, delta: float) -> int:
    """The fewest accepted records that can certify ``max_risk`` at all (with zero errors).

    >>> min_accepted(0.05, 0.1)
    45
    """
    return math.ceil(math.log(delta) / math.log1p(-max_risk))


def start_size(max_risk: float, delta: float, limit: int) -> int:
    """The fewest accepted records (<= limit) for which an error rate of max_risk / 2 is certified.

    >>> start_size(0.05, 0.1, 10_000), start_size(0.2, 0.1, 10_000)
    (77, 18)
    """
    n = np.arange(1, limit + 1)
    certified = np.flatnonzero(clopper_pearson_upper(np.floor(n * max_risk / 2), n, delta) <= max_risk)
    return int(n[certified[0]]) if certified.size else limit


def one_per_group(groups: Sequence[Hashable], seed: int = 0) -> NDArray[np.int64]:
    """Positions of one record per group, drawn uniformly at random within each group (seeded), in
    increasing order; a group of one keeps its record.

    >>> one_per_group(["a", "b", "a", "c", "a"], seed=0).tolist()
    [1, 3, 4]
    """
    members: dict[Hashable, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    rng = np.random.default_rng(seed)
    picked = [ids[int(rng.integers(len(ids)))] if len(ids) > 1 else ids[0] for ids in members.values()]
    return np.sort(np.asarray(picked, dtype=np.int64))


def _check_unit(name: str, value: float, low_open: bool = True) -> None:
    if not (0.0 < value < 1.0 if low_open else 0.0 <= value <= 1.0):
        interval = "(0, 1)" if low_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")


def budget_threshold(confidence: ArrayLike, budget: float) -> float | None:
    """The threshold that sends at most ``floor(budget * N)`` records to review (confidence < theta).

    Ties at the threshold are accepted, so fewer may go to review; None means
    "review everything" (budget 1).

    >>> budget_threshold([0.9, 0.2, 0.5, 0.7], 0.5)
    0.7
    """
    _check_unit("budget", budget, low_open=False)
    c = np.sort(np.asarray(confidence, dtype=np.float64))
    if c.size == 0:
        raise ValueError("no confidences to choose a budget threshold from")
    k = math.floor(budget * c.size + 1e-9)
    if k >= c.size:
        return None
    return float(c[k])


@dataclass(frozen=True)
class BudgetCut:
    """Exactly ``n_review`` records to review, and the rule that reproduces the cut on other records.

    A record is accepted when (confidence, raw) >= (threshold, tie_threshold)
    lexicographically: confidence > threshold, or confidence == threshold and
    raw >= tie_threshold. Both are None when every record goes to review.
    ``review`` marks the records sent to review here; it differs from the rule
    only for records tied with the first accepted one on both keys, of which
    the earliest go to review so that the count is exact.
    """

    threshold: float | None
    tie_threshold: float | None
    review: NDArray[np.bool_]

    @property
    def n_review(self) -> int:
        return int(self.review.sum())


def budget_cut(confidence: ArrayLike, raw: ArrayLike, n_review: int) -> BudgetCut:
    """Send the ``n_review`` lowest records by (confidence, raw, position) to review.

    ``raw`` is the calibrator's input oriented so that higher = more sure; it
    breaks ties in the calibrated confidence (a step function has many), and
    among records tied on both the earlier position goes to review first.

    >>> cut = budget_cut([0.5, 0.5, 0.5, 0.9], [0.3, 0.1, 0.2, 0.0], 2)
    >>> cut.threshold, cut.tie_threshold, cut.review.tolist()
    (0.5, 0.3, [False, True, True, False])
    """
    c = np.asarray(confidence, dtype=np.float64).ravel()
    r = np.asarray(raw, dtype=np.float64).ravel()
    if c.size != r.size:
        raise ValueError(f"need one raw score per confidence (got {r.size} and {c.size})")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise ValueError("confidence or raw score holds NaN or infinite values")
    if n_review < 0:
        raise ValueError(f"n_review must be >= 0, got {n_review}")
    review = np.zeros(c.size, dtype=bool)
    if n_review >= c.size:
        review[:] = True
        return BudgetCut(None, None, review)
    order = np.lexsort((np.arange(c.size), r, c))  # by confidence, then raw, then position
    review[order[:n_review]] = True
    first = order[n_review]
    return BudgetCut(float(c[first]), float(r[first]), review)


@dataclass(frozen=True)
class RiskSelection:
    """The chosen threshold and what was certified on the calibration data."""

    threshold: float | None  # None: no threshold could be certified, review everything
    max_risk: float
    delta: float
    n_calibration: int
    n_accepted: int
    errors_accepted: int
    risk_upper_bound: float | None  # Clopper-Pearson (1 - delta) bound at the chosen threshold
    procedure: str = "learn-then-test, fixed-sequence, Clopper-Pearson"
    sample: str | None = None  # how the calibration records were chosen, where not all of them were used

    @property
    def coverage(self) -> float:
        """Share of the calibration records accepted automatically."""
        return self.n_accepted / self.n_calibration

    @property
    def empirical_risk(self) -> float | None:
        """Error rate among the accepted calibration records."""
        return self.errors_accepted / self.n_accepted if self.n_accepted else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with coverage and empirical risk spelled out."""
        return {**asdict(self), "coverage": self.coverage, "empirical_risk": self.empirical_risk}


def risk_threshold(
    confidence: ArrayLike, correct: ArrayLike, max_risk: float, delta: float = 0.1, step: float = 0.02
) -> RiskSelection:
    """Choose theta so that P(error rate of accepted records > max_risk) <= delta (see module docs).

    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 2000); ok = rng.uniform(size=2000) < conf
    >>> sel = risk_threshold(conf, ok, max_risk=0.1, delta=0.1)
    >>> sel.risk_upper_bound <= 0.1 and 0.2 < sel.coverage < 0.9
    True
    """
    _check_unit("max_risk", max_risk)
    _check_unit("delta", delta)
    c = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if c.size == 0 or c.size != y.size:
        raise ValueError(f"need as many correctness values as confidences (got {c.size} and {y.size}), at least one")
    if not np.all(np.isfinite(c)):
        raise ValueError("confidence holds NaN or infinite values")
    order = np.argsort(-c, kind="mergesort")
    cs, errs = c[order], 1.0 - y[order]
    last = np.flatnonzero(np.r_[cs[1:] != cs[:-1], True])  # last index of each distinct confidence
    n_acc = last + 1
    e_acc = np.cumsum(errs)[last]
    upper = clopper_pearson_upper(e_acc, n_acc, delta)
    start = start_size(max_risk, delta, c.size)
    wanted = np.r_[np.arange(start, c.size, max(1, round(step * c.size))), c.size]
    candidates = np.unique(np.searchsorted(n_acc, wanted[wanted >= start]))
    chosen = None
    for j in candidates[candidates < n_acc.size]:
        if upper[j] > max_risk:
            break
        chosen = j
    if chosen is None:
        return RiskSelection(None, max_risk, delta, int(c.size), 0, 0, None)
    return RiskSelection(
        float(cs[last[chosen]]),
        max_risk,
        delta,
        int(c.size),
        int(n_acc[chosen]),
        int(e_acc[chosen]),
        float(upper[chosen]),
    )
