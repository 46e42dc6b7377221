"""One calibrated P(correct) from several scores at once: a logistic combination, or a monotone one.

``CombinedCalibrator(scores=["msp", "mutual_info", "mean_kl", "flip_rate"])``
fits P(correct) = sigmoid(w . z + b), where z are the scores oriented so that
higher = more sure (uncertainty scores negated) and standardised by the mean
and standard deviation of the calibration records, with an L2 penalty on w
(scikit-learn's ``LogisticRegression`` objective, ``C`` = 1 by default:
0.5 |w|^2 + C sum_i logloss_i; the intercept is not penalised).

* ``monotone=False`` ("logistic"): w is free, fitted by scikit-learn. A
  score may then enter with either sign (e.g. one that only helps in
  combination with another).
* ``monotone=True`` ("monotone"): w >= 0, so raising any uncertainty score
  never raises the confidence, fitted by scipy's L-BFGS-B on the same
  objective (where the free optimum already has w >= 0 the two agree). It is
  the safer map for triage: a record that every score calls less sure can
  never be accepted ahead of one they call more sure.

Everything is stored as plain numbers (the standardisation, w and b), never
pickle; prediction is NumPy.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = rng.uniform(size=(500, 2)); ok = rng.uniform(size=500) < 1 - 0.5 * s[:, 0] - 0.3 * s[:, 1]
>>> cal = CombinedCalibrator(["msp", "mutual_info"], monotone=True).fit(s, ok)
>>> cal.label, bool(np.all(np.asarray(cal.coef_) >= 0))
('msp+mutual_info@monotone', True)
>>> conf = cal.predict([[0.0, 0.0], [1.0, 1.0]]); bool(conf[0] > conf[1])
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike

from steerunc.judging.calibration_base import Array, CalibrationError, Calibrator, finite_array, finite_number
from steerunc.scored import TARGETS, orientation_of

__all__ = ["CombinedCalibrator", "combination_objective"]


def _sigmoid(t: Array) -> Array:
    return np.exp(-np.logaddexp(0.0, -t))


def combination_objective(w: Array, z: Array, y: Array, c: float) -> tuple[float, Array]:
    """scikit-learn's L2 logistic objective 0.5 |w|^2 + C sum logloss (w = coefficients then the
    intercept, which is not penalised), divided by C n for scale, and its gradient."""
    n = y.size
    t = z @ w[:-1] + w[-1]
    loss = float(np.sum(np.logaddexp(0.0, t) - y * t)) / n + 0.5 * float(w[:-1] @ w[:-1]) / (c * n)
    residual = (_sigmoid(t) - y) / n
    grad = np.r_[z.T @ residual + w[:-1] / (c * n), residual.sum()]
    return loss, grad


class CombinedCalibrator(Calibrator):
    """P(correct) = sigmoid(w . standardised oriented scores + b); ``monotone`` constrains w >= 0.

    ``fit(X, correct)`` and ``predict(X)`` take an (n, k) matrix whose columns
    are the values of ``scores`` in that order
    (:func:`steerunc.scored.score_matrix`).
    """

    method: ClassVar[str] = "combined"
    input_kind: ClassVar[str] = "scores"
    higher_means = None

    def __init__(
        self,
        scores: Sequence[str] = ("msp", "mutual_info", "mean_kl", "flip_rate"),
        target: str = "fused",
        monotone: bool = False,
        C: float = 1.0,  # noqa: N803  (scikit-learn's name for it)
    ) -> None:
        self.scores = scores
        self.target = target
        self.monotone = monotone
        self.C = C

    @property
    def score(self) -> str:  # type: ignore[override]
        """The scores combined, joined by ``+`` (``msp+mutual_info``)."""
        return "+".join(self.scores)

    @property
    def variant(self) -> str:
        """``monotone`` or ``logistic``: the name ``--method`` takes."""
        return "monotone" if self.monotone else "logistic"

    @property
    def label(self) -> str:
        return f"{self.score}@{self.variant}"

    def _validate_params(self) -> str:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        names = list(self.scores) if not isinstance(self.scores, str) else []
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"scores must be distinct score names, at least one, got {self.scores!r}")
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not self.C > 0 or not np.isfinite(self.C):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if not isinstance(self.monotone, bool):
            raise ValueError(f"monotone must be true or false, got {self.monotone!r}")
        return "confident"

    def _check_saved_params(self) -> None:
        try:
            self._validate_params()
        except ValueError as exc:
            raise ValueError(f"field 'params': {exc}") from exc

    def _matrix(self, scores: ArrayLike) -> Array:
        x = np.asarray(scores, dtype=np.float64)
        k = len(self.scores)
        if x.ndim == 1 and k == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != k:
            raise ValueError(f"scores must be an (n, {k}) matrix (one column per score in {list(self.scores)}), "
                             f"got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = int(np.argmin(np.all(np.isfinite(x), axis=1)))
            raise ValueError(f"scores hold NaN or infinite values (first in row {bad})")
        return x

    def _standardised(self, scores: ArrayLike) -> Array:
        x = self._matrix(scores) * self.signs_
        return (x - self.mean_) / self.scale_

    def fit(self, score: ArrayLike, correct: ArrayLike) -> Self:
        """Fit w and b on an (n, k) score matrix and 0/1 correctness; returns self."""
        self.orientation_ = self._validate_params()
        x = self._matrix(score)
        y = self._correct(correct, x.shape[0])
        self.orientations_ = [orientation_of(name) for name in self.scores]
        self.signs_ = np.array([-1.0 if o == "uncertain" else 1.0 for o in self.orientations_])
        oriented = x * self.signs_
        self.mean_ = oriented.mean(axis=0)
        std = oriented.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        z = (oriented - self.mean_) / self.scale_
        if self.monotone:
            self._fit_monotone(z, y)
        else:
            self._fit_logistic(z, y)
        self._stamp(y.size, int(y.sum()))
        return self

    def _fit_logistic(self, z: Array, y: Array) -> None:
        from sklearn import __version__ as sk_version
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=float(self.C), max_iter=10_000, tol=1e-8).fit(z, y)
        self.coef_ = np.asarray(model.coef_[0], dtype=np.float64)
        self.intercept_ = float(model.intercept_[0])
        self.fitter_ = f"scikit-learn {sk_version} LogisticRegression (L2, C={self.C:g}, standardised scores)"

    def _fit_monotone(self, z: Array, y: Array) -> None:
        from scipy import __version__ as sp_version
        from scipy.optimize import minimize

        k = z.shape[1]
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        start = np.r_[np.zeros(k), np.log(rate / (1 - rate))]
        result = minimize(
            combination_objective,
            start,
            args=(z, y, float(self.C)),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * k + [(None, None)],
            options={"maxiter": 10_000, "ftol": 1e-12, "gtol": 1e-8},
        )
        if not np.all(np.isfinite(result.x)):  # pragma: no cover  (a bounded convex problem)
            raise CalibrationError(f"the monotone combination did not converge: {result.message}")
        self.coef_ = np.asarray(result.x[:k], dtype=np.float64)
        self.intercept_ = float(result.x[k])
        self.fitter_ = f"scipy {sp_version} L-BFGS-B (L2 logistic, C={self.C:g}, coefficients >= 0, standardised scores)"

    def decision_function(self, score: ArrayLike) -> Array:
        """The linear predictor w . z + b (the log-odds of being correct), one per record."""
        self._check_fitted()
        return self._standardised(score) @ self.coef_ + self.intercept_

    def predict(self, score: ArrayLike) -> Array:
        """Calibrated confidence P(correct), one per row of the (n, k) score matrix."""
        return np.clip(_sigmoid(self.decision_function(score)), 0.0, 1.0)

    def _state(self) -> dict[str, Any]:
        return {
            "orientations": list(self.orientations_),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        k = len(self.scores)
        orientations = state["orientations"]
        if not isinstance(orientations, list) or len(orientations) != k or not all(
            o in ("uncertain", "confident") for o in orientations
        ):
            raise CalibrationError(f"field 'state.orientations' must list 'uncertain' or 'confident' for each of {k} scores")
        arrays = {name: finite_array(state, name) for name in ("mean", "scale", "coef")}
        for name, value in arrays.items():
            if value.shape != (k,):
                raise CalibrationError(f"field 'state.{name}' must hold one number per score ({k}), got {value.size}")
        if np.any(arrays["scale"] <= 0):
            raise CalibrationError("field 'state.scale' must hold positive numbers")
        if self.monotone and np.any(arrays["coef"] < 0):
            raise CalibrationError("field 'state.coef' of a monotone combination must hold numbers >= 0")
        self.orientations_ = list(orientations)
        self.signs_ = np.array([-1.0 if o == "uncertain" else 1.0 for o in orientations])
        self.mean_, self.scale_, self.coef_ = arrays["mean"], arrays["scale"], arrays["coef"]
        self.intercept_ = finite_number(state, "intercept")
