"""Calibrators: map a score (or the option logits) to P(correct), saved as JSON.

Five methods, all with scikit-learn's estimator contract (see
:mod:`steerunc.judging.calibration_base`):

============ ============================================================ ==================
method       map                                                          fitted by
============ ============================================================ ==================
isotonic     monotone step function (decreasing in an uncertainty)         scikit-learn
histogram    mean correctness in equal-mass (or equal-width) score bins   NumPy
platt        sigmoid(a x + b), Platt's targets                            scikit-learn
beta         sigmoid(a ln z - b ln(1 - z) + c)                            netcal, checked
temperature  max softmax(logits / T)                                      netcal, checked
combined     sigmoid(w . z + b) over several scores z, L2; ``monotone``: w>=0 scikit-learn / scipy
============ ============================================================ ==================

``make_calibrator("logistic", scores=[...])`` (or ``"monotone"``) combines
several scores (:mod:`steerunc.judging.calibration_combined`); ``"logistic"`` with one
score is Platt scaling.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> u = rng.uniform(0, 1, 400); ok = rng.uniform(size=400) < 1 - 0.8 * u
>>> cal = make_calibrator("isotonic", score="mutual_info").fit(u, ok)
>>> conf = cal.predict([0.05, 0.95]); bool(conf[0] > conf[1])
True
>>> load_calibrator(cal.to_dict()).predict([0.05, 0.95]).tolist() == conf.tolist()
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from steerunc.judging.calibration_base import (
    FORMAT,
    KIND,
    Array,
    CalibrationError,
    Calibrator,
    NotFittedError,
    finite_array,
    finite_number,
    unit_map,
)
from steerunc.judging.calibration_combined import CombinedCalibrator
from steerunc.judging.calibration_scaling import BetaCalibrator, PlattCalibrator, TemperatureScaling
from steerunc.errors import InputError
from steerunc.io import atomic_write, read_json_file

__all__ = [
    "METHODS",
    "BetaCalibrator",
    "COMBINED_METHODS",
    "CalibrationError",
    "Calibrator",
    "CombinedCalibrator",
    "HistogramBinning",
    "IsotonicCalibrator",
    "NotFittedError",
    "PlattCalibrator",
    "TemperatureScaling",
    "calibrator_from_dict",
    "load_calibrator",
    "make_calibrator",
    "save_calibrator",
]


class IsotonicCalibrator(Calibrator):
    """Isotonic regression (scikit-learn), increasing in the oriented score; linear between thresholds."""

    method: ClassVar[str] = "isotonic"

    def _fit(self, x: Array, y: Array) -> None:
        from sklearn import __version__ as sk_version
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
        self.X_thresholds_ = np.asarray(model.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(model.y_thresholds_, dtype=np.float64)
        self.fitter_ = f"scikit-learn {sk_version} IsotonicRegression"

    def _predict(self, x: Array) -> Array:
        return np.interp(x, self.X_thresholds_, self.y_thresholds_)

    def _state(self) -> dict[str, Any]:
        return {"X_thresholds": self.X_thresholds_.tolist(), "y_thresholds": self.y_thresholds_.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        x = finite_array(state, "X_thresholds")
        y = finite_array(state, "y_thresholds", 0.0, 1.0)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0 or np.any(np.diff(x) < 0):
            raise CalibrationError(
                "fields 'state.X_thresholds' and 'state.y_thresholds' must be equally long, non-empty, X increasing"
            )
        self.X_thresholds_, self.y_thresholds_ = x, y


class HistogramBinning(Calibrator):
    """Histogram binning: P(correct) = accuracy of the calibration records in the score's bin.

    ``strategy="quantile"`` (default) cuts equal-mass bins, which suits skewed
    scores such as mutual information; ``"uniform"`` cuts equal-width bins of
    the score mapped into [0, 1] (as netcal's HistogramBinning does for
    confidences). Bins are [a, b), the last closed; an empty bin takes the value
    of its nearest non-empty neighbour.
    """

    method: ClassVar[str] = "histogram"

    def __init__(
        self,
        score: str = "mutual_info",
        target: str = "fused",
        higher_means: str | None = None,
        n_bins: int = 10,
        strategy: str = "quantile",
    ) -> None:
        super().__init__(score, target, higher_means)
        self.n_bins = n_bins
        self.strategy = strategy

    def _check_saved_params(self) -> None:
        super()._check_saved_params()
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ValueError(f"field 'params.n_bins' must be a positive integer, got {self.n_bins!r}"[:200])
        if self.strategy not in ("quantile", "uniform"):
            raise ValueError(f"field 'params.strategy' must be 'quantile' or 'uniform', got {self.strategy!r}"[:200])

    def _index(self, x: Array) -> NDArray[np.intp]:
        z = np.clip(self.unit_scale_ * x + self.unit_shift_, 0.0, 1.0)
        return np.searchsorted(self.bin_edges_[1:-1], z, side="right")

    def _fit(self, x: Array, y: Array) -> None:
        if not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins!r}")
        self.unit_scale_, self.unit_shift_ = unit_map(x, self.orientation_)
        z = np.clip(self.unit_scale_ * x + self.unit_shift_, 0.0, 1.0)
        if self.strategy == "uniform":
            edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        elif self.strategy == "quantile":
            edges = np.unique(np.quantile(z, np.linspace(0.0, 1.0, self.n_bins + 1)))
            edges[0], edges[-1] = 0.0, 1.0
            edges = np.unique(edges)
        else:
            raise ValueError(f"strategy must be 'quantile' or 'uniform', got {self.strategy!r}")
        self.bin_edges_ = edges
        index = self._index(x)
        counts = np.bincount(index, minlength=edges.size - 1)
        sums = np.bincount(index, weights=y, minlength=edges.size - 1)
        filled = np.flatnonzero(counts)
        nearest = filled[np.abs(np.arange(counts.size)[:, None] - filled[None, :]).argmin(axis=1)]
        self.bin_counts_ = counts
        self.bin_values_ = sums[nearest] / counts[nearest]
        self.fitter_ = "NumPy (steerunc histogram binning)"

    def _predict(self, x: Array) -> Array:
        return self.bin_values_[self._index(x)]

    def _state(self) -> dict[str, Any]:
        return {
            "bin_edges": self.bin_edges_.tolist(),
            "bin_values": self.bin_values_.tolist(),
            "bin_counts": self.bin_counts_.tolist(),
            "unit_scale": self.unit_scale_,
            "unit_shift": self.unit_shift_,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        edges = finite_array(state, "bin_edges")
        values = finite_array(state, "bin_values", 0.0, 1.0)
        if edges.ndim != 1 or values.shape != (edges.size - 1,) or values.size == 0:
            raise CalibrationError("fields 'state.bin_edges' and 'state.bin_values' need len(bin_edges) == len(bin_values) + 1 >= 2")
        if np.any(np.diff(edges) < 0):
            raise CalibrationError("field 'state.bin_edges' must be increasing")
        self.bin_edges_, self.bin_values_ = edges, values
        counts = state.get("bin_counts", [0] * values.size)
        if (
            not isinstance(counts, list)
            or len(counts) != values.size
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        ):
            raise CalibrationError("field 'state.bin_counts' must list one count (an integer >= 0) per bin")
        self.bin_counts_ = np.asarray(counts, dtype=np.int64)
        self.unit_scale_, self.unit_shift_ = finite_number(state, "unit_scale"), finite_number(state, "unit_shift")


#: method name -> calibrator class
METHODS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        IsotonicCalibrator,
        HistogramBinning,
        PlattCalibrator,
        BetaCalibrator,
        TemperatureScaling,
        CombinedCalibrator,
    )
}
_ALIASES = {"logistic": "platt", "histogram_binning": "histogram", "temperature_scaling": "temperature"}
#: methods that combine several scores: name -> monotone
COMBINED_METHODS: dict[str, bool] = {"logistic": False, "monotone": True}


def make_calibrator(
    method: str,
    score: str = "mutual_info",
    *,
    target: str = "fused",
    higher_means: str | None = None,
    scores: Sequence[str] | None = None,
    **params: Any,
) -> Calibrator:
    """An unfitted calibrator. ``higher_means`` defaults by score name ("confident" for the
    pseudo-scores fused_confidence/base_confidence, else "uncertain"). Temperature scaling
    ignores ``score`` and ``higher_means``: it works on the option logits. With ``scores``
    (several names), ``"logistic"`` or ``"monotone"`` combines them into one confidence
    (:class:`~steerunc.judging.calibration_combined.CombinedCalibrator`); ``"monotone"`` also takes one.

    >>> make_calibrator("logistic", "entropy")
    PlattCalibrator(score='entropy', target='fused', higher_means=None)
    >>> make_calibrator("monotone", scores=["msp", "flip_rate"]).label
    'msp+flip_rate@monotone'
    """
    if method == "monotone" or (scores is not None and len(scores) > 1):
        if method not in COMBINED_METHODS:
            raise ValueError(
                f"several scores combine with method 'logistic' or 'monotone', not {method!r}"
            )
        names = list(scores) if scores is not None else [score]
        return CombinedCalibrator(names, target=target, monotone=COMBINED_METHODS[method], **params)
    if scores is not None:
        (score,) = scores
    name = _ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if name == "temperature":
        return TemperatureScaling(target=target, **params)
    return METHODS[name](score=score, target=target, higher_means=higher_means, **params)


def calibrator_from_dict(data: Any, path: str | None = None) -> Calibrator:
    """Rebuild a fitted calibrator from :meth:`Calibrator.to_dict` output; InputError if malformed."""
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object describing a calibrator, got {type(data).__name__}", path=path)
    kind = data.get("kind")
    if kind == "steerunc.triage_policy":
        raise InputError("this is a triage policy, not a calibrator (pass it as --policy)", path=path)
    if kind != KIND:
        raise InputError(f"not a steerunc calibrator (kind is {kind!r}, expected {KIND!r})", path=path)
    if not isinstance(data.get("format"), int) or data["format"] > FORMAT:
        raise InputError(f"calibrator format {data.get('format')!r} is newer than this steerunc reads", path=path)
    method = data.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"unknown calibration method {str(repr(method))[:60]} (field 'method')", path=path)
    for part in ("params", "state", "provenance"):
        if part in data and not isinstance(data[part], dict):
            raise InputError(f"malformed {method} calibrator: field '{part}' must be an object", path=path)
    try:
        return METHODS[method]._from_parts(dict(data["params"]), dict(data["state"]), dict(data["provenance"]))
    except KeyError as exc:
        raise InputError(f"malformed {method} calibrator: missing {exc}", path=path) from exc
    except (TypeError, ValueError, CalibrationError) as exc:
        raise InputError(f"malformed {method} calibrator: {exc}", path=path) from exc


def load_calibrator(source: str | dict[str, Any]) -> Calibrator:
    """Load a calibrator from a JSON file written by :func:`save_calibrator` (or from its dict)."""
    if isinstance(source, dict):
        return calibrator_from_dict(source)
    return calibrator_from_dict(read_json_file(source, "calibrator"), path=source)


def save_calibrator(calibrator: Calibrator, path: str, source: str | None = None) -> None:
    """Write the calibrator as JSON, atomically (a temporary file renamed into place)."""
    text = json.dumps(calibrator.to_dict(source=source), indent=2, allow_nan=False)
    with atomic_write(path) as handle:
        handle.write(text + "\n")
