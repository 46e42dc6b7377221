"""Metrics against reference implementations (netcal, scikit-learn, scipy, relplot) and identities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from steerunc.judging import distances as D
from steerunc.judging import metrics as M


@pytest.fixture(scope="module")
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs (over-confident) and labels, as a classifier would give."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 4)) * 2.5
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    truth = np.exp(z / 3) / np.exp(z / 3).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in truth])
    return probs, labels


@pytest.mark.parametrize("n_bins", [10, 15])
@pytest.mark.parametrize("equal_width", [True, False])
def test_ece_matches_netcal(multiclass: tuple[np.ndarray, np.ndarray], n_bins: int, equal_width: bool) -> None:
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, labels = multiclass
    conf, ok = probs.max(axis=1), probs.argmax(axis=1) == labels
    strategy = "uniform" if equal_width else "quantile"
    ref = netcal_metrics.ECE(bins=n_bins, equal_intervals=equal_width).measure(probs, labels)
    assert M.ece(conf, ok, n_bins, strategy) == pytest.approx(ref, abs=1e-10)
    assert M.ece(conf, ok, n_bins, strategy) > 0.1  # the data is miscalibrated: a zero ECE would be a bug


def test_mce_matches_netcal(multiclass: tuple[np.ndarray, np.ndarray]) -> None:
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, labels = multiclass
    ref = netcal_metrics.MCE(bins=10).measure(probs, labels)
    assert M.mce(probs.max(axis=1), probs.argmax(axis=1) == labels, 10) == pytest.approx(ref, abs=1e-10)


def test_brier_and_nll_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, 500)
    y = (rng.uniform(size=500) < p**2).astype(int)
    assert M.brier(p, y) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert M.nll(p, y) == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_auprc_match_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(2)
    u = rng.integers(0, 6, 700).astype(float) if ties else rng.normal(size=700)
    y = (rng.uniform(size=700) < 0.8 - 0.08 * u).astype(float) if ties else (rng.normal(size=700) > u * 0.5)
    assert M.error_auroc(u, y) == pytest.approx(roc_auc_score(1 - np.asarray(y, float), u), abs=1e-12)
    assert M.error_auprc(u, y) == pytest.approx(average_precision_score(1 - np.asarray(y, float), u), abs=1e-12)


def test_ranking_metrics_undefined_with_one_class() -> None:
    u, y = np.array([0.1, 0.5, 0.9]), np.ones(3)
    assert M.error_auroc(u, y) is None and M.error_auprc(u, y) is None and M.prr(u, y) is None
    assert M.aurc(u, y) == 0.0


def _aurc_all_orders(u: np.ndarray, y: np.ndarray) -> float:
    """Mean AURC over every order that breaks ties in u (brute force, small n)."""
    values = []
    for perm in itertools.permutations(range(u.size)):
        order = sorted(perm, key=lambda i: u[i])  # stable: ties keep the permutation's order
        err = 1 - y[order]
        values.append(np.mean(np.cumsum(err) / np.arange(1, u.size + 1)))
    return float(np.mean(values))


def test_aurc_resolves_ties_by_expectation() -> None:
    u = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0])
    y = np.array([1, 0, 1, 1, 0, 0], dtype=float)
    assert M.aurc(u, y) == pytest.approx(_aurc_all_orders(u, y), abs=1e-12)
    assert M.aurc(u[::-1], y[::-1]) == pytest.approx(M.aurc(u, y))  # order of records does not matter


def test_prr_identities() -> None:
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=300) < 0.7).astype(float)
    assert M.prr(1 - y, y) == pytest.approx(1.0)  # oracle
    assert M.prr(np.zeros(300), y) == pytest.approx(0.0, abs=1e-12)  # constant = random
    anti = M.prr(y, y)
    assert anti is not None and anti < -0.9  # anti-oracle
    assert M.aurc(np.zeros(300), y) == pytest.approx(1 - y.mean())


def test_selective_accuracy() -> None:
    u = np.arange(10, dtype=float)
    y = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=float)
    assert M.selective_accuracy(u, y, 0.5) == 1.0
    assert M.selective_accuracy(u, y, 0.8) == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="coverage"):
        M.selective_accuracy(u, y, 0.0)


def test_risk_coverage_is_monotone_for_the_oracle() -> None:
    y = np.array([1, 1, 0, 1, 0], dtype=float)
    coverage, risk = M.risk_coverage(1 - y, y)
    assert coverage[-1] == 1.0 and np.all(np.diff(risk) >= 0)
    assert risk[-1] == pytest.approx(0.4)


def test_js_and_kl_match_scipy() -> None:
    rng = np.random.default_rng(4)
    p, q = rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(5), 20)
    ref_js = [jensenshannon(a, b, base=2) for a, b in zip(p, q)]
    ref_kl = [entropy(a, b) for a, b in zip(p, q)]
    np.testing.assert_allclose(D.js_distance(p, q), ref_js, atol=1e-12)
    np.testing.assert_allclose(D.kl_divergence(p, q), ref_kl, atol=1e-12)
    np.testing.assert_allclose(D.kl_divergence(p, p), 0.0, atol=1e-12)
    assert np.isfinite(D.kl_divergence([[0.5, 0.5]], [[1.0, 0.0]])).all()  # floored, not infinite


def test_smooth_ece_is_relplot_and_separates_calibrated_from_not() -> None:
    relplot = pytest.importorskip("relplot")
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 2000)
    calibrated = (rng.uniform(size=2000) < p).astype(float)
    off = (rng.uniform(size=2000) < p**3).astype(float)
    assert M.smooth_ece(p, off) == pytest.approx(relplot.smECE(p, off))
    assert M.smooth_ece(p, calibrated) < 0.03 < M.smooth_ece(p, off)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(6)
    u = rng.normal(size=400)
    y = (rng.normal(size=400) > u).astype(float)
    first = M.bootstrap_interval(M.error_auroc, [u, y], n_boot=200, seed=1)
    assert first == M.bootstrap_interval(M.error_auroc, [u, y], n_boot=200, seed=1)
    point = M.error_auroc(u, y)
    assert first is not None and point is not None and first[0] < point < first[1]
    assert M.bootstrap_interval(M.error_auroc, [u, y], n_boot=0) is None
    tied = np.round(u, 1)  # the fast AUROC bootstrap draws the same resamples, ties included
    assert M.auroc_interval(tied, y, n_boot=200, seed=1) == pytest.approx(
        M.bootstrap_interval(M.error_auroc, [tied, y], n_boot=200, seed=1), abs=1e-12
    )


def test_grouped_bootstrap_resamples_whole_groups() -> None:
    rng = np.random.default_rng(8)
    u = rng.normal(size=100)
    y = (rng.normal(size=100) > u).astype(float)
    # every record five times, as one group: resampling the 100 groups is resampling the 100 records
    # (labels sort in record order, so the very same draws), and AUROC and a mean ignore the copies
    groups = np.repeat([f"g{i:03d}" for i in range(100)], 5)
    u5, y5 = np.repeat(u, 5), np.repeat(y, 5)
    alone = M.bootstrap_interval(M.error_auroc, [u, y], n_boot=300, seed=2)
    assert M.bootstrap_interval(M.error_auroc, [u5, y5], n_boot=300, seed=2, groups=groups) == pytest.approx(alone)
    assert M.auroc_interval(u5, y5, n_boot=300, seed=2, groups=groups) == pytest.approx(alone)
    assert M.compute_metrics(u5, y5, n_boot=300, seed=2, groups=groups)["auroc_ci"] == pytest.approx(alone)
    # resampled one by one, the copies look like 500 independent records: a narrower, wrong interval
    naive = M.auroc_interval(u5, y5, n_boot=300, seed=2)
    assert naive is not None and alone is not None and naive[1] - naive[0] < 0.7 * (alone[1] - alone[0])
    with pytest.raises(ValueError, match="4 groups for 500 records"):
        M.bootstrap_interval(M.error_auroc, [u5, y5], groups=["a", "b", "c", "d"])


def test_compute_metrics_report() -> None:
    rng = np.random.default_rng(7)
    conf = rng.uniform(0.3, 1, 500)
    y = (rng.uniform(size=500) < conf).astype(float)
    out = M.compute_metrics(1 - conf, y, conf, n_boot=50, smooth=False)
    assert out["n"] == 500 and out["n_bins"] == 15 and set(out["selective_accuracy"]) == {"0.5", "0.8", "0.9"}
    assert out["ece"] == pytest.approx(M.ece(conf, y, 15)) and out["smooth_ece"] is None
    assert out["auroc"] > 0.6 and out["ece_ci"][0] <= out["ece"] <= out["ece_ci"][1]
    no_conf = M.compute_metrics(1 - conf, y, None, n_boot=0)
    assert no_conf["ece"] is None and no_conf["brier"] is None and no_conf["auroc_ci"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([0.5, np.nan], [1, 0]), "NaN"),
        (([0.5, 0.2, 0.1], [1, 0]), "3 values"),
        (([0.5, 1.5], [1, 0]), r"\[0, 1\]"),
        (([0.5, 0.4], [1, 2]), "0/1"),
        (([], []), "empty"),
    ],
)
def test_bad_arrays_are_named(args: tuple[list[float], list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M.ece(*args)
