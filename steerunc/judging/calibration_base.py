"""The calibrator contract, shared by every method in :mod:`steerunc.judging.calibration`.

A calibrator follows scikit-learn's estimator contract without importing
scikit-learn at module level (it takes over a second to import): ``__init__``
only stores parameters, ``fit`` returns self, fitted state ends in ``_``,
``predict`` before ``fit`` raises :class:`NotFittedError`, and
``get_params``/``set_params`` make ``sklearn.base.clone`` work.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc import __version__
from steerunc.errors import SteeruncError
from steerunc.scored import RECORD_KEY_SCHEME, TARGETS, orientation_of

__all__ = [
    "FORMAT",
    "KIND",
    "CalibrationError",
    "Calibrator",
    "NotFittedError",
    "finite_array",
    "finite_number",
    "fitted_on_from_json",
    "fitted_on_to_json",
    "unit_map",
]

KIND = "steerunc.calibrator"
FORMAT = 1

C = TypeVar("C", bound="Calibrator")
Array = NDArray[np.float64]


class NotFittedError(SteeruncError, ValueError, AttributeError):
    """``predict`` was called before ``fit`` (same bases as scikit-learn's NotFittedError)."""


class CalibrationError(SteeruncError):
    """A calibrator cannot be fitted on the data given (e.g. no errors to learn from)."""


_ORIENTATIONS = ("uncertain", "confident")


def finite_number(state: dict[str, Any], key: str, low: float | None = None, high: float | None = None) -> float:
    """``state[key]`` of a saved calibrator as a finite float in [low, high]; ValueError naming the field."""
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"field 'state.{key}' must be a finite number, got {_short(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"field 'state.{key}' must lie in [{low}, {high}], got {value}")
    return float(value)


def finite_array(state: dict[str, Any], key: str, low: float | None = None, high: float | None = None) -> Array:
    """``state[key]`` of a saved calibrator as a 1-D array of finite numbers in [low, high]."""
    value = state[key]
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"field 'state.{key}' must be a list of numbers, got {_short(value)}")
    x = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"field 'state.{key}' holds NaN or infinite values")
    if (low is not None and np.any(x < low)) or (high is not None and np.any(x > high)):
        raise ValueError(f"field 'state.{key}' must hold values in [{low}, {high}]")
    return x


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(provenance: dict[str, Any], key: str) -> int:
    value = provenance[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field 'provenance.{key}' must be a count (an integer >= 0), got {_short(value)}")
    return value


def unit_map(x: Array, orientation: str) -> tuple[float, float]:
    """(scale, shift) of an affine map taking the oriented score x into [0, 1].

    A raw score already in [0, 1] keeps its meaning (1 - score for an
    uncertainty, the score itself for a confidence); any other is min-max
    scaled over the calibration data (a constant score maps to 0.5).

    >>> unit_map(np.array([-0.2, -0.9]), "uncertain"), unit_map(np.array([-3.0, -1.0]), "uncertain")
    ((1.0, 1.0), (0.5, 1.5))
    """
    raw = -x if orientation == "uncertain" else x
    if raw.min() >= 0.0 and raw.max() <= 1.0:
        return 1.0, (1.0 if orientation == "uncertain" else 0.0)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return 0.0, 0.5
    return 1.0 / (hi - lo), -lo / (hi - lo)


class Calibrator:
    """Maps a score to P(correct). Subclasses set ``method`` and implement ``_fit``/``_predict``/``_state``.

    ``_fit`` and ``_predict`` see the score *oriented*: higher = more sure
    (uncertainty scores are negated), so every method fits an increasing map.
    """

    method: ClassVar[str] = ""
    fitter_: str
    #: keys (:func:`steerunc.scored.record_keys`) of the records fitted on; None when not known. ``fit``
    #: sees only arrays, so it resets this to None; whoever holds the records sets it (``steerunc calibrate`` does)
    fitted_on_: frozenset[str] | None = None
    #: the scoring settings (the records' ``provenance``) of the records fitted on; None when not known
    scoring_: dict[str, Any] | None = None
    #: the option prior (:meth:`steerunc.judging.option_prior.OptionPrior.reference`) the records were corrected by
    #: before fitting; None when none was
    prior_: dict[str, Any] | None = None
    #: "score": 1-D scores; "logits": an (n, C) matrix of option logits
    input_kind: ClassVar[str] = "score"

    def __init__(self, score: str = "mutual_info", target: str = "fused", higher_means: str | None = None) -> None:
        self.score = score
        self.target = target
        self.higher_means = higher_means

    # -- scikit-learn contract -------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as in scikit-learn."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters, as in scikit-learn."""
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "fitted_at_")

    def __sklearn_tags__(self) -> Any:
        """Tags for scikit-learn >= 1.6 tools such as ``clone`` (imported only when they ask)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=True))

    @property
    def label(self) -> str:
        """How reports name this calibrator's confidence: ``score@method`` (``mutual_info@isotonic``)."""
        return f"{self.score}@{self.method}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_saved_params(self) -> None:
        """ValueError naming the field when a saved parameter is of the wrong kind or unknown
        (a calibrator file may say anything; subclasses add their own parameters)."""
        if not isinstance(self.score, str) or not self.score:
            raise ValueError(f"field 'params.score' must be a score name, got {_short(self.score)}")
        if not isinstance(self.target, str) or self.target not in TARGETS:
            raise ValueError(f"field 'params.target' must be one of {sorted(TARGETS)}, got {_short(self.target)}")
        if self.higher_means is not None and self.higher_means not in _ORIENTATIONS:
            raise ValueError(f"field 'params.higher_means' must be one of {_ORIENTATIONS} or null, "
                             f"got {_short(self.higher_means)}")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(score, correct) first")

    # -- fitting and predicting --------------------------------------------------
    def _validate_params(self) -> str:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        orientation = self.higher_means if self.higher_means is not None else orientation_of(self.score)
        if orientation not in ("uncertain", "confident"):
            raise ValueError(f"higher_means must be 'uncertain', 'confident' or None, got {orientation!r}")
        return orientation

    def _oriented(self, score: ArrayLike, name: str = "score") -> Array:
        x = np.asarray(score, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per record), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = int(np.argmin(np.isfinite(x)))
            raise ValueError(f"{name} holds NaN or infinite values (first at index {bad})")
        orientation = getattr(self, "orientation_", None) or self._validate_params()
        return -x if orientation == "uncertain" else x

    @staticmethod
    def _correct(correct: ArrayLike, n: int) -> Array:
        y = np.asarray(correct, dtype=np.float64).ravel()
        if y.size != n:
            raise ValueError(f"correct has {y.size} values but score has {n}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("correct must hold only 0/1 (or False/True)")
        n_ok = int(y.sum())
        if n_ok == 0 or n_ok == n:
            raise CalibrationError(f"calibration needs both correct and incorrect records; got {n_ok} correct of {n}")
        return y

    def fit(self, score: ArrayLike, correct: ArrayLike) -> Self:
        """Fit g so that g(score) estimates P(correct); returns self."""
        self.orientation_ = self._validate_params()
        x = self._oriented(score)
        y = self._correct(correct, x.size)
        self._fit(x, y)
        self._stamp(y.size, int(y.sum()))
        return self

    def _stamp(self, n: int, n_correct: int) -> None:
        """Record what every fit records: sizes and the time (marks the calibrator fitted)."""
        self.n_samples_ = int(n)
        self.n_correct_ = int(n_correct)
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        self.fitted_on_ = None
        self.scoring_ = None
        self.prior_ = None

    def predict(self, score: ArrayLike) -> Array:
        """Calibrated confidence P(correct) in [0, 1], one per score."""
        self._check_fitted()
        return np.clip(self._predict(self._oriented(score)), 0.0, 1.0)

    def _fit(self, x: Array, y: Array) -> None:
        raise NotImplementedError

    def _predict(self, x: Array) -> Array:
        raise NotImplementedError

    # -- JSON ------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """Fitted state as JSON-ready values (subclasses)."""
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def to_dict(self, source: str | None = None) -> dict[str, Any]:
        """JSON-ready description: parameters, fitted state and provenance; no pickle."""
        self._check_fitted()
        return {
            "kind": KIND,
            "format": FORMAT,
            "method": self.method,
            "params": self.get_params(),
            "state": {"orientation": self.orientation_, **self._state()},
            "provenance": {
                "score": self.score,
                "target": self.target,
                "method": self.method,
                "n": self.n_samples_,
                "n_correct": self.n_correct_,
                "date": self.fitted_at_,
                "steerunc_version": __version__,
                "fitter": getattr(self, "fitter_", None),
                "source": source,
                "fitted_on": fitted_on_to_json(self.fitted_on_),
                "scoring": self.scoring_,
                "prior": self.prior_,
            },
        }

    @classmethod
    def _from_parts(cls, params: dict[str, Any], state: dict[str, Any], provenance: dict[str, Any]) -> Self:
        unknown = sorted(set(params) - set(cls._param_names()))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(f'params.{u}' for u in map(str, unknown))}")
        obj = cls(**params)
        obj._check_saved_params()
        orientation = state["orientation"]
        if not isinstance(orientation, str) or orientation not in _ORIENTATIONS:
            raise ValueError(f"field 'state.orientation' must be one of {_ORIENTATIONS}, got {_short(orientation)}")
        obj.orientation_ = orientation
        obj._set_state(state)
        obj.n_samples_ = _count(provenance, "n")
        obj.n_correct_ = _count(provenance, "n_correct")
        obj.fitted_at_ = str(provenance["date"])
        obj.fitter_ = str(provenance.get("fitter"))
        obj.fitted_on_ = fitted_on_from_json(provenance.get("fitted_on"))
        obj.scoring_ = _object_or_none(provenance, "scoring")
        obj.prior_ = _object_or_none(provenance, "prior")
        return obj


def _object_or_none(provenance: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = provenance.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"field 'provenance.{key}' must be an object or null, got {_short(value)}")
    return None if value is None else dict(value)


def fitted_on_to_json(keys: frozenset[str] | None) -> dict[str, Any] | None:
    """The ``fitted_on`` provenance field: the key scheme, the count and the sorted keys (None: not known)."""
    return None if keys is None else {"by": RECORD_KEY_SCHEME, "n": len(keys), "keys": sorted(keys)}


def fitted_on_from_json(value: Any) -> frozenset[str] | None:
    """The record keys a saved calibrator was fitted on; None when absent (saved before steerunc kept
    them, or fitted without records) or made by another key scheme."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"field 'provenance.fitted_on' must be an object or null, got {_short(value)}")
    keys = value["keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("field 'provenance.fitted_on.keys' must be a list of strings")
    return frozenset(keys) if value.get("by") == RECORD_KEY_SCHEME else None
