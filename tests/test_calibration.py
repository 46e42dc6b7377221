"""Calibrators: they must change a miscalibrated input, lower held-out ECE, agree with netcal/sklearn,
keep the scikit-learn contract, and survive a JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from steerunc.judging import calibration_scaling
from steerunc.judging.calibration import (
    METHODS,
    CalibrationError,
    NotFittedError,
    TemperatureScaling,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)
from steerunc.judging.calibration_scaling import softmax
from steerunc.errors import InputError
from steerunc.judging.metrics import ece

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyro, inside netcal

SCORE_METHODS = ["isotonic", "histogram", "platt", "beta"]


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An msp-like uncertainty u whose raw confidence 1 - u is badly over-confident.

    True P(correct) = p ~ U(0.3, 1); the raw confidence is p ** 0.25.
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 1.0, n)
    correct = (rng.uniform(size=n) < p).astype(float)
    raw = p**0.25
    return 1.0 - raw, correct, raw


def overconfident_logits(n: int, seed: int, factor: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Option logits ``factor`` times sharper than the distribution labels are drawn from."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n, 4)) * 1.5
    probs = softmax(true)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    return true * factor, labels


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_score_calibrator_changes_input_and_lowers_heldout_ece(method: str) -> None:
    u, ok, _ = miscalibrated(3000, seed=0)
    u_test, ok_test, raw_test = miscalibrated(3000, seed=1)
    cal = make_calibrator(method, "msp").fit(u, ok)
    conf = cal.predict(u_test)
    assert np.mean(np.abs(conf - raw_test)) > 0.1, "calibrator returned (nearly) its input unchanged"
    before, after = ece(raw_test, ok_test), ece(conf, ok_test)
    assert before > 0.15
    assert after < 0.06 and after < before / 3
    assert conf.min() >= 0.0 and conf.max() <= 1.0
    grid = np.linspace(0, 0.25, 50)  # the range of u
    if method == "histogram":  # bin means need not be monotone; they must still fall overall
        assert np.corrcoef(grid, cal.predict(grid))[0, 1] < -0.9
    else:
        assert np.all(np.diff(cal.predict(grid)) <= 1e-12), "confidence must not rise with uncertainty"


def test_temperature_scaling_recovers_the_temperature_and_lowers_ece() -> None:
    z, y = overconfident_logits(3000, seed=0)
    z_test, y_test = overconfident_logits(3000, seed=1)
    cal = TemperatureScaling().fit(z, y)
    assert cal.temperature_ == pytest.approx(3.0, rel=0.1)
    raw = softmax(z_test).max(axis=1)
    conf = cal.predict(z_test)
    ok = z_test.argmax(axis=1) == y_test
    assert np.mean(np.abs(conf - raw)) > 0.1
    assert ece(conf, ok) < 0.04 and ece(raw, ok) > 0.15
    np.testing.assert_array_equal(cal.predict_proba(z_test).argmax(axis=1), z_test.argmax(axis=1))


def test_temperature_handles_records_with_different_options() -> None:
    z, y = overconfident_logits(600, seed=2)
    z[::3, 3] = -np.inf  # every third record lacks option 3
    y[::3] = np.where(y[::3] == 3, 0, y[::3])
    cal = TemperatureScaling().fit(z, y)
    assert np.isfinite(cal.temperature_) and cal.predict(z).min() > 0.25


# -- against the reference libraries ----------------------------------------------------------


def test_isotonic_matches_sklearn() -> None:
    from sklearn.isotonic import IsotonicRegression

    u, ok, _ = miscalibrated(800, seed=3)
    ref = IsotonicRegression(increasing=False, out_of_bounds="clip", y_min=0, y_max=1).fit(u, ok)
    grid = np.linspace(-0.1, 0.8, 200)
    np.testing.assert_allclose(make_calibrator("isotonic", "msp").fit(u, ok).predict(grid), ref.predict(grid))


def test_beta_matches_netcal() -> None:
    scaling = pytest.importorskip("netcal.scaling")
    _, ok, raw = miscalibrated(1500, seed=4)
    ref = scaling.BetaCalibration(method="mle").fit(raw, ok.astype(int))
    ours = make_calibrator("beta", "fused_confidence").fit(raw, ok)
    assert "netcal" in ours.fitter_ and "refined" not in ours.fitter_
    np.testing.assert_allclose(ours.predict(raw), ref.transform(raw), atol=1e-9)


def test_temperature_matches_netcal() -> None:
    scaling = pytest.importorskip("netcal.scaling")
    z, y = overconfident_logits(1500, seed=5)
    ref = scaling.TemperatureScaling(method="mle").fit(softmax(z), y)
    ours = TemperatureScaling().fit(z, y)
    np.testing.assert_allclose(ours.predict_proba(z), ref.transform(softmax(z)), atol=1e-6)


def test_histogram_uniform_matches_netcal() -> None:
    binning = pytest.importorskip("netcal.binning")
    _, ok, raw = miscalibrated(2000, seed=6)
    ref = binning.HistogramBinning(bins=10).fit(raw, ok.astype(int))
    ours = make_calibrator("histogram", "fused_confidence", strategy="uniform").fit(raw, ok)
    grid = np.linspace(0.75, 0.99, 25) + 1e-4  # populated bins (netcal fills empty ones with the bin centre)
    np.testing.assert_allclose(ours.predict(grid), ref.transform(grid), atol=1e-12)


# -- guarding against a netcal that does nothing ----------------------------------------------


def test_a_netcal_fit_that_returns_its_input_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    scaling = pytest.importorskip("netcal.scaling")

    def lazy_temperature(self: Any, X: Any, y: Any, **kwargs: Any) -> Any:
        self._sites = {"weights": {"values": np.array([1.0])}}  # "fitted": T = 1, input unchanged
        return self

    def lazy_beta(self: Any, X: Any, y: Any, **kwargs: Any) -> Any:
        self._sites = {"weights": {"values": np.array([1.0, 1.0])}, "bias": {"values": np.array([0.0])}}
        return self

    monkeypatch.setattr(scaling.TemperatureScaling, "fit", lazy_temperature)
    monkeypatch.setattr(scaling.BetaCalibration, "fit", lazy_beta)
    z, y = overconfident_logits(1500, seed=7)
    cal = TemperatureScaling().fit(z, y)
    assert cal.temperature_ == pytest.approx(3.0, rel=0.1) and "refined by scipy" in cal.fitter_
    _, ok, raw = miscalibrated(1500, seed=8)
    beta = make_calibrator("beta", "fused_confidence").fit(raw, ok)
    assert "refined by scipy" in beta.fitter_ and np.mean(np.abs(beta.predict(raw) - raw)) > 0.1


def test_without_netcal_scipy_fits_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration_scaling, "_netcal", lambda name: None)
    z, y = overconfident_logits(1000, seed=9)
    cal = TemperatureScaling().fit(z, y)
    assert cal.temperature_ == pytest.approx(3.0, rel=0.15) and "netcal could not be imported" in cal.fitter_


# -- the scikit-learn contract ------------------------------------------------------------------


@pytest.mark.parametrize("method", [*SCORE_METHODS, "temperature"])
def test_sklearn_contract(method: str) -> None:
    from sklearn.base import clone
    from sklearn.utils.validation import check_is_fitted

    cal = make_calibrator(method, "msp")
    with pytest.raises(NotFittedError, match="not fitted"):
        cal.predict(np.zeros((2, 3)) if method == "temperature" else [0.1])
    assert isinstance(NotFittedError("x"), (ValueError, AttributeError))
    before = dict(vars(cal))
    if method == "temperature":
        z, y = overconfident_logits(300, seed=10)
        fitted = cal.fit(z, y)
    else:
        u, ok, _ = miscalibrated(300, seed=10)
        fitted = cal.fit(u, ok)
    assert fitted is cal
    check_is_fitted(cal)
    new_attrs = set(vars(cal)) - set(before)
    assert new_attrs and all(name.endswith("_") for name in new_attrs)
    assert {k: vars(cal)[k] for k in before} == before, "fit must not change constructor parameters"
    copy = clone(cal)
    assert copy.get_params() == cal.get_params() and not copy.__sklearn_is_fitted__()


def test_set_params_and_errors() -> None:
    cal = make_calibrator("histogram", "entropy").set_params(n_bins=5)
    assert cal.get_params()["n_bins"] == 5 and repr(cal).startswith("HistogramBinning(")
    with pytest.raises(ValueError, match="no parameter"):
        cal.set_params(bins=3)
    with pytest.raises(ValueError, match="unknown calibration method"):
        make_calibrator("magic")
    assert type(make_calibrator("logistic")).__name__ == "PlattCalibrator"
    with pytest.raises(CalibrationError, match="both correct and incorrect"):
        make_calibrator("isotonic").fit([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        make_calibrator("platt").fit([0.1, np.nan, 0.3], [1, 0, 1])


def test_confidence_scores_are_increasing() -> None:
    _, ok, raw = miscalibrated(1000, seed=11)
    cal = make_calibrator("isotonic", "fused_confidence").fit(raw, ok)
    assert cal.orientation_ == "confident"
    assert cal.predict([0.4])[0] < cal.predict([0.99])[0]


def test_unbounded_scores_work_for_every_method() -> None:
    rng = np.random.default_rng(12)
    u = rng.exponential(2.0, 1500)  # e.g. a mean KL: any non-negative value
    ok = (rng.uniform(size=1500) < np.exp(-u / 3)).astype(float)
    for method in SCORE_METHODS:
        conf = make_calibrator(method, "mean_kl").fit(u, ok).predict(np.array([0.0, 1.0, 20.0]))
        assert conf[0] > conf[2] and 0 <= conf.min() and conf.max() <= 1, method


# -- JSON, never pickle ----------------------------------------------------------------------


@pytest.mark.parametrize("method", [*SCORE_METHODS, "temperature"])
def test_json_round_trip(method: str, tmp_path: Any) -> None:
    if method == "temperature":
        x, y = overconfident_logits(500, seed=13)
    else:
        x, y, _ = miscalibrated(500, seed=13)
    cal = make_calibrator(method, "msp", target="base").fit(x, y)
    path = tmp_path / "cal.json"
    save_calibrator(cal, str(path), source="train.jsonl")
    data = json.loads(path.read_text())  # plain JSON
    prov = data["provenance"]
    assert prov["method"] == METHODS[method].method and prov["n"] == 500 and prov["source"] == "train.jsonl"
    assert prov["score"] == ("logits" if method == "temperature" else "msp") and prov["target"] == "base"
    assert prov["date"] and prov["steerunc_version"] and prov["fitter"]
    loaded = load_calibrator(str(path))
    assert type(loaded) is type(cal) and loaded.get_params() == cal.get_params()
    np.testing.assert_array_equal(loaded.predict(x), cal.predict(x))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"kind": "steerunc.triage_policy"}', "triage policy"),
        ('{"kind": "other"}', "not a steerunc calibrator"),
        ('{"kind": "steerunc.calibrator", "format": 1, "method": "magic"}', "unknown calibration method"),
        ('{"kind": "steerunc.calibrator", "format": 99, "method": "platt"}', "newer"),
        ('{"kind": "steerunc.calibrator", "format": 1, "method": "platt", "params": {}, "state": {}}', "missing"),
    ],
)
def test_bad_calibrator_files_name_the_file(content: str, message: str, tmp_path: Any) -> None:
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_calibrator(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="no such calibrator file"):
        load_calibrator(str(tmp_path / "missing.json"))
