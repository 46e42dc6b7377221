"""One calibrated P(correct) from several scores at once: a logistic combination, or a monotone one.

``CombinedCalibrator(scores=["msp", "mutual_info", "mean_kl", "flip_rate"])``
fits P(correct) = sigmoid(w . z + b), where z are the scores oriented so that
higher = more sure (uncertainty scores negated) and standardised by the mean
and standard deviation of the calibration records, with an L2 penalty on w
(scikit-learn's ``LogisticRegression`` objective, ``C`` = 1 by default:
0.5 |w|^2 + C sum_i logloss_i; the intercept is not penalised).

* ``monotone=False`` ("logistic"): w is free, fitted by Newton's method
  (the optimum scikit-learn's ``LogisticRegression`` finds). A
  score may then enter with either sign (e.g. one that only helps in
  combination with another).
* ``monotone=True`` ("monotone"): w >= 0, so raising any uncertainty score
  never raises the confidence, fitted on the same objective by an active set
  of Newton fits (where the free optimum already has w >= 0 the two agree). It is
  the safer map for triage: a record that every score calls less sure can
  never be accepted ahead of one they call more sure.

The guard (``guard=True``, the default). A combination fitted on a few hundred
records can rank *worse* than its first score alone when the other scores add
noise or nearly cancel (docs/results.md: LIAR and GlobalOpinionQA). So before
the final fit, the combination and the first score alone (same map, same C)
are compared by 5-fold stratified cross-validation repeated 5 times on the
calibration records (fixed seed): per record, the held-out log loss of each,
averaged over the repeats. The combination is kept only if its mean log loss
is lower than the first score's by more than one standard error of the
per-record differences (the one-standard-error rule: prefer the simpler model
unless the richer one is clearly better); otherwise the other weights are 0
and the calibrator is the first score's logistic map. With fewer than 5
correct or 5 incorrect records there is nothing to cross-validate, and the
first score is kept. Records that are not independent (one question asked
about several countries) can be given ``groups``: each group then stays in
one fold (scikit-learn's ``StratifiedGroupKFold``), and the standard error is
computed over groups. What was decided, and the figures, are saved in
``state.guard``. The rule was fixed before it was run on any evaluated split.

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

__all__ = ["CombinedCalibrator", "GUARD_FOLDS", "GUARD_REPEATS", "combination_objective"]

#: the guard's cross-validation: stratified folds, repeats, and the seed of their shuffling
GUARD_FOLDS, GUARD_REPEATS, GUARD_SEED = 5, 5, 0
_KEPT = ("combination", "first score")


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


def _location_scale(x: Array) -> tuple[Array, Array]:
    """Per column: the mean, and the standard deviation (1 where a column is constant)."""
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)


def _newton(z: Array, y: Array, c: float) -> tuple[Array, float]:
    """(w, b) minimising :func:`combination_objective` by Newton's method with step halving: the
    optimum scikit-learn's LogisticRegression finds, in a fraction of its time (the guard fits 50)."""
    n, k = z.shape
    design = np.c_[z, np.ones(n)]
    penalty = np.r_[np.ones(k), 0.0] / c
    w = np.zeros(k + 1)
    loss = combination_objective(w, z, y, c)[0]
    for _ in range(100):
        p = _sigmoid(design @ w)
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design.T * (p * (1 - p))) @ design + np.diag(penalty) + 1e-12 * np.eye(k + 1)
        step, size = np.linalg.solve(hessian, gradient), 1.0
        while True:  # halve the step until the objective does not rise
            trial = w - size * step
            trial_loss = combination_objective(trial, z, y, c)[0]
            if trial_loss <= loss or size < 1e-10:
                break
            size /= 2
        w, loss = trial, trial_loss
        if np.max(np.abs(size * step)) < 1e-10:
            break
    return w[:k], float(w[k])


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
        guard: bool = True,
    ) -> None:
        self.scores = scores
        self.target = target
        self.monotone = monotone
        self.C = C
        self.guard = guard

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
        if not isinstance(self.guard, bool):
            raise ValueError(f"guard must be true or false, got {self.guard!r}")
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

    def fit(self, score: ArrayLike, correct: ArrayLike, groups: Sequence[Any] | None = None) -> Self:
        """Fit w and b on an (n, k) score matrix and 0/1 correctness; returns self. ``groups`` (one
        hashable per record, optional): records sharing a value are not independent (one question
        asked about several countries), and the guard's cross-validation keeps each group in one fold."""
        self.orientation_ = self._validate_params()
        x = self._matrix(score)
        y = self._correct(correct, x.shape[0])
        if groups is not None and len(groups) != y.size:
            raise ValueError(f"groups has {len(groups)} values but score has {y.size} rows")
        self.orientations_ = [orientation_of(name) for name in self.scores]
        self.signs_ = np.array([-1.0 if o == "uncertain" else 1.0 for o in self.orientations_])
        oriented = x * self.signs_
        self.mean_, self.scale_ = _location_scale(oriented)
        z = (oriented - self.mean_) / self.scale_
        k = len(self.scores)
        self.guard_ = self._run_guard(oriented, y, groups) if self.guard and k > 1 else None
        columns = 1 if self.guard_ is not None and self.guard_["kept"] == "first score" else k
        coef, self.intercept_ = self._fit_z(z[:, :columns], y)
        self.coef_ = np.r_[coef, np.zeros(k - columns)]
        self.fitter_ = (f"Newton's method on scikit-learn's L2 logistic objective (C={self.C:g}, standardised "
                        f"scores{', coefficients >= 0 by an active set' if self.monotone else ''})")
        if self.guard_ is not None:
            self.fitter_ += f"; guard: {self.guard_['kept']} kept"
        self._stamp(y.size, int(y.sum()))
        return self

    def _fit_z(self, z: Array, y: Array) -> tuple[Array, float]:
        """(w, b) on standardised oriented scores, by the free or the monotone fit."""
        return self._fit_monotone(z, y) if self.monotone else self._fit_logistic(z, y)

    def _run_guard(self, oriented: Array, y: Array, groups: Sequence[Any] | None) -> dict[str, Any]:
        """Cross-validate the combination against the first score alone (see the module docstring)."""
        n_ok = int(y.sum())
        unit = "records"
        if groups is not None:
            codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
            n_groups = int(codes.max()) + 1
            unit = f"records, each of the {n_groups} groups kept in one fold"
        rule = (f"{GUARD_FOLDS}-fold stratified cross-validation x {GUARD_REPEATS} (seed {GUARD_SEED}) on the "
                f"calibration {unit}; the combination is kept if its held-out log loss is lower than the first "
                "score's by more than one standard error")
        if min(n_ok, y.size - n_ok) < GUARD_FOLDS:
            return {"kept": "first score", "rule": rule,
                    "reason": f"too few records to cross-validate: {n_ok} correct and {y.size - n_ok} incorrect "
                              f"(needs {GUARD_FOLDS} of each)"}
        if groups is not None and n_groups < 2 * GUARD_FOLDS:
            return {"kept": "first score", "rule": rule,
                    "reason": f"too few groups to cross-validate: {n_groups} (needs {2 * GUARD_FOLDS})"}
        loss = np.zeros((2, y.size))
        for train, test in self._folds(oriented, y, None if groups is None else codes):
            mean, scale = _location_scale(oriented[train])
            z_train, z_test = (oriented[train] - mean) / scale, (oriented[test] - mean) / scale
            for row, columns in enumerate((oriented.shape[1], 1)):
                w, b = self._fit_z(z_train[:, :columns], y[train])
                p = np.clip(_sigmoid(z_test[:, :columns] @ w + b), 1e-12, 1 - 1e-12)
                loss[row, test] += -(y[test] * np.log(p) + (1 - y[test]) * np.log1p(-p)) / GUARD_REPEATS
        difference = loss[0] - loss[1]
        mean_difference = float(difference.mean())
        if groups is None:
            se = float(difference.std(ddof=1) / np.sqrt(y.size))
        else:  # cluster-robust: the records of one group move together
            totals = np.bincount(codes, weights=difference - mean_difference)
            se = float(np.sqrt(n_groups / (n_groups - 1) * np.sum(totals ** 2)) / y.size)
        return {
            "kept": "combination" if mean_difference + se < 0 else "first score",
            "rule": rule,
            "cv_log_loss": {"combination": float(loss[0].mean()), "first score": float(loss[1].mean())},
            "difference": mean_difference,
            "se": se,
            **({} if groups is None else {"groups": n_groups}),
        }

    @staticmethod
    def _folds(oriented: Array, y: Array, codes: Any) -> Any:
        """The guard's (train, test) index pairs: stratified folds, repeated; whole groups with ``codes``."""
        if codes is None:
            from sklearn.model_selection import RepeatedStratifiedKFold

            yield from RepeatedStratifiedKFold(
                n_splits=GUARD_FOLDS, n_repeats=GUARD_REPEATS, random_state=GUARD_SEED).split(oriented, y)
            return
        from sklearn.model_selection import StratifiedGroupKFold

        for repeat in range(GUARD_REPEATS):
            folds = StratifiedGroupKFold(n_splits=GUARD_FOLDS, shuffle=True, random_state=GUARD_SEED + repeat)
            yield from folds.split(oriented, y, codes)

    def _fit_logistic(self, z: Array, y: Array) -> tuple[Array, float]:
        return _newton(z, y, float(self.C))

    def _fit_monotone(self, z: Array, y: Array) -> tuple[Array, float]:
        """The fit with w >= 0, by an active set: Newton's method on the weights left free; a negative
        one is fixed at 0, a fixed one is freed again where the objective would fall as it grows; done
        when the Karush-Kuhn-Tucker conditions hold (the optimum of this strictly convex problem)."""
        k, c = z.shape[1], float(self.C)
        free = list(range(k))
        for _ in range(4 * k + 4):
            w_free, b = _newton(z[:, free], y, c)
            if np.any(w_free < 0):
                free.pop(int(np.argmin(w_free)))
                continue
            w = np.zeros(k)
            w[free] = w_free
            slope = z.T @ (_sigmoid(z @ w + b) - y)  # d objective / d w_j where w_j = 0 (no penalty there)
            fixed = [j for j in range(k) if j not in free and slope[j] < -1e-9 * y.size]
            if not fixed:
                return w, b
            free = sorted(free + [min(fixed, key=lambda j: slope[j])])
        raise CalibrationError("the monotone combination did not converge")  # pragma: no cover

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
            "guard": self.guard_,
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
        self.guard_ = _saved_guard(state, self.coef_)
        if self.guard_ is not None and not self.guard:
            raise CalibrationError("field 'state.guard' holds a guard's decision, but 'params.guard' is false")
        if self.guard_ is None:  # fitted without the guard (asked for, or saved before it existed)
            self.guard = False

    @property
    def kept(self) -> str:
        """What the guard kept: ``combination``, ``first score``, or ``unguarded`` (fitted without it)."""
        self._check_fitted()
        return "unguarded" if self.guard_ is None else str(self.guard_["kept"])


def _saved_guard(state: dict[str, Any], coef: Array) -> dict[str, Any] | None:
    """``state.guard`` of a saved combination: null, or an object whose ``kept`` agrees with the weights."""
    guard = state.get("guard")
    if guard is None:
        return None
    if not isinstance(guard, dict) or guard.get("kept") not in _KEPT:
        raise CalibrationError(f"field 'state.guard' must be null or an object whose 'kept' is one of {_KEPT}")
    if guard["kept"] == "first score" and np.any(coef[1:] != 0):
        raise CalibrationError("field 'state.guard' says the first score was kept, but 'state.coef' weighs the others")
    return dict(guard)
