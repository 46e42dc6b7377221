"""Calibration and selective-prediction metrics: pure NumPy functions.

Conventions (docs/calibration.md states them in full):

- ``confidence`` is a claimed P(correct) in [0, 1]; ``correct`` is 0/1.
- ``uncertainty`` is any real score where higher means *less* sure; as an
  error detector, errors are the positive class.
- Ties in a score are resolved by their expectation under a random order, so a
  constant score gets AUROC 0.5, AURC = error rate and PRR 0, and the result
  never depends on the order of the records.

>>> conf = np.array([0.9, 0.8, 0.6, 0.3]); ok = np.array([1, 1, 0, 0])
>>> round(brier(conf, ok), 4), error_auroc(-conf, ok)
(0.125, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ReliabilityBins",
    "aurc",
    "auroc_interval",
    "bootstrap_interval",
    "brier",
    "compute_metrics",
    "ece",
    "error_auprc",
    "error_auroc",
    "mce",
    "nll",
    "prr",
    "reliability_bins",
    "risk_coverage",
    "selective_accuracy",
    "smooth_ece",
]

Array = NDArray[np.float64]


def _pair(first: ArrayLike, correct: ArrayLike, name: str) -> tuple[Array, Array]:
    x = np.asarray(first, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{name} has {x.size} values but correct has {y.size}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: nothing to measure")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values (first at index {int(np.argmin(np.isfinite(x)))})")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("correct must hold only 0/1 (or False/True)")
    return x, y


def _confidence(confidence: ArrayLike, correct: ArrayLike) -> tuple[Array, Array]:
    p, y = _pair(confidence, correct, "confidence")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"confidence must lie in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]")
    return p, y


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin counts, mean confidence and accuracy (NaN in empty bins)."""

    edges: Array
    counts: NDArray[np.int64]
    confidence: Array
    accuracy: Array
    strategy: str

    @property
    def gaps(self) -> Array:
        """|accuracy - confidence| per bin (NaN in empty bins)."""
        return np.abs(self.accuracy - self.confidence)


def reliability_bins(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: str = "uniform"
) -> ReliabilityBins:
    """Bin confidences into ``n_bins`` equal-width (``uniform``) or equal-mass (``quantile``) bins.

    Bins are [a, b) with the last one closed, as in netcal and scipy's
    ``binned_statistic``; equal-mass edges are confidence quantiles with the
    outer edges at 0 and 1 (tied confidences can leave a bin empty).

    >>> b = reliability_bins([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1], n_bins=2)
    >>> b.counts.tolist(), b.accuracy.tolist()
    ([2, 2], [0.5, 1.0])
    """
    p, y = _confidence(confidence, correct)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=p, minlength=n_bins) / counts
        accuracy = np.bincount(index, weights=y, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, accuracy, strategy)


def ece(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error: sum_b (n_b / N) |acc_b - conf_b|.

    >>> round(ece([0.9, 0.9, 0.9, 0.9], [1, 1, 1, 0], n_bins=10), 6)
    0.15
    """
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    filled = bins.counts > 0
    return float(np.sum(bins.counts[filled] * bins.gaps[filled]) / bins.counts.sum())


def mce(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    return float(np.max(bins.gaps[bins.counts > 0]))


def brier(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Brier score of the confidence as a forecast of correctness: mean (p - y)^2."""
    p, y = _confidence(confidence, correct)
    return float(np.mean((p - y) ** 2))


def nll(confidence: ArrayLike, correct: ArrayLike, eps: float = 1e-12) -> float:
    """Binary negative log-likelihood (nats) of correctness; p is clipped to [eps, 1 - eps]."""
    p, y = _confidence(confidence, correct)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def smooth_ece(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Smooth ECE (Błasiok & Nakkiran 2023) with its automatic bandwidth, computed by ``relplot``.

    Imported lazily: relplot pulls in matplotlib.
    """
    p, y = _confidence(confidence, correct)
    import relplot

    return float(relplot.smECE(p, y))


def _average_ranks(x: Array) -> Array:
    """1-based ranks, ties given their mean rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def error_auroc(uncertainty: ArrayLike, correct: ArrayLike) -> float | None:
    """AUROC of the uncertainty as a detector of errors; None when only one class occurs.

    >>> error_auroc([0.1, 0.2, 0.8, 0.5], [1, 1, 0, 1])
    1.0
    """
    u, y = _pair(uncertainty, correct, "uncertainty")
    errors = y == 0
    n_err, n_ok = int(errors.sum()), int((~errors).sum())
    if n_err == 0 or n_ok == 0:
        return None
    ranks = _average_ranks(u)
    return float((ranks[errors].sum() - n_err * (n_err + 1) / 2.0) / (n_err * n_ok))


def error_auprc(uncertainty: ArrayLike, correct: ArrayLike) -> float | None:
    """Average precision of the uncertainty as a detector of errors (scikit-learn's definition)."""
    u, y = _pair(uncertainty, correct, "uncertainty")
    errors = 1.0 - y
    if errors.sum() == 0:
        return None
    order = np.argsort(-u, kind="mergesort")
    us, es = u[order], errors[order]
    last = np.r_[us[1:] != us[:-1], True]  # last position of each distinct threshold
    tp = np.cumsum(es)[last]
    seen = (np.flatnonzero(last) + 1).astype(np.float64)
    precision = tp / seen
    recall = tp / errors.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def risk_coverage(uncertainty: ArrayLike, correct: ArrayLike) -> tuple[Array, Array]:
    """Coverage k/N and selective risk (error rate of the k most confident), k = 1..N.

    Within a group of tied scores the expected number of errors grows linearly,
    which is the mean over all orders of the tied records.
    """
    u, y = _pair(uncertainty, correct, "uncertainty")
    order = np.argsort(u, kind="mergesort")
    us, es = u[order], 1.0 - y[order]
    starts = np.flatnonzero(np.r_[True, us[1:] != us[:-1]])
    ends = np.r_[starts[1:], us.size]
    group_errors = np.add.reduceat(es, starts)
    before = np.r_[0.0, np.cumsum(group_errors)[:-1]]
    group = np.repeat(np.arange(starts.size), ends - starts)
    k = np.arange(1, us.size + 1, dtype=np.float64)
    expected = before[group] + (k - starts[group]) / (ends - starts)[group] * group_errors[group]
    return k / us.size, expected / k


def aurc(uncertainty: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: the mean selective risk over k = 1..N (lower is better)."""
    return float(np.mean(risk_coverage(uncertainty, correct)[1]))


def prr(uncertainty: ArrayLike, correct: ArrayLike) -> float | None:
    """Prediction rejection ratio (AURC_random - AURC) / (AURC_random - AURC_oracle).

    Random ranking gives 0, the oracle (all errors last) gives 1; None when
    there are no errors or only errors.

    >>> prr([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])
    1.0
    """
    u, y = _pair(uncertainty, correct, "uncertainty")
    n, n_err = y.size, float(np.sum(1.0 - y))
    if n_err in (0.0, float(n)):
        return None
    k = np.arange(1, n + 1, dtype=np.float64)
    oracle = float(np.mean(np.maximum(0.0, k - (n - n_err)) / k))
    random = n_err / n
    value = (random - aurc(u, y)) / (random - oracle)
    return 0.0 if abs(value) < 1e-12 else float(value)  # no "-0.000" for a constant score


def selective_accuracy(uncertainty: ArrayLike, correct: ArrayLike, coverage: float) -> float:
    """Accuracy of the ceil(coverage * N) most confident records (ties by expectation)."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    cov, risk = risk_coverage(uncertainty, correct)
    k = max(1, int(np.ceil(coverage * cov.size - 1e-9)))
    return float(1.0 - risk[k - 1])


def _resamples(n: int, n_boot: int, seed: int, groups: Sequence[Any] | None) -> Iterator[NDArray[np.int64]]:
    """Index arrays of ``n_boot`` bootstrap resamples of ``n`` records; with ``groups`` (one label
    per record, e.g. the question a record asks), whole groups are resampled: records of one group
    are not independent, and resampling them one by one gives intervals that are too narrow."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} records")
    labels, code = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    members = [np.flatnonzero(code == g) for g in range(len(labels))]
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))] or [np.zeros(0, int)])


def _percentiles(values: list[float], n_boot: int, level: float) -> tuple[float, float] | None:
    if len(values) < n_boot / 2:
        return None
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_interval(
    statistic: Callable[..., float | None],
    arrays: Sequence[ArrayLike],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(*arrays)`` over resampled records (or, with
    ``groups``, resampled groups of records).

    Resamples where the statistic is undefined (None) are dropped; None when
    fewer than half remain or ``n_boot`` is 0.
    """
    if n_boot <= 0:
        return None
    data = [np.asarray(a) for a in arrays]
    values = []
    for idx in _resamples(data[0].shape[0], n_boot, seed, groups):
        value = statistic(*(a[idx] for a in data))
        if value is not None:
            values.append(value)
    return _percentiles(values, n_boot, level)


def auroc_interval(
    uncertainty: ArrayLike, correct: ArrayLike, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> tuple[float, float] | None:
    """``bootstrap_interval(error_auroc, ...)`` with the same resamples, in O(N) per resample.

    The records are sorted once; a resample is a vector of counts per record,
    and its AUROC a weighted Mann-Whitney sum over groups of tied scores.
    """
    if n_boot <= 0:
        return None
    u, y = _pair(uncertainty, correct, "uncertainty")
    n = u.size
    order = np.argsort(u, kind="mergesort")
    us, err = u[order], 1.0 - y[order]
    starts = np.flatnonzero(np.r_[True, us[1:] != us[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    values = []
    for idx in _resamples(n, n_boot, seed, groups):
        w = np.bincount(rank[idx], minlength=n).astype(np.float64)
        e_g = np.add.reduceat(w * err, starts)
        c_g = np.add.reduceat(w * (1.0 - err), starts)
        total_e, total_c = e_g.sum(), c_g.sum()
        if total_e == 0 or total_c == 0:
            continue
        below = np.cumsum(c_g) - c_g
        values.append(float(np.sum(e_g * (below + 0.5 * c_g)) / (total_e * total_c)))
    return _percentiles(values, n_boot, level)


def compute_metrics(
    uncertainty: ArrayLike,
    correct: ArrayLike,
    confidence: ArrayLike | None = None,
    *,
    n_bins: int = 15,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    coverages: Sequence[float] = (0.5, 0.8, 0.9),
    smooth: bool = True,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Every metric of one score, as a flat JSON-ready dict (intervals resample ``groups`` if given).

    Ranking metrics (AUROC, AUPRC, AURC, PRR, selective accuracy) use
    ``uncertainty``; calibration metrics (ECE, MCE, Brier, NLL, smooth ECE)
    need ``confidence`` and are None without it. Undefined values are None.
    """
    u, y = _pair(uncertainty, correct, "uncertainty")
    out: dict[str, Any] = {
        "n": int(y.size),
        "accuracy": float(y.mean()),
        "auroc": error_auroc(u, y),
        "auroc_ci": auroc_interval(u, y, n_boot, level, seed, groups),
        "auprc": error_auprc(u, y),
        "aurc": aurc(u, y),
        "prr": prr(u, y),
        "selective_accuracy": {f"{c:g}": selective_accuracy(u, y, c) for c in coverages},
    }
    keys = ("ece", "ece_equal_mass", "ece_ci", "mce", "brier", "nll", "smooth_ece")
    out.update(dict.fromkeys(keys))
    out["n_bins"] = n_bins
    if confidence is not None:
        p, _ = _confidence(confidence, y)
        out.update(
            ece=ece(p, y, n_bins, "uniform"),
            ece_equal_mass=ece(p, y, n_bins, "quantile"),
            ece_ci=bootstrap_interval(lambda a, b: ece(a, b, n_bins), [p, y], n_boot, level, seed, groups),
            mce=mce(p, y, n_bins, "uniform"),
            brier=brier(p, y),
            nll=nll(p, y),
            smooth_ece=smooth_ece(p, y) if smooth else None,
        )
    return out
