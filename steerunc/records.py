"""Input records, scored records and error records, and their JSON forms.

``record_from_json`` is the single place where an input line is validated: it
says what was expected and what came, and never lets a bad record through.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steerunc.errors import InputError

__all__ = ["MAX_OPTIONS", "Record", "ScoredRecord", "ErrorRecord", "id_of", "record_from_json", "check_template", "chat_flag"]

#: where a prompt template puts a record's text
TEXT_SLOT = "{text}"

#: most options one record may have (each multi-token option is a row of its own in the forward pass)
MAX_OPTIONS = 256


@dataclass
class Record:
    """One input item.

    ``options`` makes it a classification record (scored at the last position);
    ``continuation`` makes it a per-token record; with neither, the next-token
    distribution over the whole vocabulary is scored.
    """

    text: str
    id: str | int | None = None  # as in the input: a JSON string or integer
    options: list[str] | None = None
    label: str | None = None
    continuation: str | None = None
    human_probs: dict[str, float] | None = None
    line: int | None = None
    #: read through the model's chat template (user turn = ``text``; steerunc/scoring/prompting.py);
    #: None: as the run says (``--chat``), else no
    chat: bool | None = None
    #: records sharing a group (e.g. one question asked about several countries) are not independent:
    #: the combined calibrator's guard keeps each group in one cross-validation fold
    group: str | None = None

    @property
    def mode(self) -> str:
        if self.continuation is not None:
            return "continuation"
        return "options" if self.options else "next_token"


@dataclass
class ScoredRecord:
    """What ``Scorer`` returns for one record; ``to_json`` is the output line."""

    id: str | int | None
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
    group: str | None = None
    tokens: list[dict[str, Any]] | None = None
    score_aggregates: dict[str, dict[str, float]] | None = None
    truncated: int = 0
    line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    top_view: dict[str, Any] | None = None  # {"name", "delta"}: the view that moved P(base prediction) most
    provenance: dict[str, Any] | None = None  # the scoring settings (Scorer.provenance)

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
        if self.top_view is not None:
            out["top_view"] = self.top_view
        if self.label is not None:
            out.update(label=self.label, correct=self.correct, base_correct=self.base_correct)
        if self.human_probs is not None:
            out["human_probs"] = self.human_probs
        if self.group is not None:
            out["group"] = self.group
        if self.tokens is not None:
            out["tokens"] = self.tokens
            out["score_aggregates"] = self.score_aggregates
        if self.truncated:
            out["truncated"] = self.truncated
        out.update(self.extra)
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out


@dataclass
class ErrorRecord:
    """An input line that could not be scored; it still yields an output line."""

    line: int | None
    error: str
    id: str | int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["line"] = self.line
        out["error"] = self.error
        return out


def chat_flag(data: Mapping[str, Any], line: int | None = None, path: str | None = None) -> bool | None:
    """A line's optional ``chat`` field (a record's, a pairs or an annotation line's): True, False
    or None when absent; anything else is an InputError naming the line."""
    chat = data.get("chat")
    if chat is not None and not isinstance(chat, bool):
        raise InputError(f"'chat' must be true or false, got {_short(chat)}", path=path, line=line)
    return chat


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value (JSON's null, true, false for those), cut to ``limit`` characters: error
    messages stay one short line."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    """A parsed value's JSON kind, for messages: 'true', 'the number 1.5', 'a list', 'an object', ..."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {_short(value, 30)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else type(value).__name__


def _unicode(value: str, name: str, line: int | None) -> str:
    """``value`` unless it holds a lone surrogate (possible from Python, or from a ``\\ud800`` escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"'{name}' is not valid Unicode: a lone surrogate \\u{ord(value[exc.start]):04x}", line=line
        ) from None
    return value


def id_of(data: dict[str, Any], line: int | None = None) -> str | int | None:
    """The record's ``id``, kept as its JSON type: a string or an integer (None when absent).

    >>> id_of({"id": 7}), id_of({"id": "a"}), id_of({})
    (7, 'a', None)
    >>> id_of({"id": True})
    Traceback (most recent call last):
    ...
    steerunc.errors.InputError: 'id' must be a string or an integer, got true
    """
    value = data.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"'id' must be a string or an integer, got {_json_type(value)}", line=line)
    return _unicode(value, "id", line) if isinstance(value, str) else value


def _string_list(value: Any, name: str, line: int | None) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"'{name}' must be a non-empty list of non-empty strings, got {_short(value)}", line=line)
    if len(value) > MAX_OPTIONS:
        raise InputError(f"'{name}' has {len(value)} entries, at most {MAX_OPTIONS} are scored", line=line)
    if len(set(value)) != len(value):
        raise InputError(f"'{name}' has duplicates: {_short(value)}", line=line)
    return [_unicode(v, name, line) for v in value]


def _human_probs(value: Any, options: list[str] | None, line: int | None) -> dict[str, float]:
    """Annotators' distribution over the options: finite numbers in [0, 1] with a positive sum."""
    if not isinstance(value, dict) or options is None or set(value) - set(options):
        raise InputError(f"'human_probs' must map options {options} to probabilities", line=line)
    probs: dict[str, float] = {}
    for key, p in value.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise InputError(
                f"'human_probs'[{_short(key, 40)}] must be a probability (a number in [0, 1]), got {_short(p, 40)}",
                line=line,
            )
        probs[key] = float(p)
    if not probs or sum(probs.values()) <= 0:
        raise InputError("'human_probs' must give some option a positive probability", line=line)
    return probs


def check_template(template: str) -> str:
    """``template`` if it has the ``{text}`` slot once, else a ValueError saying so."""
    if template.count(TEXT_SLOT) != 1:
        raise ValueError(f"a prompt template needs {TEXT_SLOT} exactly once (where each record's text goes), "
                         f"got {_short(template)!r}")
    return template


def record_from_json(
    data: dict[str, Any], line: int | None = None, default_options: list[str] | None = None,
    template: str | None = None,
) -> Record:
    """Validate one parsed input line and build a :class:`Record`.

    ``template`` (see :func:`check_template`) wraps the text: ``{text}`` is replaced by it and
    nothing else in either is interpreted, so braces in a comment are kept as they are.

    >>> record_from_json({"id": "a", "text": "Hi", "options": ["No", "Yes"], "label": "Yes"}).mode
    'options'
    >>> record_from_json({"text": "Nice."}, template='Comment: "{text}" Offensive? Answer:').text
    'Comment: "Nice." Offensive? Answer:'
    >>> record_from_json({"text": ""})
    Traceback (most recent call last):
    ...
    steerunc.errors.InputError: 'text' is empty
    """
    rid = id_of(data, line)
    if "text" not in data:
        raise InputError("missing 'text'", line=line)
    text = data["text"]
    if not isinstance(text, str):
        raise InputError(f"'text' must be a string, got {type(text).__name__}", line=line)
    if not text.strip():
        raise InputError("'text' is empty", line=line)
    _unicode(text, "text", line)
    if template is not None:
        text = template.replace(TEXT_SLOT, text)
    continuation = data.get("continuation")
    if continuation is not None and (not isinstance(continuation, str) or not continuation):
        raise InputError("'continuation' must be a non-empty string", line=line)
    if continuation is not None:
        _unicode(continuation, "continuation", line)
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
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise InputError(f"'label' must be a string, got {_json_type(label)}", line=line)
        label = str(label)
        if options is None:
            raise InputError(f"'label' {label!r} given but the record has no 'options'", line=line)
        if label not in options:
            raise InputError(f"unknown label {_short(label)}: not one of the options {options}", line=line)
    human = data.get("human_probs")
    if human is not None:
        human = _human_probs(human, options, line)
    chat = chat_flag(data, line)
    group = data.get("group")
    if group is not None:
        if isinstance(group, bool) or not isinstance(group, (str, int)) or group == "":
            raise InputError(f"'group' must be a non-empty string (or an integer), got {_short(group, 40)}", line=line)
        group = str(group)
    return Record(
        text=text, id=rid, options=options, label=label, continuation=continuation,
        human_probs=human, line=line, chat=chat, group=group,
    )
