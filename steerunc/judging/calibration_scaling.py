"""Parametric calibrators: Platt (logistic), beta, and temperature scaling of option logits.

Platt is fitted by scikit-learn; beta and temperature by netcal, imported only
inside ``fit`` (netcal loads torch, which the judging wing otherwise never
does). Prediction is plain NumPy from the saved parameters.

netcal has had releases whose scaling returned its input unchanged, and its
beta calibration can leave the constraints a, b >= 0 unmet. So every netcal
fit is checked: scipy minimises the same negative log-likelihood starting from
netcal's answer, and where that lowers it by more than 1e-6 nats per record the
refined parameters are kept and ``fitter_`` says so. If netcal cannot be
imported at all, scipy fits alone.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc.judging.calibration_base import (
    Array,
    CalibrationError,
    Calibrator,
    NotFittedError,
    finite_number,
    unit_map,
)

__all__ = ["BetaCalibrator", "PlattCalibrator", "TemperatureScaling", "softmax"]

_EPS = float(np.finfo(np.float64).eps)  # netcal's clipping constant for float64
_TOLERANCE = 1e-6  # nats per record: a netcal fit worse than scipy's by more is refined


def _sigmoid(t: Array) -> Array:
    return np.exp(-np.logaddexp(0.0, -t))


def _binary_nll(logit: Array, y: Array) -> float:
    return float(np.mean(np.logaddexp(0.0, -logit) * y + np.logaddexp(0.0, logit) * (1.0 - y)))


def _netcal(name: str) -> tuple[Any, str] | None:
    """A netcal scaling class and netcal's version, or None when netcal (or torch) cannot be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import netcal
            import netcal.scaling
    except Exception:  # noqa: BLE001  (any failure to import means: fit with scipy)
        return None
    return getattr(netcal.scaling, name), str(getattr(netcal, "__version__", "?"))


def _quiet(call: Callable[[], Any]) -> Any:
    """Run a netcal call with its prints and warnings swallowed (stdout carries only the product)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return call()


def _refine(
    objective: Callable[[Array], float], start: Array, bounds: list[tuple[float | None, float | None]]
) -> tuple[Array, float]:
    from scipy.optimize import minimize

    start = np.array(
        [
            np.clip(v, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
            for v, (lo, hi) in zip(start, bounds)
        ]
    )
    result = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    return np.asarray(result.x, dtype=np.float64), float(result.fun)


def _checked(
    name: str,
    netcal_fit: Callable[[Any], Array],
    objective: Callable[[Array], float],
    default: Array,
    bounds: list[tuple[float | None, float | None]],
) -> tuple[Array, str]:
    """Fit with netcal class ``name``, verify against scipy; returns parameters and a fitter note."""
    found = _netcal(name)
    if found is None:
        params, _ = _refine(objective, default, bounds)
        return params, "scipy L-BFGS-B (netcal could not be imported)"
    cls, version = found
    label = f"netcal {version} {name}"
    try:
        start = np.asarray(_quiet(lambda: netcal_fit(cls)), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        params, _ = _refine(objective, default, bounds)
        return params, f"scipy L-BFGS-B ({label} failed: {exc})"
    valid = np.all(np.isfinite(start)) and all(
        (lo is None or v >= lo) and (hi is None or v <= hi) for v, (lo, hi) in zip(start, bounds)
    )
    refined, best = _refine(objective, start if valid else default, bounds)
    if valid and objective(start) - best <= _TOLERANCE:
        return start, label
    return refined, f"{label}, refined by scipy L-BFGS-B (netcal's answer was not the optimum)"


class PlattCalibrator(Calibrator):
    """Platt scaling: P(correct) = sigmoid(a * x + b) on the oriented score x.

    Fitted by scikit-learn's LogisticRegression on Platt's prior-corrected
    targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)), which keeps a and b finite
    when the score separates the classes.
    """

    method: ClassVar[str] = "platt"

    def _fit(self, x: Array, y: Array) -> None:
        from sklearn import __version__ as sk_version
        from sklearn.linear_model import LogisticRegression

        n_pos, n_neg = y.sum(), y.size - y.sum()
        target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        mean, std = float(x.mean()), float(x.std()) or 1.0
        z = ((x - mean) / std).reshape(-1, 1)
        model = LogisticRegression(C=np.inf).fit(
            np.vstack([z, z]), np.r_[np.ones(y.size), np.zeros(y.size)], sample_weight=np.r_[target, 1 - target]
        )
        self.coef_ = float(model.coef_[0, 0]) / std
        self.intercept_ = float(model.intercept_[0]) - float(model.coef_[0, 0]) * mean / std
        self.fitter_ = f"scikit-learn {sk_version} LogisticRegression (Platt targets)"

    def _predict(self, x: Array) -> Array:
        return _sigmoid(self.coef_ * x + self.intercept_)

    def _state(self) -> dict[str, Any]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.coef_, self.intercept_ = finite_number(state, "coef"), finite_number(state, "intercept")


class BetaCalibrator(Calibrator):
    """Beta calibration (Kull et al. 2017): sigmoid(a ln z - b ln(1 - z) + c), a, b >= 0.

    z is the score mapped into [0, 1] by an affine map stored with the fit:
    1 - score (or score, for confidences) when the calibration scores all lie in
    [0, 1], else min-max scaling of the oriented score; clipped to [0, 1].
    """

    method: ClassVar[str] = "beta"

    def _unit(self, x: Array) -> Array:
        return np.clip(self.unit_scale_ * x + self.unit_shift_, 0.0, 1.0)

    @staticmethod
    def _features(z: Array) -> Array:
        return np.stack([np.log(np.clip(z, _EPS, 1 - _EPS)), -np.log(np.clip(1 - z, _EPS, 1 - _EPS))], axis=1)

    def _fit(self, x: Array, y: Array) -> None:
        self.unit_scale_, self.unit_shift_ = unit_map(x, self.orientation_)
        z = self._unit(x)
        feats = self._features(z)

        def objective(w: Array) -> float:
            return _binary_nll(feats @ w[:2] + w[2], y)

        def netcal_fit(cls: Any) -> Array:
            model = cls(method="mle").fit(z, y.astype(np.int64))
            return np.r_[np.ravel(model._sites["weights"]["values"]), np.ravel(model._sites["bias"]["values"])]

        params, self.fitter_ = _checked(
            "BetaCalibration",
            netcal_fit,
            objective,
            np.array([1.0, 1.0, 0.0]),
            [(0.0, None), (0.0, None), (None, None)],
        )
        self.a_, self.b_, self.c_ = (float(v) for v in params)

    def _predict(self, x: Array) -> Array:
        return _sigmoid(self._features(self._unit(x)) @ np.array([self.a_, self.b_]) + self.c_)

    def _state(self) -> dict[str, Any]:
        return {
            "a": self.a_,
            "b": self.b_,
            "c": self.c_,
            "unit_scale": self.unit_scale_,
            "unit_shift": self.unit_shift_,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.a_, self.b_ = finite_number(state, "a", low=0.0), finite_number(state, "b", low=0.0)
        self.c_ = finite_number(state, "c")
        self.unit_scale_, self.unit_shift_ = finite_number(state, "unit_scale"), finite_number(state, "unit_shift")


def softmax(logits: ArrayLike, temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise softmax of logits / temperature; -inf (an absent option) gets probability 0.

    >>> softmax([[0.0, 0.0, -np.inf]]).tolist()
    [[0.5, 0.5, 0.0]]
    """
    z = np.atleast_2d(np.asarray(logits, dtype=np.float64)) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TemperatureScaling(Calibrator):
    """Temperature scaling (Guo et al. 2017) of the option logits: p = softmax(z / T).

    Unlike the score calibrators, ``fit(logits, labels)`` takes an (n, C) matrix
    of option logits (-inf where a record lacks an option) and the index of each
    record's label; ``predict(logits)`` gives the calibrated max-probability,
    i.e. the confidence in the (unchanged) argmax prediction.
    """

    method: ClassVar[str] = "temperature"
    input_kind: ClassVar[str] = "logits"
    score = "logits"
    higher_means = None

    def __init__(self, target: str = "fused") -> None:
        self.target = target

    @staticmethod
    def _matrix(logits: ArrayLike) -> Array:
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] < 2:
            raise ValueError(f"logits must be an (n, C) matrix with C >= 2 options, got shape {z.shape}")
        if np.any(np.isnan(z)) or np.any(z == np.inf) or np.any(np.all(z == -np.inf, axis=1)):
            raise ValueError("logits hold NaN, +inf, or a row without any finite option")
        return z

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> TemperatureScaling:  # type: ignore[override]
        """Fit T by minimising the multiclass NLL of ``labels`` (option indices); returns self."""
        self.orientation_ = "confident"
        self._validate_params()
        z = self._matrix(logits)
        y = np.asarray(labels).astype(np.int64).ravel()
        if y.size != z.shape[0] or y.min() < 0 or y.max() >= z.shape[1] or np.any(z[np.arange(y.size), y] == -np.inf):
            raise ValueError("labels must give, for every row of logits, the index of one of its options")
        correct = z.argmax(axis=1) == y
        self._correct(correct, y.size)  # needs both right and wrong predictions
        rows = np.arange(y.size)
        finite = np.isfinite(z)

        def objective(w: Array) -> float:
            t = z / np.exp(w[0])
            m = np.max(t, axis=1)
            lse = m + np.log(np.sum(np.where(finite, np.exp(t - m[:, None]), 0.0), axis=1))
            return float(np.mean(lse - t[rows, y]))

        def netcal_fit(cls: Any) -> Array:
            model = cls(method="mle").fit(softmax(z), y)
            weight = float(np.ravel(model.weights)[0])  # netcal scales log-probabilities by 1 / T
            return np.array([-np.log(weight) if weight > 0 else np.nan])

        params, self.fitter_ = _checked("TemperatureScaling", netcal_fit, objective, np.zeros(1), [(-7.0, 7.0)])
        self.temperature_ = float(np.exp(params[0]))
        self._stamp(y.size, int(correct.sum()))
        return self

    def predict_proba(self, logits: ArrayLike) -> Array:
        """The calibrated option distributions softmax(z / T), one row per record."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("this TemperatureScaling is not fitted yet: call fit(logits, labels) first")
        return softmax(self._matrix(logits), self.temperature_)

    def predict(self, logits: ArrayLike) -> Array:  # type: ignore[override]
        """Calibrated confidence: max_y softmax(z / T)_y per record."""
        return self.predict_proba(logits).max(axis=1)

    def _state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_}

    def _set_state(self, state: dict[str, Any]) -> None:
        value = finite_number(state, "temperature")
        if not value > 0:
            raise CalibrationError(f"field 'state.temperature' must be positive, got {value}")
        self.temperature_ = value
