"""Steering pairs from a few annotated examples per perspective (docs/perspectives.md).

A perspective is a group of people (an annotator group, a target community, a
country, a rationale). Each annotation line says what that perspective did
with one prompt::

    {"perspective": "women", "text": "<prompt>", "answer": "hateful", "contrast": "normal"}
    {"perspective": "sceptic", "text": "<prompt>", "feedback": "As a sceptic, I doubt claims without sources."}

Two recipes turn a line into :class:`~steerunc.scoring.vectors.Pair` s (METHOD.md §1):

``feedback``
    positive = the perspective's feedback, a newline, then the prompt;
    negative = the prompt alone. The vector is what reading the item with that
    note in mind changes at the last token.
``answer``
    positive = the prompt followed by the perspective's answer; negative = the
    prompt followed by a contrasting answer: the line's ``contrast`` if given,
    else each different answer another perspective gave to the same ``text``.
    The answer is joined as an option is when scoring (a space unless the
    prompt ends in whitespace), so the vector is read where the scorer reads.

A feedback line with ``"chat": true`` is read through the model's chat template
(the note and the prompt as the user turn), as a record with ``"chat": true``
is scored: the vector is then read where such a record's answer is read.

``recipe="auto"`` picks per line: ``feedback`` when the line has one, else
``answer``. The seed work found ~50 examples per perspective enough; by
default at most :data:`MAX_PER_PERSPECTIVE` lines per perspective are used (the
first ones, in file order) and the rest are reported as dropped.

>>> lines = [
...     {"perspective": "a", "text": "Is it ok? Answer:", "answer": "Yes", "contrast": "No"},
...     {"perspective": "b", "text": "Is it ok? Answer:", "feedback": "I am strict."},
... ]
>>> [(p.perspective, p.positive, p.negative) for p in pairs_from_annotations(lines).pairs]
[('a', 'Is it ok? Answer: Yes', 'Is it ok? Answer: No'), ('b', 'I am strict.\\nIs it ok? Answer:', 'Is it ok? Answer:')]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from steerunc.errors import InputError
from steerunc.io import read_jsonl
from steerunc.records import chat_flag
from steerunc.scoring.pairs import Pair, read_pairs

__all__ = [
    "Annotation",
    "AnnotationPairs",
    "RECIPES",
    "MAX_PER_PERSPECTIVE",
    "parse_annotation",
    "read_annotations",
    "pairs_from_annotations",
    "detect_source",
    "read_pairs_or_annotations",
]

log = logging.getLogger("steerunc")

RECIPES = ("auto", "feedback", "answer")
#: examples per perspective used by default (the seed work's budget)
MAX_PER_PERSPECTIVE = 50


@dataclass(frozen=True)
class Annotation:
    """One annotated example: what ``perspective`` said about ``text``."""

    perspective: str
    text: str
    feedback: str | None = None
    answer: str | None = None
    contrast: str | None = None
    line: int | None = None
    #: the feedback and text are read as the user turn of the model's chat template
    chat: bool = False


@dataclass
class AnnotationPairs:
    """The pairs built, and what was left out (per perspective)."""

    pairs: list[Pair]
    examples: dict[str, int] = field(default_factory=dict)  # examples used per perspective
    dropped: dict[str, int] = field(default_factory=dict)  # over the per-perspective cap
    no_contrast: dict[str, int] = field(default_factory=dict)  # answer lines with nothing to contrast


def _optional_text(data: Mapping[str, Any], key: str, line: int | None, path: str | None) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"'{key}' must be a non-empty string, got {value!r}", path=path, line=line)
    return value


def parse_annotation(data: Mapping[str, Any], line: int | None = None, path: str | None = None) -> Annotation:
    """Validate one annotation line.

    >>> parse_annotation({"perspective": "a", "text": "x"})
    Traceback (most recent call last):
    ...
    steerunc.errors.InputError: needs 'feedback' or 'answer' (got keys: perspective, text)
    """
    for key in ("perspective", "text"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"missing or empty '{key}'", path=path, line=line)
    feedback = _optional_text(data, "feedback", line, path)
    answer = _optional_text(data, "answer", line, path)
    contrast = _optional_text(data, "contrast", line, path)
    if feedback is None and answer is None:
        raise InputError(
            f"needs 'feedback' or 'answer' (got keys: {', '.join(sorted(data))})", path=path, line=line
        )
    if contrast is not None and answer is None:
        raise InputError("'contrast' given without 'answer'", path=path, line=line)
    chat = bool(chat_flag(data, line, path))
    return Annotation(str(data["perspective"]), str(data["text"]), feedback, answer, contrast, line, chat)


def read_annotations(path: str) -> list[Annotation]:
    """Read an annotations JSONL; strict, line-numbered errors."""
    out = []
    for line in read_jsonl(path):
        if line.error is not None:
            raise InputError(line.error, path=path, line=line.number)
        out.append(parse_annotation(line.data or {}, line.number, path))
    if not out:
        raise InputError("no annotations in file", path=path)
    return out


def _join(text: str, answer: str) -> str:
    return text + ("" if text[-1:].isspace() else " ") + answer


def _recipe_of(note: Annotation, recipe: str) -> str:
    if recipe == "auto":
        return "feedback" if note.feedback is not None else "answer"
    needed = note.feedback if recipe == "feedback" else note.answer
    if needed is None:
        raise InputError(f"recipe '{recipe}' needs '{recipe}' on every line", line=note.line)
    return recipe


def pairs_from_annotations(
    annotations: Iterable[Annotation | Mapping[str, Any]],
    recipe: str = "auto",
    max_per_perspective: int | None = MAX_PER_PERSPECTIVE,
) -> AnnotationPairs:
    """Turn annotated examples into steering pairs (see the module docstring).

    ``max_per_perspective`` (None or 0: no cap) keeps the first examples of each
    perspective. Raises :class:`InputError` if a perspective ends with no pair.
    """
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    notes = [a if isinstance(a, Annotation) else parse_annotation(a, i) for i, a in enumerate(annotations, 1)]
    if not notes:
        raise InputError("no annotations")
    cap = max_per_perspective or None
    kept: list[Annotation] = []
    result = AnnotationPairs([])
    for note in notes:
        used = result.examples.get(note.perspective, 0)
        if cap is not None and used >= cap:
            result.dropped[note.perspective] = result.dropped.get(note.perspective, 0) + 1
            continue
        result.examples[note.perspective] = used + 1
        kept.append(note)
    # every answer given to a text, by perspective: the default contrasts
    answers: dict[str, dict[str, set[str]]] = {}
    for note in notes:
        if note.answer is not None:
            answers.setdefault(note.text, {}).setdefault(note.perspective, set()).add(note.answer)
    for note in kept:
        if _recipe_of(note, recipe) == "feedback":
            sep = "" if (note.feedback or "").endswith(("\n", " ")) else "\n"
            result.pairs.append(Pair(note.perspective, f"{note.feedback}{sep}{note.text}", note.text, note.chat))
            continue
        if note.chat:
            raise InputError("'chat' works with the feedback recipe only: an answer would be read inside the "
                             "user turn, not as the model's reply; write such pairs yourself", line=note.line)
        answer = note.answer or ""
        if note.contrast is not None:
            contrasts = [note.contrast] if note.contrast != answer else []
        else:
            others = answers.get(note.text, {})
            contrasts = sorted({a for p, given in others.items() if p != note.perspective for a in given} - {answer})
        if not contrasts:
            result.no_contrast[note.perspective] = result.no_contrast.get(note.perspective, 0) + 1
            continue
        for contrast in contrasts:
            result.pairs.append(Pair(note.perspective, _join(note.text, answer), _join(note.text, contrast)))
    empty = [name for name in result.examples if not any(p.perspective == name for p in result.pairs)]
    if empty:
        raise InputError(
            f"perspective(s) {', '.join(repr(e) for e in empty)} yield no pair: with the 'answer' recipe each "
            "line needs a 'contrast' different from its 'answer', or another perspective answering the same "
            "'text' differently"
        )
    if result.dropped:
        log.warning(
            "used the first %s examples per perspective; dropped %s",
            cap, ", ".join(f"{n} of {name!r}" for name, n in result.dropped.items()),
        )
    if result.no_contrast:
        log.warning(
            "skipped 'answer' lines with nothing to contrast: %s",
            ", ".join(f"{n} of {name!r}" for name, n in result.no_contrast.items()),
        )
    return result


def detect_source(path: str) -> str:
    """``pairs`` if the first line has ``positive``/``negative``, ``annotations`` if it has ``text``."""
    for line in read_jsonl(path):
        data = line.data or {}
        if "positive" in data or "negative" in data:
            return "pairs"
        if "text" in data:
            return "annotations"
        raise InputError(
            "cannot tell pairs from annotations: expected 'positive'/'negative' (pairs) or 'text' "
            f"(annotations), got keys: {', '.join(sorted(data)) or line.error}",
            path=path, line=line.number,
        )
    raise InputError("empty file", path=path)


def read_pairs_or_annotations(
    path: str, source: str = "auto", recipe: str = "auto", max_per_perspective: int | None = MAX_PER_PERSPECTIVE
) -> tuple[list[Pair], dict[str, str]]:
    """Pairs from a pairs file or an annotations file, and metadata for the vector file."""
    if source == "auto":
        source = detect_source(path)
    if source == "pairs":
        return read_pairs(path), {"source": "pairs"}
    if source != "annotations":
        raise InputError(f"unknown source {source!r}: expected auto, pairs or annotations")
    try:
        built = pairs_from_annotations(read_annotations(path), recipe, max_per_perspective)
    except InputError as exc:
        if exc.path is None:
            raise InputError(exc.message, path=path, line=exc.line) from exc
        raise
    import json

    meta = {
        "source": "annotations",
        "recipe": recipe,
        "examples_per_perspective": json.dumps(built.examples),
        "max_per_perspective": str(max_per_perspective or "none"),
    }
    return built.pairs, meta
