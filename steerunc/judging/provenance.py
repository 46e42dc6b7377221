"""Where a fitted calibrator, option prior or policy came from, checked against the records it is used on.

Two checks, both refusing with :class:`~steerunc.errors.InputError` (no line,
so the CLI exits 2):

* **the same records** (:func:`check_disjoint`, :func:`overlap`): a fitted
  object remembers the keys (:func:`steerunc.scored.record_keys`) of the
  records it was fitted on; choosing a ``--max-risk`` threshold on them, or
  evaluating on them, uses their labels twice;
* **the same scoring settings** (:func:`check_settings`): it remembers the
  ``provenance`` of those records (model, vectors, layer, coefficient, ...,
  :func:`steerunc.scored.scoring_provenance`); using it on records scored
  otherwise maps scores it never saw. Every key is compared except the
  steerunc version (``"steerunc"``), which only warns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from steerunc.errors import InputError
from steerunc.scored import LATER_PROVENANCE_KEYS, PROVENANCE_VERSION_KEY, record_keys

__all__ = ["Fitted", "check_disjoint", "check_settings", "overlap"]


class Fitted(Protocol):
    """Anything fitted on records that remembers their keys (a calibrator, an option prior)."""

    fitted_on_: frozenset[str] | None


def overlap(fitted: Fitted, records: Iterable[Mapping[str, Any]]) -> tuple[int, int] | None:
    """(how many of ``records`` the object was fitted on, how many records) or None when it holds no keys."""
    keys = fitted.fitted_on_
    if keys is None:
        return None
    mine = record_keys(records)
    return sum(key in keys for key in mine), len(mine)


def check_disjoint(
    calibrator: Fitted,
    records: Iterable[Mapping[str, Any]],
    path: str | None = None,
    calibrator_path: str | None = None,
    what: str = "calibrator",
) -> bool:
    """Refuse to choose a risk threshold on records the calibrator was fitted on.

    The ``max_risk`` guarantee needs three disjoint parts: records that fit the
    calibrator, labelled records that choose the threshold
    (:meth:`steerunc.judging.triage.Router.for_risk`), and the records the policy is
    applied to. Fitting and choosing on the same records uses their labels twice,
    and the bound no longer holds. Records are matched by
    :func:`steerunc.scored.record_keys` against the calibrator's ``fitted_on_``
    (an option prior's too: ``what="option prior"``).

    Raises InputError naming ``path`` (the threshold-selection records), the
    calibrator and the overlap when any record is one the calibrator was fitted
    on. Returns True when checked, False when the calibrator does not say which
    records it was fitted on (saved by an older steerunc, or fitted in Python
    without setting ``fitted_on_``), so nothing could be checked.
    """
    found = overlap(calibrator, records)
    if found is None:
        return False
    shared, n = found
    if shared:
        name = f"the {what} {calibrator_path}" if calibrator_path else f"the {what}"
        total = len(calibrator.fitted_on_ or ())
        raise InputError(
            f"{shared} of these {n} labelled records that would choose the --max-risk threshold are "
            f"among the {total} {name} was fitted on: choose it on labelled records disjoint from "
            "those (the labels would be used twice, and the guarantee would not hold)",
            path=path,
        )
    return True


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_settings(
    made_for: Mapping[str, Any] | None,
    scored_with: Mapping[str, Any] | None,
    *,
    made_path: str | None,
    data_path: str,
    what: str = "calibrator",
) -> list[str]:
    """Refuse (InputError, naming the key, both values and both files) a fitted object made for records
    scored with other settings than ``data_path``'s; returns the warnings and notes to print: a different
    steerunc version, or a side that records no settings (written before records carried them).

    >>> check_settings({"coeff": 0.1, "steerunc": "0.1"}, {"coeff": 0.1, "steerunc": "0.2"},
    ...                made_path="cal.json", data_path="b.jsonl")  # doctest: +ELLIPSIS
    ['warning: cal.json was fitted on records scored by steerunc 0.1 and b.jsonl by 0.2 ...']
    >>> check_settings({"coeff": 0.1}, {"coeff": 0.2}, made_path="cal.json", data_path="b.jsonl")
    Traceback (most recent call last):
    ...
    steerunc.errors.InputError: the calibrator cal.json was made for records scored with coeff 0.1, but b.jsonl was scored with coeff 0.2: ...
    """
    name = made_path or f"the {what}"
    if made_for is None or scored_with is None:
        if made_for is None and scored_with is None:
            return [f"note: neither {name} nor {data_path} records scoring settings (made before steerunc kept "
                    "them): cannot check that they match"]
        if made_for is None:
            return [f"note: {name} does not record the scoring settings of the records it was fitted on "
                    f"(made before steerunc kept them): cannot check it suits {data_path}"]
        return [f"note: {data_path} carries no scoring provenance (scored before steerunc recorded it, or by "
                f"another system): cannot check that {name} was made for its scoring settings"]
    notes = []
    for key in list(made_for) + [k for k in scored_with if k not in made_for]:
        a, b = made_for.get(key, "(absent)"), scored_with.get(key, "(absent)")
        if a == b:
            continue
        if key in LATER_PROVENANCE_KEYS and "(absent)" in (a, b):
            older = name if a == "(absent)" else data_path
            notes.append(f"note: {older} does not record '{key}' (made before steerunc recorded it): cannot "
                         f"check that it matches")
            continue
        if key == PROVENANCE_VERSION_KEY:
            notes.append(f"warning: {name} was fitted on records scored by steerunc {a} and {data_path} by {b} "
                         "(the settings agree; scores may still differ between versions)")
            continue
        raise InputError(
            f"{'the ' + what + ' ' if made_path else ''}{name} was made for records scored with {key} {_shown(a)}, but {data_path} was scored "
            f"with {key} {_shown(b)}: refit it on records scored like these, or score them as its records were"
        )
    return notes
