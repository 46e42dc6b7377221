"""What ``calibrate``, ``evaluate`` and ``triage`` share: flags, loading a prior, the settings checks."""

from __future__ import annotations

import json
from typing import Any

import click

from steerunc.judging.calibration import CalibrationError, Calibrator
from steerunc.cli.common import FileLevelError, stderr
from steerunc.errors import InputError
from steerunc.io import dumps
from steerunc.judging.option_prior import OptionPrior, load_prior
from steerunc.judging.provenance import check_settings
from steerunc.scored import TARGETS, ScoredFile, score_names, scoring_provenance
from steerunc.judging.option_prior import prior_mismatch

__all__ = [
    "check_prior",
    "check_score",
    "fit",
    "jsonable",
    "load_prior_arg",
    "print_notes",
    "prior_option",
    "settings_notes",
    "target_option",
]

target_option = click.option(
    "--target",
    type=click.Choice(sorted(TARGETS)),
    default="fused",
    show_default=True,
    help="Which prediction 'correct' is about: fused (correct) or base (base_correct).",
)

prior_option = click.option(
    "--prior",
    "prior_path",
    metavar="PRIOR.json",
    help="Correct each record's prediction by this option prior (from `steerunc calibrate-prior`) first.",
)


def check_score(scored: ScoredFile, records: list[tuple[int, dict[str, Any]]], score: str, what: str) -> None:
    """A score the first record does not offer is a bad flag value (exit 2), named with file and line."""
    line, data = records[0]
    names = score_names(data)
    if score not in names:
        have = ", ".join(names) or "none"
        raise FileLevelError(f"{scored.path}:{line}: no score '{score}' {what} (this record offers: {have})")


def fit(calibrator: Calibrator, x: Any, y: Any, path: str, groups: list[str] | None = None) -> None:
    """Fit, naming the file when the data cannot be calibrated (e.g. no errors to learn from);
    ``groups`` go to a combined calibrator's guard."""
    try:
        if groups is not None:
            calibrator.fit(x, y, groups=groups)  # type: ignore[call-arg]
        else:
            calibrator.fit(x, y)
    except CalibrationError as exc:
        raise InputError(str(exc), path=path) from exc


def jsonable(obj: Any) -> Any:
    """NaN/inf -> null, tuples -> lists."""
    return json.loads(dumps(obj))


def load_prior_arg(path: str | None) -> OptionPrior | None:
    """The --prior file, or None."""
    return None if path is None else load_prior(path)


def check_prior(calibrator: Calibrator, calibrator_path: str, prior: OptionPrior | None) -> None:
    """Refuse (exit 2) a calibrator fitted on prior-corrected records without that prior, or the reverse."""
    mismatch = prior_mismatch(calibrator, prior)
    if mismatch:
        raise InputError(mismatch, path=calibrator_path)


def settings_notes(
    scored: ScoredFile,
    records: list[tuple[int, dict[str, Any]]],
    fitted: list[tuple[str, str, Calibrator | OptionPrior]],
) -> list[str]:
    """Refuse calibrators and priors made for records scored with other settings than these records
    (exit 2, naming the key and both values); the notes on what could not be checked."""
    scored_with = scoring_provenance(records, scored.path)
    notes: list[str] = []
    for what, path, obj in fitted:
        notes += check_settings(obj.scoring_, scored_with, made_path=path, data_path=scored.path, what=what)
    return notes


def print_notes(notes: list[str]) -> None:
    """One line per note on stderr, each once."""
    for note in dict.fromkeys(notes):
        stderr.print(note, highlight=False, soft_wrap=True, markup=False)
