"""``steerunc calibrate`` (a map from one score, or several, to P(correct)) and ``steerunc calibrate-prior``
(a correction of the model's prior for one option)."""

from __future__ import annotations

import json
import os
from typing import Any

import click
import numpy as np

from steerunc.judging.calibration import (
    COMBINED_METHODS,
    METHODS,
    Calibrator,
    CombinedCalibrator,
    make_calibrator,
    save_calibrator,
)
from steerunc.cli.common import FileLevelError, check_outputs, stderr, translate_errors
from steerunc.cli.judge_common import (
    check_score,
    fit,
    load_prior_arg,
    print_notes,
    prior_option,
    settings_notes,
    target_option,
)
from steerunc.judging.confidence import confidence_warning
from steerunc.errors import InputError
from steerunc.judging.metrics import ece
from steerunc.judging.option_prior import OptionPrior, option_logits, save_prior
from steerunc.scored import TARGETS, logits_matrix, read_scored, record_keys, score_matrix, score_names, score_of
from steerunc.scored import record_groups, scoring_provenance

__all__ = ["calibrate", "calibrate_prior"]

_METHOD_CHOICES = [m for m in METHODS if m != "combined"] + list(COMBINED_METHODS)


def _score_names(score: str | None, scores: str | None) -> list[str]:
    """The scores asked for: --score, or --scores split on commas (distinct, none empty)."""
    if score is not None and scores is not None:
        raise click.UsageError("give --score (one score) or --scores (several), not both")
    if scores is None:
        return [] if score is None else [score]
    names = [name.strip() for name in scores.split(",")]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise click.UsageError(f"--scores takes distinct score names separated by commas, got {scores!r}")
    return names


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.option("--score", "-s", help="Score to calibrate (a key of 'scores', or fused_confidence/base_confidence).")
@click.option(
    "--scores",
    metavar="A,B,...",
    help="Several scores to combine into one P(correct) (--method logistic or monotone), e.g. "
    "msp,mutual_info,mean_kl,flip_rate.",
)
@click.option(
    "--method",
    "-m",
    type=click.Choice(_METHOD_CHOICES),
    default=None,
    help="Calibration map [default: isotonic for one score, logistic for several]; logistic is Platt "
    "scaling for one score; monotone keeps P(correct) non-increasing in every uncertainty score; "
    "temperature scales the option logits and takes no score.",
)
@target_option
@click.option(
    "--higher-means",
    type=click.Choice(["uncertain", "confident"]),
    default=None,
    help="Direction of the score [default: confident for *_confidence, else uncertain].",
)
@click.option("--bins", type=click.IntRange(min=1), default=10, show_default=True, help="Bins (histogram method).")
@click.option(
    "--guard/--no-guard",
    default=True,
    show_default=True,
    help="With --scores: keep the combination only if cross-validation on these records shows it clearly "
    "better than the first score alone (held-out log loss lower by more than one standard error); else use "
    "the first score alone. Records with the same 'group' stay in one fold.",
)
@prior_option
@click.option("--output", "-o", default="-", show_default=True, help="Calibrator JSON to write ('-': stdout).")
@translate_errors
def calibrate(
    scored_path: str,
    score: str | None,
    scores: str | None,
    method: str | None,
    target: str,
    higher_means: str | None,
    bins: int,
    guard: bool,
    prior_path: str | None,
    output: str,
) -> None:
    """Fit a map from a score, or several, to P(correct) on labelled scored records; save it as JSON.

    Records without 'label' or 'correct', error records and continuation
    records are skipped and counted. The calibrator keeps which records it was
    fitted on and their scoring settings ('provenance'), so that `evaluate` and
    `triage` can refuse records it was fitted on or scored otherwise.
    """
    check_outputs((output, "-o/--output"))
    names = _score_names(score, scores)
    method = method or ("logistic" if len(names) > 1 else "isotonic")
    if len(names) > 1 and method not in COMBINED_METHODS:
        raise click.UsageError(
            f"--scores combines several scores with --method logistic or monotone, not {method} (one score: --score)"
        )
    if len(names) > 1 and higher_means is not None:
        raise click.UsageError("--higher-means is for one score; several are each read by their name")
    prior = load_prior_arg(prior_path)
    scored = read_scored(scored_path)
    if prior is not None:
        scored = prior.correct_file(scored)
    tgt = TARGETS[target]
    records, correct, unlabelled = scored.labelled(tgt)
    if not records:
        raise InputError(
            f"no labelled records to calibrate on: none of {len(scored.lines)} lines carries 'label' or "
            f"'{tgt.correct}' (skipped: {scored.skipped_text(unlabelled)})",
            path=scored_path,
        )
    scoring = scoring_provenance(records, scored_path)
    notes = [] if prior is None else settings_notes(scored, records, [("option prior", prior_path or "", prior)])
    if scoring is None:
        notes.append(f"note: {scored_path} carries no scoring provenance (scored before steerunc recorded it, or by "
                     "another system): the calibrator cannot be checked against the settings of the records it meets")
    params: dict[str, Any] = {"n_bins": bins} if method == "histogram" else {}
    if len(names) > 1:
        params["guard"] = guard
    if method == "temperature":
        if names not in ([], ["logits"]):
            raise FileLevelError("--method temperature scales the option logits; drop --score")
        labelled = [(ln, d) for ln, d in records if d.get("label") is not None]
        if not labelled:
            raise InputError("temperature scaling needs 'label' (records here only carry 'correct')", path=scored_path)
        calibrator: Calibrator = make_calibrator(method, target=target)
        matrix, _, labels = logits_matrix(labelled, tgt, scored_path, labels=True)
        if labels is None:  # pragma: no cover  (labels=True always returns them)
            raise InputError("no labels", path=scored_path)
        fit(calibrator, matrix, labels, scored_path)
        calibrator.fitted_on_ = frozenset(record_keys(d for _, d in labelled))
        confidence = calibrator.predict(matrix)
        correct = (matrix.argmax(axis=1) == labels).astype(np.float64)
    else:
        if not names:
            offered = ", ".join(score_names(records[0][1])) or "none"
            raise FileLevelError(f"--score is required for --method {method} (scores in {scored_path}: {offered})")
        for name in names:
            check_score(scored, records, name, "to calibrate")
        calibrator = make_calibrator(method, names[0], target=target, higher_means=higher_means, scores=names,
                                     **params)
        if calibrator.input_kind == "scores":
            values = score_matrix(records, names, scored_path)
        else:
            values = np.array([score_of(d, names[0], scored_path, ln) for ln, d in records], dtype=np.float64)
        groups = record_groups(records) if isinstance(calibrator, CombinedCalibrator) else None
        fit(calibrator, values, correct, scored_path, groups=groups)
        calibrator.fitted_on_ = frozenset(record_keys(d for _, d in records))
        confidence = calibrator.predict(values)
    calibrator.scoring_ = scoring
    if prior is not None:
        calibrator.prior_ = prior.reference(source=os.path.basename(prior_path or ""))
    if output == "-":
        click.echo(json.dumps(calibrator.to_dict(source=os.path.basename(scored_path)), indent=2))
    else:
        save_calibrator(calibrator, output, source=os.path.basename(scored_path))
    corrected = f", after the option prior {prior_path}" if prior is not None else ""
    stderr.print(
        f"Fitted [bold]{calibrator.label}[/] (target {target}{corrected}) on "
        f"{len(confidence)} labelled records, {int(correct.sum())} correct; skipped: "
        f"{scored.skipped_text(unlabelled)}.\n" + _coefficients(calibrator) +
        f"Calibrated confidence on these records: {confidence.min():.3f} to {confidence.max():.3f}, "
        f"in-sample ECE {ece(confidence, correct):.4f} (optimistic: measure it on held-out records with "
        "`steerunc evaluate --calibrator`)." + ("" if output == "-" else f"\nWrote {output}"),
        highlight=False,
    )
    warning = confidence_warning(confidence, calibrator)
    print_notes(notes + ([warning] if warning else []))


def _coefficients(calibrator: Calibrator) -> str:
    """For a combination: what the guard kept and why, and each score's weight per standard deviation."""
    if not isinstance(calibrator, CombinedCalibrator):
        return ""
    weights = ", ".join(f"{name} {w:+.3f}" for name, w in zip(calibrator.scores, calibrator.coef_))
    return (_guard_text(calibrator) +
            f"Weights per standard deviation of each score, oriented so that + means more sure: {weights}.\n")


def _guard_text(calibrator: CombinedCalibrator) -> str:
    guard, first = calibrator.guard_, calibrator.scores[0]
    if guard is None:
        return "" if len(calibrator.scores) == 1 else "Guard off (--no-guard): the combination is used as fitted.\n"
    if "reason" in guard:
        return f"Guard: {first} alone is used, {guard['reason']}.\n"
    grouped = f", each of the {guard['groups']} groups ('group') in one fold" if "groups" in guard else ""
    figures = (f"held-out log loss {guard['cv_log_loss']['combination']:.4f} for the combination, "
               f"{guard['cv_log_loss']['first score']:.4f} for {first} alone (difference {guard['difference']:+.4f}, "
               f"standard error {guard['se']:.4f}; cross-validated on these records{grouped})")
    if guard["kept"] == "combination":
        return f"Guard: the combination is kept: {figures}.\n"
    return (f"[bold]Guard: {first} alone is used[/]: the combination is not clearly better: {figures}. "
            "--no-guard keeps it anyway.\n")


@click.command("calibrate-prior")
@click.argument("scored_path", metavar="SCORED.jsonl")
@target_option
@click.option("--output", "-o", default="-", show_default=True, help="Option prior JSON to write ('-': stdout).")
@translate_errors
def calibrate_prior(scored_path: str, target: str, output: str) -> None:
    """Fit a correction of the model's prior for one option: softmax(logits / T + b), a temperature and a
    bias per option, on labelled records that all offer the same options; save it as JSON.

    `evaluate --prior`, `triage --prior` and `calibrate --prior` then use the
    corrected prediction (named base+prior or fused+prior) and its
    probabilities. Fit it on the calibration split: `evaluate` refuses to
    measure it on the records it was fitted on.
    """
    check_outputs((output, "-o/--output"))
    scored = read_scored(scored_path)
    tgt = TARGETS[target]
    records, _, unlabelled = scored.labelled(tgt)
    records = [(ln, d) for ln, d in records if d.get("label") is not None]
    if not records:
        raise InputError(
            f"no records with a 'label' to fit an option prior on (skipped: {scored.skipped_text(unlabelled)})",
            path=scored_path,
        )
    first_line, first = records[0][0], option_logits(records[0][1], target, scored_path, records[0][0])
    options = list(first)
    for line, data in records[1:]:
        mine = option_logits(data, target, scored_path, line)
        if sorted(mine) != sorted(options):
            raise InputError(
                f"an option prior needs one option list: line {first_line} offers {options}, line {line} offers "
                f"{list(mine)} (fit one prior per task)",
                path=scored_path,
            )
    z = np.array([[option_logits(d, target, scored_path, ln)[o] for o in options] for ln, d in records])
    labels = np.array([options.index(str(d["label"])) for _, d in records])
    scoring = scoring_provenance(records, scored_path)
    prior = OptionPrior(target).fit(z, labels, options)
    prior.fitted_on_ = frozenset(record_keys(d for _, d in records))
    prior.scoring_ = scoring
    if output == "-":
        click.echo(json.dumps(prior.to_dict(source=os.path.basename(scored_path)), indent=2))
    else:
        save_prior(prior, output, source=os.path.basename(scored_path))
    bias = ", ".join(f"{o} {b:+.3f}" for o, b in zip(options, prior.bias_))
    counts = ", ".join(f"{o} {int(np.sum(labels == i))}" for i, o in enumerate(options))
    stderr.print(
        f"Fitted an option prior for the {target} prediction on {len(records)} labelled records (labels: {counts}): "
        f"temperature {prior.temperature_:.3f}, bias {bias}.\n"
        f"Accuracy on these records: {prior.accuracy_before_:.3f} ({target}) -> {prior.accuracy_after_:.3f} "
        f"({prior.name}), in-sample (optimistic: measure it on held-out records with `steerunc evaluate --prior`)."
        + ("" if output == "-" else f"\nWrote {output}"),
        highlight=False,
        markup=False,
    )
    notes = []
    if prior.temperature_ > 900:  # at the bound e^7: the logits tell nothing about the labels
        notes.append(f"warning: the temperature reached its bound ({prior.temperature_:.0f}): the {target} logits "
                     "carry (almost) no information about these labels, and the corrected prediction is the most "
                     "frequent label, whatever the input")
    if scoring is None:
        notes.append(f"note: {scored_path} carries no scoring provenance: the prior cannot be checked against the "
                     "settings of the records it meets")
    print_notes(notes)
