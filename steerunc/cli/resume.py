"""``steerunc score --resume``: what an earlier run already wrote, and whether it was written for this input.

:func:`done_lines` reads the output an interrupted run left (cutting a
half-written last line) into what it wrote for each input line;
:func:`check_resume` passes the input through, refusing it where a line already
in the output is not the input line it was written for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

from steerunc.errors import InputError
from steerunc.io import Line
from steerunc.records import record_from_json

__all__ = ["Done", "done_lines", "check_resume"]


@dataclass(frozen=True)
class Done:
    """What an earlier run wrote for one input line, as far as resuming checks it."""

    id: str | None  # as text
    error: bool
    mode: str | None
    options: frozenset[str] | None
    label: str | None


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def done_lines(path: str) -> dict[int, Done]:
    """Input line numbers an earlier run already wrote, with what it wrote; drops a half-written last line."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):  # killed mid-line: cut the fragment
            keep = data.rfind(b"\n") + 1
            handle.seek(keep)
            handle.truncate()
            data = data[:keep]
    done: dict[int, Done] = {}
    for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
        record = next(iter(_safe_parse(raw)), None)
        line = None if record is None else record.get("line")
        if record is None or isinstance(line, bool) or not isinstance(line, int):
            raise InputError("cannot resume: this output line has no input 'line' number", path=path, line=number)
        if line in done:
            raise InputError(f"cannot resume: input line {line} appears twice in the output", path=path, line=number)
        probs = record.get("probs")
        done[line] = Done(
            id=_as_text(record.get("id")),
            error="error" in record,
            mode=record.get("mode") if isinstance(record.get("mode"), str) else None,
            options=frozenset(map(str, probs)) if isinstance(probs, dict) and record.get("mode") == "options" else None,
            label=_as_text(record.get("label")),
        )
    return done


def _safe_parse(raw: bytes) -> Iterator[dict[str, Any]]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return
    if isinstance(value, dict):
        yield value


def _mismatch(line: Line, done: Done, options: list[str] | None) -> str | None:
    """How input ``line`` differs from what the earlier run wrote for it, or None when it matches."""
    raw_id = None if line.data is None else line.data.get("id")
    valid_id = not isinstance(raw_id, bool) and isinstance(raw_id, (str, int))
    expected = _as_text(raw_id) if valid_id else None
    if expected != done.id:
        return f"id {expected!r} in the input, {done.id!r} in the output"
    if done.error:
        return None
    if line.data is None:
        return "an unreadable line in the input, a scored record in the output"
    try:
        record = record_from_json(line.data, line.number, options)
    except InputError as exc:
        return f"a bad record in the input ({exc.message}), a scored record in the output"
    if done.mode is not None and record.mode != done.mode:
        return f"mode {record.mode!r} in the input, {done.mode!r} in the output"
    if done.options is not None and record.options is not None and frozenset(record.options) != done.options:
        return f"options {sorted(record.options)} in the input, {sorted(done.options)} in the output"
    if record.label != done.label:
        return f"label {record.label!r} in the input, {done.label!r} in the output"
    return None


def check_resume(
    lines: Iterator[Line], done: dict[int, Done], options: list[str] | None, input_path: str, output: str
) -> Iterator[Line]:
    """Pass ``lines`` through, refusing (InputError) when a line already in the output is not the
    input line it was written for, or when the output holds lines the input does not have."""
    seen: set[int] = set()
    for line in lines:
        if line.number in done:
            seen.add(line.number)
            why = _mismatch(line, done[line.number], options)
            if why is not None:
                raise InputError(
                    f"cannot resume: {output} was not written for this input (line {line.number}: {why}); "
                    "score into a new file instead",
                    path=input_path,
                )
        yield line
    missing = sorted(set(done) - seen)
    if missing:
        raise InputError(
            f"cannot resume: {output} has records for {len(missing)} line(s) this input does not have "
            f"(e.g. line {missing[0]}): it was written for another input; score into a new file instead",
            path=input_path,
        )
