"""Triage: accept a record automatically or send it to a person, by calibrated confidence.

A :class:`Router` holds a calibrator and a threshold theta: confidence >= theta
is accepted, anything else (lower confidence, an error record, a record that
cannot be scored) goes to review, with the reason. The threshold comes from a
review budget or a risk target with a guarantee (:mod:`steerunc.judging.triage_bounds`).
A budget also sets a ``tie_threshold`` on the raw score (:func:`raw_certainty`):
a record whose confidence equals theta is accepted only if its raw score is at
least that, so ties in a step-function calibrator still use the budget. Both
are saved with the calibrator as a policy JSON, so a pipeline applies the
same rule to new records::

    router = Router.from_policy("policy.json")
    decision = router.route(record)        # Decision(destination="accept", ...)

With an option prior (:mod:`steerunc.judging.option_prior`), the router first corrects
each record's prediction and the calibrator reads the corrected record; the
decision carries it (``Decision.corrected``), and that is what the triage
outputs hold. A policy saves the prior with the calibrator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from steerunc import __version__
from steerunc.judging.calibration import Calibrator, calibrator_from_dict
from steerunc.judging.confidence import (
    calibrated_confidence,
    calibrator_input,
    confidence_warning,
    raw_certainty,
    raw_name,
)
from steerunc.errors import InputError
from steerunc.io import atomic_write, read_json_file
from steerunc.judging.option_prior import OptionPrior, prior_from_dict, prior_mismatch
from steerunc.judging.provenance import check_disjoint
from steerunc.scored import record_kind
from steerunc.judging.triage_bounds import RiskSelection, budget_cut, budget_threshold, risk_threshold

__all__ = [
    "POLICY_KIND",
    "Decision",
    "Router",
    "calibrated_confidence",
    "check_disjoint",
    "prior_mismatch",
    "confidence_warning",
    "raw_certainty",
    "raw_name",
]

POLICY_KIND = "steerunc.triage_policy"
_FORMAT = 1
#: how a policy's threshold was chosen
_MODES = ("threshold", "budget", "max_risk")


def _finite(value: Any) -> bool:
    """A JSON number that is finite (not a boolean, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _guarantee(value: Any, path: str | None) -> dict[str, Any] | None:
    """A saved policy's ``guarantee`` (what --max-risk certified), checked field by field; None if absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"policy field 'guarantee' must be an object or null, got {_short(value)}", path)
    v: Any
    for key in ("max_risk", "delta"):
        v = value.get(key)
        if not (_finite(v) and 0 < v < 1):
            raise InputError(f"policy field 'guarantee.{key}' must be a number in (0, 1), got {_short(v)}", path)
    for key in ("n_calibration", "n_accepted", "errors_accepted"):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"policy field 'guarantee.{key}' must be a count (an integer >= 0), got {_short(v)}", path)
    sample: Any = value.get("sample")
    if sample is not None and not isinstance(sample, str):
        raise InputError(f"policy field 'guarantee.sample' must be a string or null, got {_short(sample)}", path)
    bound: Any = value.get("risk_upper_bound")
    if bound is not None and not (_finite(bound) and 0 <= bound <= 1):
        raise InputError(
            f"policy field 'guarantee.risk_upper_bound' must be a number in [0, 1] or null, got {_short(bound)}", path
        )
    return value


@dataclass(frozen=True)
class Decision:
    """Where one record goes and why."""

    destination: str  # "accept" or "review"
    confidence: float | None
    reason: str
    threshold: float | None = None
    #: the record as the router's option prior corrected it (None without a prior, or when it could not)
    corrected: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return self.destination == "accept"

    def annotate(self, record: Mapping[str, Any] | None, line: int | None = None) -> dict[str, Any]:
        """The record (as corrected by the option prior, if any) with a ``triage`` object added (an
        unreadable line becomes ``{"line", "error"}``)."""
        if self.corrected is not None:
            record = self.corrected
        base: dict[str, Any] = dict(record) if record is not None else {"line": line, "error": "unreadable line"}
        base["triage"] = {
            "decision": self.destination,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "reason": self.reason,
        }
        return base


class Router:
    """Routes records by calibrated confidence against a threshold (None: review everything).

    With a ``tie_threshold`` (chosen by a budget), a record whose confidence
    equals the threshold is accepted only if its raw score (:func:`raw_certainty`)
    is at least the tie threshold: accepted iff confidence > threshold, or
    confidence == threshold and raw >= tie_threshold. Without one, confidence
    >= threshold is accepted. With an option ``prior``, each record's prediction is
    corrected first and the calibrator reads the corrected record.
    """

    def __init__(
        self,
        calibrator: Calibrator,
        threshold: float | None,
        *,
        mode: str = "threshold",
        budget: float | None = None,
        guarantee: RiskSelection | dict[str, Any] | None = None,
        source: str | None = None,
        tie_threshold: float | None = None,
        prior: OptionPrior | None = None,
    ) -> None:
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number or None, got {threshold}")
        if tie_threshold is not None and (threshold is None or not np.isfinite(tie_threshold)):
            raise ValueError(f"tie_threshold must be a finite number, with a threshold, got {tie_threshold}")
        mismatch = prior_mismatch(calibrator, prior)
        if mismatch:
            raise ValueError(mismatch)
        self.calibrator = calibrator
        self.threshold = threshold
        self.tie_threshold = tie_threshold
        self.mode = mode
        self.budget = budget
        self.guarantee = guarantee.to_dict() if isinstance(guarantee, RiskSelection) else guarantee
        self.source = source
        self.prior = prior

    # -- building ----------------------------------------------------------------
    @classmethod
    def for_budget(
        cls,
        calibrator: Calibrator,
        confidence: ArrayLike,
        budget: float,
        source: str | None = None,
        raw: ArrayLike | None = None,
        prior: OptionPrior | None = None,
    ) -> Router:
        """Threshold sending ``floor(budget * N)`` of these confidences' records to review.

        With ``raw`` (:func:`raw_certainty` of the same records), ties in the
        confidence are broken by it (a ``tie_threshold``) and the router reviews
        exactly that many of them, fewer only where records tie with the first
        accepted one on both (:func:`~steerunc.judging.triage_bounds.budget_cut`; the
        CLI sends the earliest of those to review too). Without ``raw``, ties
        at the threshold are all accepted: at most that many are reviewed.
        """
        if raw is None:
            threshold = budget_threshold(confidence, budget)
            return cls(calibrator, threshold, mode="budget", budget=budget, source=source, prior=prior)
        n = np.asarray(confidence).size
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"budget must lie in [0, 1], got {budget}")
        cut = budget_cut(confidence, raw, math.floor(budget * n + 1e-9))
        return cls.at_cut(calibrator, cut, budget, source, prior)

    @classmethod
    def at_cut(
        cls, calibrator: Calibrator, cut: Any, budget: float, source: str | None = None, prior: Any = None
    ) -> "Router":
        """The budget router whose threshold (and tie-break) is ``cut``, a :func:`budget_cut` result."""
        return cls(calibrator, cut.threshold, mode="budget", budget=budget, source=source,
                   tie_threshold=cut.tie_threshold, prior=prior)

    @classmethod
    def for_risk(
        cls,
        calibrator: Calibrator,
        confidence: ArrayLike,
        correct: ArrayLike,
        max_risk: float,
        delta: float = 0.1,
        source: str | None = None,
        prior: OptionPrior | None = None,
        sample: str | None = None,
    ) -> Router:
        """Threshold keeping the accepted error rate <= max_risk with probability >= 1 - delta
        (``sample``: how the records were chosen, where not all were used; kept in the guarantee)."""
        selection = replace(risk_threshold(confidence, correct, max_risk, delta), sample=sample)
        return cls(calibrator, selection.threshold, mode="max_risk", guarantee=selection, source=source, prior=prior)

    # -- policy JSON ---------------------------------------------------------------
    def to_policy(self) -> dict[str, Any]:
        """The rule as JSON: threshold, how it was chosen, and the calibrator itself."""
        return {
            "kind": POLICY_KIND,
            "format": _FORMAT,
            "mode": self.mode,
            "threshold": self.threshold,
            "tie_threshold": self.tie_threshold,
            "budget": self.budget,
            "guarantee": self.guarantee,
            "calibrator": self.calibrator.to_dict(),
            "prior": None if self.prior is None else self.prior.to_dict(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "steerunc_version": __version__,
            "source": self.source,
        }

    def save_policy(self, path: str) -> None:
        """Write :meth:`to_policy` atomically."""
        text = self.policy_text()
        with atomic_write(path) as handle:
            handle.write(text)

    @classmethod
    def from_policy(cls, policy: str | dict[str, Any]) -> Router:
        """A router from a policy JSON file (or its dict); InputError naming the file when malformed."""
        path = policy if isinstance(policy, str) else None
        data: Any = policy
        if isinstance(policy, str):
            data = read_json_file(policy, "policy")
        if not isinstance(data, dict) or data.get("kind") != POLICY_KIND:
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            hint = " (that is a calibrator: pass it as --calibrator)" if kind == "steerunc.calibrator" else ""
            raise InputError(f"not a triage policy (kind {kind!r}){hint}", path=path)
        threshold = data.get("threshold")
        if threshold is not None and not _finite(threshold):
            raise InputError(f"policy field 'threshold' must be a finite number or null, got {_short(threshold)}", path)
        tie = data.get("tie_threshold")  # absent in older policies: confidence >= threshold is accepted
        if tie is not None and (not _finite(tie) or threshold is None):
            raise InputError(
                f"policy field 'tie_threshold' must be a finite number (with a threshold) or null, got {_short(tie)}",
                path,
            )
        mode = data.get("mode", "threshold")
        if not isinstance(mode, str) or mode not in _MODES:
            raise InputError(f"policy field 'mode' must be one of {', '.join(_MODES)}, got {_short(mode)}", path)
        budget = data.get("budget")
        if budget is not None and not (_finite(budget) and 0 <= budget <= 1):
            raise InputError(f"policy field 'budget' must be a number in [0, 1] or null, got {_short(budget)}", path)
        source = data.get("source")
        if source is not None and not isinstance(source, str):
            raise InputError(f"policy field 'source' must be a string or null, got {_short(source)}", path)
        guarantee = _guarantee(data.get("guarantee"), path)
        if "calibrator" not in data:
            raise InputError("policy has no calibrator (field 'calibrator')", path=path)
        calibrator = calibrator_from_dict(data["calibrator"], path=path)
        prior = None if data.get("prior") is None else prior_from_dict(data["prior"], path=path)
        mismatch = prior_mismatch(calibrator, prior)
        if mismatch:
            raise InputError(f"policy field 'prior': {mismatch}", path=path)
        return cls(
            calibrator,
            None if threshold is None else float(threshold),
            mode=mode,
            budget=None if budget is None else float(budget),
            guarantee=guarantee,
            source=source,
            tie_threshold=None if tie is None else float(tie),
            prior=prior,
        )

    def policy_text(self) -> str:
        """:meth:`to_policy` as the JSON text :meth:`save_policy` writes (no NaN: InputError if any)."""
        try:
            return json.dumps(self.to_policy(), indent=2, allow_nan=False) + "\n"
        except ValueError as exc:
            raise InputError(f"the policy cannot be saved as JSON: {exc}") from exc

    # -- routing -----------------------------------------------------------------
    def _decide(self, confidence: float, raw: float | None = None) -> Decision:
        if self.threshold is None:
            why = "no threshold could be certified" if self.mode == "max_risk" else "the policy reviews everything"
            return Decision("review", confidence, f"{why}: every record goes to review", None)
        if self.tie_threshold is not None and confidence == self.threshold and raw is not None:
            name = raw_name(self.calibrator)
            if raw >= self.tie_threshold:
                reason = (
                    f"confidence {confidence:.4f} = threshold {self.threshold:.4f}, tie broken by raw score "
                    f"{name} {raw:.6g} >= {self.tie_threshold:.6g}"
                )
                return Decision("accept", confidence, reason, self.threshold)
            reason = (
                f"confidence {confidence:.4f} = threshold {self.threshold:.4f}, tie broken by raw score "
                f"{name} {raw:.6g} < {self.tie_threshold:.6g}"
            )
            return Decision("review", confidence, reason, self.threshold)
        if confidence >= self.threshold:
            reason = f"confidence {confidence:.4f} >= threshold {self.threshold:.4f}"
            return Decision("accept", confidence, reason, self.threshold)
        reason = f"confidence {confidence:.4f} < threshold {self.threshold:.4f}"
        return Decision("review", confidence, reason, self.threshold)

    def _unscorable(self, data: Mapping[str, Any] | None) -> str | None:
        kind = record_kind(data)
        if kind == "malformed":
            return "unreadable line: review by hand"
        if kind == "error":
            return f"error record: {data.get('error') if data else ''}"
        if kind == "continuation":
            return "continuation record: no prediction to accept"
        return None

    def _input_problem(self, data: Mapping[str, Any] | None) -> str | None:
        """Why the calibrator cannot read this record (missing or NaN score, no logits), or None."""
        try:
            calibrator_input(self.calibrator, [(0, data or {})], "<record>")
        except InputError as exc:
            return exc.message
        return None

    def _corrected(self, data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The record as the option prior corrects it, or why it cannot be."""
        if self.prior is None:
            return None, None
        try:
            return self.prior.correct(data), None
        except InputError as exc:
            return None, f"the option prior cannot correct it: {exc.message}"

    def route(self, record: Mapping[str, Any] | Any) -> Decision:
        """Decide for one record (a dict, or anything with ``to_json()`` such as a
        :class:`~steerunc.records.ScoredRecord`); never raises on record content (problems go to review)."""
        if not isinstance(record, Mapping) and callable(getattr(record, "to_json", None)):
            record = record.to_json()
        return self.route_many([record])[0]

    def route_many(self, records: Sequence[Mapping[str, Any] | None], path: str | None = None) -> list[Decision]:
        """Decide for many records at once (one calibrator call); None stands for an unreadable line.
        Records the option prior (if any) cannot correct go to review, with the reason."""
        decisions: list[Decision | None] = [None] * len(records)
        good: list[tuple[int, Mapping[str, Any]]] = []
        fixed: list[dict[str, Any] | None] = []
        for i, data in enumerate(records):
            problem = self._unscorable(data)
            corrected = None
            if problem is None and data is not None:
                corrected, problem = self._corrected(data)
                problem = problem or self._input_problem(corrected if corrected is not None else data)
            if problem is None and data is not None:
                good.append((i, corrected if corrected is not None else data))
                fixed.append(corrected)
            else:
                decisions[i] = Decision("review", None, problem or "cannot be scored", self.threshold)
        confidence = calibrated_confidence(self.calibrator, good, path)
        raw: list[float | None] = [None] * len(good)
        if self.tie_threshold is not None:
            raw = [float(v) for v in raw_certainty(self.calibrator, good, path)]
        for (i, _), value, r, corrected in zip(good, confidence, raw, fixed):
            decision = self._decide(float(value), r)
            if corrected is not None:
                decision = Decision(decision.destination, decision.confidence, decision.reason, decision.threshold,
                                    corrected)
            decisions[i] = decision
        return [d for d in decisions if d is not None]
