"""Input records, scored records and error records, and their JSON forms.

``record_from_json`` is the single place where an input line is validated: it
says what was expected and what came, and never lets a bad record through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerunc.errors import InputError

__all__ = ["Record", "ScoredRecord", "ErrorRecord", "record_from_json"]


@dataclass
class Record:
    """One input item.

    ``options`` makes it a classification record (scored at the last position);
    ``continuation`` makes it a per-token record; with neither, the next-token
    distribution over the whole vocabulary is scored.
    """

    text: str
    id: str | None = None
    options: list[str] | None = None
    label: str | None = None
    continuation: str | None = None
    human_probs: dict[str, float] | None = None
    line: int | None = None

    @property
    def mode(self) -> str:
        if self.continuation is not None:
            return "continuation"
        return "options" if self.options else "next_token"


@dataclass
class ScoredRecord:
    """What ``Scorer`` returns for one record; ``to_json`` is the output line."""

    id: str | None
    mode: str
    prediction: str | None
    probs: dict[str, float] | None
    base_prediction: str | None
    base_probs: dict[str, float] | None
    scores: dict[str, float]
    views: dict[str, dict[str, Any]]
    logits: dict[str, float] | None = None
    base_logits: dict[str, float] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    human_probs: dict[str, float] | None = None
    tokens: list[dict[str, Any]] | None = None
    score_aggregates: dict[str, dict[str, float]] | None = None
    truncated: int = 0
    line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else self.prediction == self.label

    @property
    def base_correct(self) -> bool | None:
        return None if self.label is None else self.base_prediction == self.label

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.line is not None:
            out["line"] = self.line
        out.update(
            mode=self.mode,
            prediction=self.prediction,
            probs=self.probs,
            base_prediction=self.base_prediction,
            base_probs=self.base_probs,
        )
        if self.logits is not None:
            out["logits"] = self.logits
            out["base_logits"] = self.base_logits
        out["scores"] = self.scores
        out["views"] = self.views
        out["weights"] = self.weights
        if self.label is not None:
            out.update(label=self.label, correct=self.correct, base_correct=self.base_correct)
        if self.human_probs is not None:
            out["human_probs"] = self.human_probs
        if self.tokens is not None:
            out["tokens"] = self.tokens
            out["score_aggregates"] = self.score_aggregates
        if self.truncated:
            out["truncated"] = self.truncated
        out.update(self.extra)
        return out


@dataclass
class ErrorRecord:
    """An input line that could not be scored; it still yields an output line."""

    line: int | None
    error: str
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["line"] = self.line
        out["error"] = self.error
        return out


def _string_list(value: Any, name: str, line: int | None) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"'{name}' must be a non-empty list of non-empty strings, got {value!r}", line=line)
    if len(set(value)) != len(value):
        raise InputError(f"'{name}' has duplicates: {value!r}", line=line)
    return list(value)


def record_from_json(
    data: dict[str, Any], line: int | None = None, default_options: list[str] | None = None
) -> Record:
    """Validate one parsed input line and build a :class:`Record`.

    >>> record_from_json({"id": "a", "text": "Hi", "options": ["No", "Yes"], "label": "Yes"}).mode
    'options'
    >>> record_from_json({"text": ""})
    Traceback (most recent call last):
    ...
    steerunc.errors.InputError: 'text' is empty
    """
    raw_id = data.get("id")
    rid = None if raw_id is None else str(raw_id)
    if "text" not in data:
        raise InputError("missing 'text'", line=line)
    text = data["text"]
    if not isinstance(text, str):
        raise InputError(f"'text' must be a string, got {type(text).__name__}", line=line)
    if not text.strip():
        raise InputError("'text' is empty", line=line)
    continuation = data.get("continuation")
    if continuation is not None and (not isinstance(continuation, str) or not continuation):
        raise InputError("'continuation' must be a non-empty string", line=line)
    options = data.get("options")
    if options is not None:
        options = _string_list(options, "options", line)
    elif continuation is None and default_options:
        options = list(default_options)
    if options is not None and len(options) < 2:
        # one option is a certainty by construction: every uncertainty would be 0 and
        # triage would accept the record automatically
        raise InputError(f"'options' needs at least two distinct options, got {options!r}", line=line)
    label = data.get("label")
    if label is not None:
        label = str(label)
        if options is None:
            raise InputError(f"'label' {label!r} given but the record has no 'options'", line=line)
        if label not in options:
            raise InputError(f"unknown label {label!r}: not one of the options {options}", line=line)
    human = data.get("human_probs")
    if human is not None:
        if not isinstance(human, dict) or options is None or set(human) - set(options):
            raise InputError(f"'human_probs' must map options {options} to probabilities", line=line)
        human = {k: float(v) for k, v in human.items()}
    return Record(
        text=text, id=rid, options=options, label=label, continuation=continuation,
        human_probs=human, line=line,
    )
