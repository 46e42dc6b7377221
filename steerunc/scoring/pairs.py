"""Pairs files: the ``Pair`` of texts a steering vector is the mean difference of, and the strict,
line-numbered readers of a pairs JSONL (``perspective``, ``positive``, ``negative``, optional
``chat`` and ``expect``). Building vectors from pairs: :mod:`.vectors`."""

from __future__ import annotations

from dataclasses import dataclass

from steerunc.errors import InputError
from steerunc.io import read_jsonl
from steerunc.records import chat_flag

__all__ = ["Pair", "read_pairs", "read_expectations"]


@dataclass(frozen=True)
class Pair:
    perspective: str
    positive: str
    negative: str
    #: both texts are read as the user turn of the model's chat template (as a record with
    #: ``"chat": true`` is scored), so the vector is read where such a record's answer is read
    chat: bool = False


def read_pairs(path: str) -> list[Pair]:
    """Read a pairs JSONL (``perspective``, ``positive``, ``negative``); strict, line-numbered."""
    pairs = []
    for line in read_jsonl(path):
        if line.error is not None:
            raise InputError(line.error, path=path, line=line.number)
        data = line.data or {}
        missing = [k for k in ("perspective", "positive", "negative") if not isinstance(data.get(k), str) or not data[k].strip()]
        if missing:
            raise InputError(f"missing or empty {', '.join(missing)}", path=path, line=line.number)
        chat = bool(chat_flag(data, line.number, path))
        pairs.append(Pair(data["perspective"], data["positive"], data["negative"], chat))
    if not pairs:
        raise InputError("no pairs in file", path=path)
    return pairs


def read_expectations(path: str) -> dict[str, str]:
    """The optional ``expect`` field of a pairs or annotations file: perspective -> the option
    that perspective should make more likely on its probe (``steerunc vectors check``).

    A perspective may declare it on any of its lines (on one, or on all); lines of one
    perspective that declare different options are an error. Files without the field give {}.
    """
    found: dict[str, tuple[str, int]] = {}
    for line in read_jsonl(path):
        if line.error is not None:
            raise InputError(line.error, path=path, line=line.number)
        data = line.data or {}
        if "expect" not in data or data["expect"] is None:
            continue
        name, option = data.get("perspective"), data["expect"]
        if not isinstance(name, str) or not name.strip():
            raise InputError("'expect' given on a line without a 'perspective'", path=path, line=line.number)
        if not isinstance(option, str) or not option.strip():
            raise InputError(f"'expect' must be an option name (a non-empty string), got {option!r}",
                             path=path, line=line.number)
        if name in found and found[name][0] != option:
            raise InputError(
                f"perspective {name!r} expects {option!r} here but {found[name][0]!r} on line {found[name][1]}",
                path=path, line=line.number,
            )
        found.setdefault(name, (option, line.number))
    return {name: option for name, (option, _) in found.items()}
