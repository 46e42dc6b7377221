"""Triage: accept a record automatically or send it to a person, by calibrated confidence.

A :class:`Router` holds a calibrator and a threshold theta: confidence >= theta
is accepted, anything else (lower confidence, an error record, a record that
cannot be scored) goes to review, with the reason. The threshold comes from a
review budget or a risk target with a guarantee (:mod:`steerunc.triage_bounds`)
and is saved with the calibrator as a policy JSON, so a pipeline applies the
same rule to new records::

    router = Router.from_policy("policy.json")
    decision = router.route(record)        # Decision(destination="accept", ...)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc import __version__
from steerunc.calibration import Calibrator, calibrator_from_dict
from steerunc.errors import InputError
from steerunc.io import atomic_write
from steerunc.scored import TARGETS, logits_matrix, record_kind, score_of
from steerunc.triage_bounds import RiskSelection, budget_threshold, risk_threshold

__all__ = ["POLICY_KIND", "Decision", "Router", "calibrated_confidence"]

POLICY_KIND = "steerunc.triage_policy"
_FORMAT = 1


def calibrated_confidence(
    calibrator: Calibrator, records: Sequence[tuple[int, Mapping[str, Any]]], path: str | None = None
) -> NDArray[np.float64]:
    """g(input) for usable records; InputError naming file and line when one lacks the calibrator's input."""
    if not records:
        return np.zeros(0)
    target = TARGETS[calibrator.target]
    if calibrator.input_kind == "logits":
        matrix, _, _ = logits_matrix([(ln, dict(d)) for ln, d in records], target, path or "<records>", labels=False)
        return calibrator.predict(matrix)
    values = [score_of(data, calibrator.score, path or "<records>", line) for line, data in records]
    return calibrator.predict(np.asarray(values, dtype=np.float64))


@dataclass(frozen=True)
class Decision:
    """Where one record goes and why."""

    destination: str  # "accept" or "review"
    confidence: float | None
    reason: str
    threshold: float | None = None

    @property
    def accepted(self) -> bool:
        return self.destination == "accept"

    def annotate(self, record: Mapping[str, Any] | None, line: int | None = None) -> dict[str, Any]:
        """The record with a ``triage`` object added (an unreadable line becomes ``{"line", "error"}``)."""
        base: dict[str, Any] = dict(record) if record is not None else {"line": line, "error": "unreadable line"}
        base["triage"] = {
            "decision": self.destination,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "reason": self.reason,
        }
        return base


class Router:
    """Routes records by calibrated confidence against a threshold (None: review everything)."""

    def __init__(
        self,
        calibrator: Calibrator,
        threshold: float | None,
        *,
        mode: str = "threshold",
        budget: float | None = None,
        guarantee: RiskSelection | dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number or None, got {threshold}")
        self.calibrator = calibrator
        self.threshold = threshold
        self.mode = mode
        self.budget = budget
        self.guarantee = guarantee.to_dict() if isinstance(guarantee, RiskSelection) else guarantee
        self.source = source

    # -- building ----------------------------------------------------------------
    @classmethod
    def for_budget(
        cls, calibrator: Calibrator, confidence: ArrayLike, budget: float, source: str | None = None
    ) -> Router:
        """Threshold sending at most ``budget`` of these confidences' records to review."""
        return cls(calibrator, budget_threshold(confidence, budget), mode="budget", budget=budget, source=source)

    @classmethod
    def for_risk(
        cls,
        calibrator: Calibrator,
        confidence: ArrayLike,
        correct: ArrayLike,
        max_risk: float,
        delta: float = 0.1,
        source: str | None = None,
    ) -> Router:
        """Threshold keeping the accepted error rate <= max_risk with probability >= 1 - delta."""
        selection = risk_threshold(confidence, correct, max_risk, delta)
        return cls(calibrator, selection.threshold, mode="max_risk", guarantee=selection, source=source)

    # -- policy JSON ---------------------------------------------------------------
    def to_policy(self) -> dict[str, Any]:
        """The rule as JSON: threshold, how it was chosen, and the calibrator itself."""
        return {
            "kind": POLICY_KIND,
            "format": _FORMAT,
            "mode": self.mode,
            "threshold": self.threshold,
            "budget": self.budget,
            "guarantee": self.guarantee,
            "calibrator": self.calibrator.to_dict(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "steerunc_version": __version__,
            "source": self.source,
        }

    def save_policy(self, path: str) -> None:
        """Write :meth:`to_policy` atomically."""
        text = json.dumps(self.to_policy(), indent=2, allow_nan=False)
        with atomic_write(path) as handle:
            handle.write(text + "\n")

    @classmethod
    def from_policy(cls, policy: str | dict[str, Any]) -> Router:
        """A router from a policy JSON file (or its dict); InputError naming the file when malformed."""
        path = policy if isinstance(policy, str) else None
        data: Any = policy
        if isinstance(policy, str):
            try:
                with open(policy, encoding="utf-8") as handle:
                    data = json.load(handle)
            except FileNotFoundError as exc:
                raise InputError("no such policy file", path=policy) from exc
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read policy JSON: {exc}", path=policy) from exc
        if not isinstance(data, dict) or data.get("kind") != POLICY_KIND:
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            hint = " (that is a calibrator: pass it as --calibrator)" if kind == "steerunc.calibrator" else ""
            raise InputError(f"not a triage policy (kind {kind!r}){hint}", path=path)
        threshold = data.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise InputError(f"policy threshold must be a number or null, got {threshold!r}", path=path)
        if "calibrator" not in data:
            raise InputError("policy has no calibrator", path=path)
        calibrator = calibrator_from_dict(data["calibrator"], path=path)
        return cls(
            calibrator,
            None if threshold is None else float(threshold),
            mode=str(data.get("mode", "threshold")),
            budget=data.get("budget"),
            guarantee=data.get("guarantee"),
            source=data.get("source"),
        )

    # -- routing -----------------------------------------------------------------
    def _decide(self, confidence: float) -> Decision:
        if self.threshold is None:
            why = "no threshold could be certified" if self.mode == "max_risk" else "the policy reviews everything"
            return Decision("review", confidence, f"{why}: every record goes to review", None)
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
            if self.calibrator.input_kind == "logits":
                logits_matrix([(0, dict(data or {}))], TARGETS[self.calibrator.target], "<record>", labels=False)
            else:
                score_of(data or {}, self.calibrator.score, "<record>", 0)
        except InputError as exc:
            return exc.message
        return None

    def route(self, record: Mapping[str, Any]) -> Decision:
        """Decide for one record; never raises on record content (problems go to review)."""
        return self.route_many([record])[0]

    def route_many(self, records: Sequence[Mapping[str, Any] | None], path: str | None = None) -> list[Decision]:
        """Decide for many records at once (one calibrator call); None stands for an unreadable line."""
        decisions: list[Decision | None] = [None] * len(records)
        good: list[tuple[int, Mapping[str, Any]]] = []
        for i, data in enumerate(records):
            problem = self._unscorable(data) or self._input_problem(data)
            if problem is None and data is not None:
                good.append((i, data))
            else:
                decisions[i] = Decision("review", None, problem or "cannot be scored", self.threshold)
        confidence = calibrated_confidence(self.calibrator, good, path)
        for (i, _), value in zip(good, confidence):
            decisions[i] = self._decide(float(value))
        return [d for d in decisions if d is not None]
