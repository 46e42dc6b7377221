"""Read scored JSONL (from ``steerunc score`` or any other system) for the judging wing.

Lenient about extra fields, strict about what a command needs: a missing or
NaN score, a non-boolean ``correct`` or a label outside the options raise
:class:`InputError` naming the file and line. Error records and continuation
records are skipped and counted, never fatal.

Uncertainty scores live in ``record["scores"]`` (higher = less sure). Two
pseudo-scores are read from the distributions instead, and there higher means
*more* sure: ``fused_confidence`` = max of ``probs`` and ``base_confidence`` =
max of ``base_probs``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from steerunc.errors import InputError
from steerunc.io import Line, read_jsonl

__all__ = [
    "CONFIDENCE_SCORES",
    "LATER_PROVENANCE_KEYS",
    "PROVENANCE_VERSION_KEY",
    "RECORD_KEY_SCHEME",
    "TARGETS",
    "ScoredFile",
    "Target",
    "correctness",
    "distribution",
    "logits_matrix",
    "options_of",
    "orientation_of",
    "read_scored",
    "record_groups",
    "record_keys",
    "record_kind",
    "score_matrix",
    "score_names",
    "score_of",
    "scoring_provenance",
]

#: pseudo-scores (higher = more sure) and the distribution each is the max of
CONFIDENCE_SCORES: dict[str, str] = {"fused_confidence": "probs", "base_confidence": "base_probs"}


@dataclass(frozen=True)
class Target:
    """Which prediction a confidence is about, and the record fields that describe it."""

    name: str
    prediction: str
    probs: str
    logits: str
    correct: str


TARGETS: dict[str, Target] = {
    "fused": Target("fused", "prediction", "probs", "logits", "correct"),
    "base": Target("base", "base_prediction", "base_probs", "base_logits", "base_correct"),
}


def orientation_of(score: str) -> str:
    """``"confident"`` for the pseudo-scores, ``"uncertain"`` for everything in ``scores``."""
    return "confident" if score in CONFIDENCE_SCORES else "uncertain"


def record_kind(data: Mapping[str, Any] | None) -> str:
    """``"malformed"`` (unparsable line), ``"error"``, ``"continuation"`` or ``"record"``."""
    if data is None:
        return "malformed"
    if data.get("error") is not None:
        return "error"
    if data.get("mode") == "continuation":
        return "continuation"
    return "record"


#: where the options of a record are read from, in order: the keys of the first of these it carries
OPTION_FIELDS = ("probs", "base_probs", "logits", "base_logits")


def options_of(data: Mapping[str, Any]) -> list[str] | None:
    """The options of a record: the keys of ``probs`` (else ``base_probs``, ``logits``, ``base_logits``);
    None when it carries none of them."""
    for name in OPTION_FIELDS:
        value = data.get(name)
        if isinstance(value, dict) and value:
            return [str(k) for k in value]
    return None


def correctness(data: Mapping[str, Any], target: Target, path: str, line: int) -> bool | None:
    """Whether the target prediction is right: ``correct`` if present, else prediction == label.

    None when the record carries neither (unlabelled). A ``label`` that is not
    one of the record's options (:func:`options_of`) raises InputError, even
    when ``correct`` is given: it would otherwise count as an error.
    """
    label = data.get("label")
    if label is not None:
        options = options_of(data)
        if options is not None and str(label) not in options:
            raise InputError(f"label {label!r} is not one of the options {options}", path=path, line=line)
    value = data.get(target.correct)
    if value is not None:
        if not isinstance(value, bool):
            raise InputError(f"'{target.correct}' must be true or false, got {value!r}", path=path, line=line)
        return value
    prediction = data.get(target.prediction)
    if label is None or prediction is None:
        return None
    return bool(prediction == label)


def _number(value: Any, what: str, path: str, line: int) -> float:
    if value is None:
        raise InputError(f"{what} is null (NaN when it was written?)", path=path, line=line)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} is not a number: {value!r}", path=path, line=line)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{what} is {number} (expected a finite number)", path=path, line=line)
    return number


def distribution(data: Mapping[str, Any], name: str, path: str, line: int) -> dict[str, float]:
    """A ``{option: p}`` field, checked: an object of finite non-negative numbers."""
    value = data.get(name)
    if not isinstance(value, dict) or not value:
        raise InputError(f"no '{name}' object (needed here)", path=path, line=line)
    probs = {str(k): _number(v, f"'{name}'[{k!r}]", path, line) for k, v in value.items()}
    if any(p < 0 for p in probs.values()):
        raise InputError(f"'{name}' has a negative probability", path=path, line=line)
    return probs


def score_of(data: Mapping[str, Any], score: str, path: str, line: int) -> float:
    """The value of ``score`` in one record; InputError when missing, null, NaN or not a number."""
    if score in CONFIDENCE_SCORES:
        return max(distribution(data, CONFIDENCE_SCORES[score], path, line).values())
    scores = data.get("scores")
    if not isinstance(scores, dict):
        raise InputError(f"no 'scores' object to read score '{score}' from", path=path, line=line)
    if score not in scores:
        have = ", ".join(sorted(scores)) or "none"
        raise InputError(f"no score '{score}' in this record (it has: {have})", path=path, line=line)
    return _number(scores[score], f"score '{score}'", path, line)


def score_matrix(
    records: Iterable[tuple[int, Mapping[str, Any]]], names: Iterable[str], path: str
) -> NDArray[np.float64]:
    """(n, k) values of the scores ``names`` (columns in that order) for each record; InputError
    naming file and line when one is missing or not finite.

    >>> score_matrix([(1, {"scores": {"a": 0.1, "b": 2.0}})], ["b", "a"], "x.jsonl").tolist()
    [[2.0, 0.1]]
    """
    columns = list(names)
    rows = [[score_of(data, name, path, line) for name in columns] for line, data in records]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns))


def score_names(data: Mapping[str, Any]) -> list[str]:
    """Scores a record offers: the keys of ``scores``, then the pseudo-scores it can give."""
    scores = data.get("scores")
    names = [str(k) for k in scores] if isinstance(scores, dict) else []
    names += [name for name, src in CONFIDENCE_SCORES.items() if isinstance(data.get(src), dict) and data[src]]
    return names


def logits_matrix(
    records: list[tuple[int, dict[str, Any]]], target: Target, path: str, *, labels: bool
) -> tuple[NDArray[np.float64], list[str], NDArray[np.int64] | None]:
    """Stack per-record option logits into (n, C) over the union of options; absent options get -inf.

    With ``labels``, also the index of each record's ``label`` among the options.

    >>> z, opts, y = logits_matrix([(1, {"logits": {"A": 1.0, "B": 0.0}, "label": "B"}),
    ...                             (2, {"logits": {"B": 2.0, "C": 0.5}, "label": "C"})],
    ...                            TARGETS["fused"], "x.jsonl", labels=True)
    >>> z.tolist(), opts, y.tolist()
    ([[1.0, 0.0, -inf], [-inf, 2.0, 0.5]], ['A', 'B', 'C'], [1, 2])
    """
    rows = [_logits(data, target.logits, path, line) for line, data in records]
    options: dict[str, int] = {}
    for logits in rows:
        for option in logits:
            options.setdefault(option, len(options))
    matrix = np.full((len(rows), len(options)), -np.inf)
    for i, logits in enumerate(rows):
        for option, z in logits.items():
            matrix[i, options[option]] = z
    if not labels:
        return matrix, list(options), None
    index = np.zeros(len(rows), dtype=np.int64)
    for i, ((line, data), logits) in enumerate(zip(records, rows)):
        label = data.get("label")
        if label is None or str(label) not in logits:
            raise InputError(f"label {label!r} is not one of the options {sorted(logits)}", path=path, line=line)
        index[i] = options[str(label)]
    return matrix, list(options), index


def _logits(data: Mapping[str, Any], name: str, path: str, line: int) -> dict[str, float]:
    value = data.get(name)
    if not isinstance(value, dict) or not value:
        raise InputError(f"no '{name}' object (temperature scaling needs the option logits)", path=path, line=line)
    return {str(k): _number(v, f"'{name}'[{k!r}]", path, line) for k, v in value.items()}


@dataclass
class ScoredFile:
    """Every line of a scored JSONL file, with counts of what kind each is."""

    path: str
    lines: list[Line]
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def records(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number, record) of every usable record (no error, not a continuation)."""
        return [(ln.number, ln.data) for ln in self.lines if ln.data is not None and record_kind(ln.data) == "record"]

    def labelled(self, target: Target) -> tuple[list[tuple[int, dict[str, Any]]], NDArray[np.float64], int]:
        """Usable records that say whether the target prediction is right, their 0/1 correctness,
        and how many usable records were unlabelled."""
        kept: list[tuple[int, dict[str, Any]]] = []
        correct: list[float] = []
        for line, data in self.records:
            ok = correctness(data, target, self.path, line)
            if ok is not None:
                kept.append((line, data))
                correct.append(float(ok))
        return kept, np.asarray(correct, dtype=np.float64), len(self.records) - len(kept)

    def skipped_text(self, unlabelled: int | None = None) -> str:
        """'3 error records, 10 continuation records, 5 unlabelled' (only the non-zero parts)."""
        parts = [
            f"{self.counts['error'] + self.counts['malformed']} error records",
            f"{self.counts['continuation']} continuation records",
        ]
        if unlabelled is not None:
            parts.append(f"{unlabelled} unlabelled")
        return ", ".join(p for p in parts if not p.startswith("0 ")) or "none"


def read_scored(path: str) -> ScoredFile:
    """Read a scored JSONL file; InputError (no line) if it is empty or has no usable record."""
    lines = list(read_jsonl(path))
    scored = ScoredFile(path, lines, Counter(record_kind(ln.data) for ln in lines))
    if not lines:
        raise InputError("empty file: no scored records", path=path)
    return scored


#: how :func:`record_keys` identifies a record, as a calibrator JSON states it
RECORD_KEY_SCHEME = "sha256[:16] of 'id:' + id, else of 'content:' + sorted-key JSON without line, triage"


def record_keys(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """A short key per record, to tell whether two sets of records share any: the first 16 hex digits
    of the sha256 of ``"id:" + id``, or of ``"content:" + sorted-key JSON`` for a record without an id.

    A record with a non-null ``id`` is keyed by its id, compared as text (``1``
    and ``"1"`` are the same item: ``steerunc score`` keeps an id's JSON type,
    and before it did it wrote every id as text);
    a record without one by its content, less the fields that depend on where it
    sits in a file (``line``) or what triage made of it (``triage``).

    >>> a, b = record_keys([{"id": 1, "x": 0.1}, {"id": "1", "x": 0.2}]); a == b, len(a)
    (True, 16)
    >>> c, d = record_keys([{"line": 3, "x": 0.1}, {"line": 9, "x": 0.1}]); c == d
    True
    """
    keys = []
    for data in records:
        rid = data.get("id")
        if rid is not None:
            text = "id:" + (rid if isinstance(rid, str) else json.dumps(rid, sort_keys=True))
        else:
            content = {k: v for k, v in data.items() if k not in ("line", "triage")}
            text = "content:" + json.dumps(content, sort_keys=True)
        keys.append(hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])
    return keys


#: the one provenance key whose difference only warns: the steerunc version that scored the records
PROVENANCE_VERSION_KEY = "steerunc"
#: provenance keys that records carry only since a later steerunc: where one side lacks such a key it
#: cannot be checked on it (not refused); ``chat``: whether the record was read through the chat template
LATER_PROVENANCE_KEYS = ("chat",)


def record_groups(records: list[tuple[int, dict[str, Any]]]) -> list[str] | None:
    """Each record's 'group' (records of one group are not independent: one question asked of
    several countries); a record without one is a group of its own; None when none has one."""
    if not any("group" in d for _, d in records):
        return None
    return [f"group {d['group']}" if "group" in d else f"line {ln}" for ln, d in records]


def scoring_provenance(records: Iterable[tuple[int, Mapping[str, Any]]], path: str) -> dict[str, Any] | None:
    """The ``provenance`` object (the scoring settings) shared by every record, or None when no record
    carries one (a file scored before records carried it, or by another system).

    Records that disagree, on a key's value or by one carrying a provenance and
    another not, raise InputError (no line: the whole file is at fault) naming the
    key, both values and both lines.

    >>> scoring_provenance([(1, {"provenance": {"coeff": 0.1}}), (2, {"provenance": {"coeff": 0.1}})], "x")
    {'coeff': 0.1}
    >>> scoring_provenance([(1, {"id": "a"})], "x") is None
    True
    """
    first: tuple[int, dict[str, Any]] | None = None
    missing: int | None = None
    for line, data in records:
        value = data.get("provenance")
        if value is None:
            missing = line if missing is None else missing
        elif not isinstance(value, dict):
            raise InputError(f"'provenance' must be an object, got {str(repr(value))[:60]}", path=path, line=line)
        elif first is None:
            first = (line, value)
        else:
            key = _first_difference(first[1], value)
            if key is not None:
                raise InputError(
                    f"records scored with different settings: provenance '{key}' is "
                    f"{_shown(first[1].get(key, '(absent)'))} on line {first[0]} but {_shown(value.get(key, '(absent)'))} "
                    f"on line {line}: use records scored with one setting",
                    path=path,
                )
        if first is not None and missing is not None:
            raise InputError(
                f"records scored with different settings: line {first[0]} carries a 'provenance' and line "
                f"{missing} does not: use records scored with one setting",
                path=path,
            )
    return None if first is None else dict(first[1])


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    skip = {key for key in LATER_PROVENANCE_KEYS if (key in a) != (key in b)}
    for key in list(a) + [k for k in b if k not in a]:
        if key not in skip and (key not in a or key not in b or a[key] != b[key]):
            return str(key)
    return None


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) or value != "(absent)" else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
