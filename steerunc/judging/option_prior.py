"""Correct a model's prior for one option: per-option bias with a temperature, fitted on labels.

Instruct models often favour one answer whatever the input (a moderation
prompt answered "Yes" far too often). :class:`OptionPrior` fits, on labelled
records of the calibration split,

    p'(y | z) = softmax(z / T + b)_y

over the option logits z of one prediction (``base`` or ``fused``): a
temperature T > 0 and a bias b_y per option (bias-corrected temperature
scaling, Alexandari et al. 2020; with two options it is a logistic map of the
Yes-minus-No logit). It minimises the mean negative log-likelihood of the
labels plus ``reg`` |b|^2 (which keeps b finite when an option never is the
label, and picks the b that sums to zero), by scipy's L-BFGS-B; no torch.

Unlike a calibrator, it changes the prediction itself: :meth:`correct`
returns the record with the corrected distribution, its argmax as the
prediction, correctness against the label, and the scores read from that
distribution recomputed (``msp`` and ``entropy`` for ``base``,
``fused_entropy`` for ``fused``; the views and the disagreement scores are
left as they are). Every record must carry the options the prior was fitted
on, no more and no fewer. The corrected prediction is named ``base+prior``
(or ``fused+prior``). Saved as JSON with its provenance; never pickle.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> truth = rng.normal(size=(400, 2))
>>> y = (rng.uniform(size=400) < 1 / (1 + np.exp(truth[:, 0] - truth[:, 1]))).astype(int)
>>> z = truth + np.array([2.0, 0.0])           # the model leans towards option 0
>>> prior = OptionPrior("base").fit(z, y, ["Yes", "No"])
>>> before, after = float(np.mean(z.argmax(1) == y)), float(np.mean(prior.predict(z) == y))
>>> after > before + 0.1
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc import __version__
from steerunc.judging.calibration_base import NotFittedError, fitted_on_from_json, fitted_on_to_json
from steerunc.errors import InputError
from steerunc.io import atomic_write, read_json_file
from steerunc.scored import TARGETS, ScoredFile

__all__ = [
    "PRIOR_KIND",
    "OptionPrior",
    "load_prior",
    "option_logits",
    "prior_from_dict",
    "prior_mismatch",
    "save_prior",
]

PRIOR_KIND = "steerunc.option_prior"  # a file-format tag, not a module path: files written before the move still load
_FORMAT = 1
Array = NDArray[np.float64]
#: scores read from the target's distribution, recomputed from the corrected one
_DERIVED = {"base": ("msp", "entropy"), "fused": ("fused_entropy",)}


def _log_softmax(t: Array) -> Array:
    m = t.max(axis=1, keepdims=True)
    return t - m - np.log(np.exp(t - m).sum(axis=1, keepdims=True))


def option_logits(data: Mapping[str, Any], target: str, path: str, line: int | None) -> dict[str, float]:
    """The option logits of one prediction (``logits`` / ``base_logits``), else the log of its
    probabilities (the same up to a constant, which a softmax ignores); InputError when neither."""
    tgt = TARGETS[target]
    for name, take_log in ((tgt.logits, False), (tgt.probs, True)):
        value = data.get(name)
        if not isinstance(value, dict) or not value:
            continue
        out = {}
        for option, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (take_log and v < 0):
                raise InputError(f"'{name}'[{option!r}] is not a finite number{' >= 0' if take_log else ''}: {v!r}",
                                 path=path, line=line)
            out[str(option)] = math.log(v) if take_log else float(v)
        if take_log and not all(math.isfinite(v) for v in out.values()):
            raise InputError(f"'{name}' gives an option probability 0; the prior needs '{tgt.logits}'",
                             path=path, line=line)
        return out
    raise InputError(f"no '{tgt.logits}' or '{tgt.probs}' object: the option prior needs them", path=path, line=line)


class OptionPrior:
    """softmax(z / T + b) over the option logits of ``target``; ``fit(logits, labels, options)``."""

    fitted_on_: frozenset[str] | None = None
    scoring_: dict[str, Any] | None = None

    def __init__(self, target: str = "base", reg: float = 1e-3) -> None:
        self.target = target
        self.reg = reg

    @property
    def name(self) -> str:
        """How reports name the corrected prediction: ``base+prior`` or ``fused+prior``."""
        return f"{self.target}+prior"

    def _check_fitted(self) -> None:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("this OptionPrior is not fitted yet: call fit(logits, labels, options) first")

    def fit(self, logits: ArrayLike, labels: ArrayLike, options: Sequence[str]) -> Self:
        """Fit T and b on an (n, C) matrix of option logits (columns in ``options`` order) and the index
        of each record's label; returns self."""
        from scipy import __version__ as sp_version
        from scipy.optimize import minimize

        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {self.target!r}")
        if not (isinstance(self.reg, (int, float)) and self.reg >= 0):
            raise ValueError(f"reg must be a number >= 0, got {self.reg!r}")
        z = np.asarray(logits, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64).ravel()
        if z.ndim != 2 or z.shape[1] != len(options) or len(options) < 2 or z.shape[0] != y.size or y.size == 0:
            raise ValueError(f"logits must be (n, {len(options)}) with one label per row, got {z.shape} and {y.size}")
        if not np.all(np.isfinite(z)) or y.min() < 0 or y.max() >= z.shape[1]:
            raise ValueError("logits must be finite and labels indices of options")
        onehot = np.eye(z.shape[1])[y]
        n, reg = y.size, float(self.reg)

        def objective(w: Array) -> tuple[float, Array]:
            temperature = np.exp(w[0])
            logp = _log_softmax(z / temperature + w[1:])
            residual = (np.exp(logp) - onehot) / n
            loss = -float(np.sum(logp * onehot)) / n + reg * float(w[1:] @ w[1:])
            grad_t = float(np.sum(residual * (-z / temperature)))
            return loss, np.r_[grad_t, residual.sum(axis=0) + 2 * reg * w[1:]]

        start = np.zeros(z.shape[1] + 1)
        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          bounds=[(-7.0, 7.0)] + [(None, None)] * z.shape[1],
                          options={"maxiter": 10_000, "ftol": 1e-14, "gtol": 1e-10})
        self.options_ = [str(o) for o in options]
        self.temperature_ = float(np.exp(result.x[0]))
        self.bias_ = np.asarray(result.x[1:], dtype=np.float64)
        self.n_samples_ = int(n)
        self.accuracy_before_ = float(np.mean(z.argmax(axis=1) == y))
        self.accuracy_after_ = float(np.mean(self.predict(z) == y))
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        self.fitter_ = f"scipy {sp_version} L-BFGS-B (NLL + {reg:g} |b|^2)"
        self.fitted_on_ = None
        self.scoring_ = None
        return self

    def predict_proba(self, logits: ArrayLike) -> Array:
        """Corrected option distributions softmax(z / T + b), one row per record."""
        self._check_fitted()
        z = np.atleast_2d(np.asarray(logits, dtype=np.float64))
        return np.exp(_log_softmax(z / self.temperature_ + self.bias_))

    def predict(self, logits: ArrayLike) -> NDArray[np.int64]:
        """Index of the corrected prediction, one per record."""
        return self.predict_proba(logits).argmax(axis=1)

    # -- records -------------------------------------------------------------------
    def correct(self, data: Mapping[str, Any], path: str = "<record>", line: int | None = None) -> dict[str, Any]:
        """The record with the target's prediction corrected; InputError when it lacks the options."""
        self._check_fitted()
        tgt = TARGETS[self.target]
        logits = option_logits(data, self.target, path, line)
        if sorted(logits) != sorted(self.options_):
            raise InputError(f"options {sorted(logits)} are not the {sorted(self.options_)} the option prior was "
                             "fitted on", path=path, line=line)
        z = np.array([[logits[o] for o in self.options_]])
        logp = _log_softmax(z / self.temperature_ + self.bias_)[0]
        p = np.exp(logp)
        out = dict(data)
        before = data.get(tgt.prediction)
        prediction = self.options_[int(p.argmax())]
        out[tgt.logits] = dict(zip(self.options_, logp.tolist()))
        out[tgt.probs] = dict(zip(self.options_, p.tolist()))
        out[tgt.prediction] = prediction
        label = data.get("label")
        if label is not None:
            out[tgt.correct] = str(label) == prediction
        elif tgt.correct in data and prediction != before:
            del out[tgt.correct]  # the given correctness was about the old prediction
        scores = data.get("scores")
        if isinstance(scores, dict):
            scores = dict(scores)
            entropy = float(-(p * logp).sum())
            derived = {"msp": 1.0 - float(p.max()), "entropy": entropy, "fused_entropy": entropy}
            for key in _DERIVED[self.target]:
                if key in scores:
                    scores[key] = derived[key]
            out["scores"] = scores
        out["prior"] = {"target": self.target, "corrected": self.name, "prediction_before": before}
        return out

    def correct_file(self, scored: ScoredFile) -> ScoredFile:
        """Every usable record of the file corrected (InputError naming file and line otherwise)."""
        from steerunc.io import Line
        from steerunc.scored import record_kind

        lines = [
            Line(ln.number, self.correct(ln.data, scored.path, ln.number), ln.error)
            if ln.data is not None and record_kind(ln.data) == "record"
            else ln
            for ln in scored.lines
        ]
        return ScoredFile(scored.path, lines, scored.counts)

    # -- JSON ----------------------------------------------------------------------
    def reference(self, source: str | None = None) -> dict[str, Any]:
        """What a calibrator fitted on corrected records keeps of this prior: a digest of its state."""
        self._check_fitted()
        state = {"target": self.target, "options": self.options_, "temperature": self.temperature_,
                 "bias": self.bias_.tolist()}
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        return {"digest": digest, "target": self.target, "source": source}

    def to_dict(self, source: str | None = None) -> dict[str, Any]:
        """JSON-ready description: the options, T, b and provenance."""
        self._check_fitted()
        return {
            "kind": PRIOR_KIND,
            "format": _FORMAT,
            "target": self.target,
            "options": self.options_,
            "params": {"reg": self.reg},
            "state": {"temperature": self.temperature_, "bias": dict(zip(self.options_, self.bias_.tolist()))},
            "provenance": {
                "n": self.n_samples_,
                "accuracy_before": self.accuracy_before_,
                "accuracy_after": self.accuracy_after_,
                "date": self.fitted_at_,
                "steerunc_version": __version__,
                "fitter": self.fitter_,
                "source": source,
                "fitted_on": fitted_on_to_json(self.fitted_on_),
                "scoring": self.scoring_,
            },
        }


def prior_mismatch(calibrator: Any, prior: OptionPrior | None) -> str | None:
    """Why the calibrator cannot be used with this option prior (or without one), or None: a calibrator
    fitted on corrected records must read records corrected by the same prior, and only then."""
    made = calibrator.prior_
    if made is None and prior is None:
        return None
    if made is None:
        return ("the calibrator was fitted on uncorrected records, not on records corrected by an option prior "
                "(drop --prior, or refit it with `steerunc calibrate --prior`)")
    if prior is None:
        return (f"the calibrator was fitted on records corrected by an option prior (digest {made.get('digest')}, "
                f"from {made.get('source')}): pass it with --prior")
    if prior.reference()["digest"] != made.get("digest"):
        return (f"the calibrator was fitted on records corrected by another option prior (digest {made.get('digest')},"
                f" from {made.get('source')}; this one is {prior.reference()['digest']})")
    return None


def prior_from_dict(data: Any, path: str | None = None) -> OptionPrior:
    """Rebuild a fitted prior from :meth:`OptionPrior.to_dict` output; InputError naming the field if malformed."""
    if not isinstance(data, dict) or data.get("kind") != PRIOR_KIND:
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"not a steerunc option prior (kind {str(repr(kind))[:60]}, expected {PRIOR_KIND!r})", path)
    try:
        if not isinstance(data.get("format"), int) or data["format"] > _FORMAT:
            raise ValueError(f"format {data.get('format')!r} is newer than this steerunc reads")
        target, options, state, prov = data["target"], data["options"], data["state"], data["provenance"]
        if target not in TARGETS:
            raise ValueError(f"field 'target' must be one of {sorted(TARGETS)}, got {str(repr(target))[:60]}")
        if not isinstance(options, list) or len(options) < 2 or len(set(map(str, options))) != len(options):
            raise ValueError("field 'options' must list at least two distinct options")
        temperature, bias = state["temperature"], state["bias"]
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(f"field 'state.temperature' must be a positive number, got {str(repr(temperature))[:60]}")
        if not isinstance(bias, dict) or sorted(map(str, bias)) != sorted(map(str, options)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bias.values()
        ):
            raise ValueError("field 'state.bias' must give a finite number for every option")
        reg = data.get("params", {}).get("reg", 1e-3)
        prior = OptionPrior(target, reg)
        prior.options_ = [str(o) for o in options]
        prior.temperature_ = float(temperature)
        prior.bias_ = np.array([float(bias[o]) for o in prior.options_])
        if not isinstance(prov, dict):
            raise ValueError("field 'provenance' must be an object")
        prior.n_samples_ = int(prov.get("n", 0))
        prior.accuracy_before_ = float(prov.get("accuracy_before", math.nan))
        prior.accuracy_after_ = float(prov.get("accuracy_after", math.nan))
        prior.fitted_at_ = str(prov.get("date"))
        prior.fitter_ = str(prov.get("fitter"))
        prior.fitted_on_ = fitted_on_from_json(prov.get("fitted_on"))
        scoring = prov.get("scoring")
        if scoring is not None and not isinstance(scoring, dict):
            raise ValueError("field 'provenance.scoring' must be an object or null")
        prior.scoring_ = scoring
    except KeyError as exc:
        raise InputError(f"malformed option prior: missing field {exc}", path) from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed option prior: {exc}", path) from exc
    return prior


def load_prior(source: str | dict[str, Any]) -> OptionPrior:
    """Load a prior from a JSON file written by :func:`save_prior` (or from its dict)."""
    if isinstance(source, dict):
        return prior_from_dict(source)
    return prior_from_dict(read_json_file(source, "option prior"), path=source)


def save_prior(prior: OptionPrior, path: str, source: str | None = None) -> None:
    """Write the prior as JSON, atomically."""
    text = json.dumps(prior.to_dict(source=source), indent=2, allow_nan=False)
    with atomic_write(path) as handle:
        handle.write(text + "\n")
