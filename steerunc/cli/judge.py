"""``steerunc calibrate``, ``evaluate`` and ``triage``: the judging wing on the command line.

They read scored JSONL from ``steerunc score`` or any other system and never
load a model (torch is loaded only while netcal fits beta or temperature
scaling). stdout carries only the product (a calibrator JSON
when no ``-o`` is given, or ``--json`` output); tables and summaries go to
stderr. Every file is written to a temporary file and renamed, so a failure
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
import numpy as np

from steerunc.calibration import (
    METHODS,
    CalibrationError,
    Calibrator,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)
from steerunc.cli.common import FileLevelError, FiniteFloatRange, check_outputs, stderr, translate_errors
from steerunc.cli.judge_report import evaluation_tables, triage_summary
from steerunc.errors import InputError
from steerunc.io import atomic_write, atomic_write_many, check_output_path, dumps
from steerunc.metrics import ece
from steerunc.scored import TARGETS, ScoredFile, logits_matrix, read_scored, record_keys, score_names, score_of
from steerunc.triage import (
    Decision,
    Router,
    calibrated_confidence,
    check_disjoint,
    confidence_warning,
    raw_certainty,
    raw_name,
)
from steerunc.triage_bounds import budget_cut

__all__ = ["COMMANDS", "calibrate", "evaluate", "triage"]

_METHOD_CHOICES = [*METHODS, "logistic"]
_target_option = click.option(
    "--target",
    type=click.Choice(sorted(TARGETS)),
    default="fused",
    show_default=True,
    help="Which prediction 'correct' is about: fused (correct) or base (base_correct).",
)


def _check_score(scored: ScoredFile, records: list[tuple[int, dict[str, Any]]], score: str, what: str) -> None:
    """A score the first record does not offer is a bad flag value (exit 2), named with file and line."""
    line, data = records[0]
    names = score_names(data)
    if score not in names:
        have = ", ".join(names) or "none"
        raise FileLevelError(f"{scored.path}:{line}: no score '{score}' {what} (this record offers: {have})")


def _fit(calibrator: Calibrator, x: Any, y: Any, path: str) -> None:
    """Fit, naming the file when the data cannot be calibrated (e.g. no errors to learn from)."""
    try:
        calibrator.fit(x, y)
    except CalibrationError as exc:
        raise InputError(str(exc), path=path) from exc


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.option("--score", "-s", help="Score to calibrate (a key of 'scores', or fused_confidence/base_confidence).")
@click.option(
    "--method",
    "-m",
    type=click.Choice(_METHOD_CHOICES),
    default="isotonic",
    show_default=True,
    help="Calibration map; temperature scales the option logits and ignores --score.",
)
@_target_option
@click.option(
    "--higher-means",
    type=click.Choice(["uncertain", "confident"]),
    default=None,
    help="Direction of the score [default: confident for *_confidence, else uncertain].",
)
@click.option("--bins", type=click.IntRange(min=1), default=10, show_default=True, help="Bins (histogram method).")
@click.option("--output", "-o", default="-", show_default=True, help="Calibrator JSON to write ('-': stdout).")
@translate_errors
def calibrate(
    scored_path: str, score: str | None, method: str, target: str, higher_means: str | None, bins: int, output: str
) -> None:
    """Fit a map from a score to P(correct) on labelled scored records; save it as JSON.

    Records without 'label' or 'correct', error records and continuation
    records are skipped and counted.
    """
    check_outputs((output, "-o/--output"))
    scored = read_scored(scored_path)
    tgt = TARGETS[target]
    records, correct, unlabelled = scored.labelled(tgt)
    if not records:
        raise InputError(
            f"no labelled records to calibrate on: none of {len(scored.lines)} lines carries 'label' or "
            f"'{tgt.correct}' (skipped: {scored.skipped_text(unlabelled)})",
            path=scored_path,
        )
    params: dict[str, Any] = {"n_bins": bins} if method == "histogram" else {}
    if method == "temperature":
        if score not in (None, "logits"):
            raise FileLevelError("--method temperature scales the option logits; drop --score")
        labelled = [(ln, d) for ln, d in records if d.get("label") is not None]
        if not labelled:
            raise InputError("temperature scaling needs 'label' (records here only carry 'correct')", path=scored_path)
        calibrator: Calibrator = make_calibrator(method, target=target)
        matrix, _, labels = logits_matrix(labelled, tgt, scored_path, labels=True)
        if labels is None:  # pragma: no cover  (labels=True always returns them)
            raise InputError("no labels", path=scored_path)
        _fit(calibrator, matrix, labels, scored_path)
        calibrator.fitted_on_ = frozenset(record_keys(d for _, d in labelled))
        confidence = calibrator.predict(matrix)
        correct = (matrix.argmax(axis=1) == labels).astype(np.float64)
    else:
        if score is None:
            offered = ", ".join(score_names(records[0][1])) or "none"
            raise FileLevelError(f"--score is required for --method {method} (scores in {scored_path}: {offered})")
        _check_score(scored, records, score, "to calibrate")
        calibrator = make_calibrator(method, score, target=target, higher_means=higher_means, **params)
        values = np.array([score_of(d, score, scored_path, ln) for ln, d in records], dtype=np.float64)
        _fit(calibrator, values, correct, scored_path)
        calibrator.fitted_on_ = frozenset(record_keys(d for _, d in records))
        confidence = calibrator.predict(values)
    if output == "-":
        click.echo(json.dumps(calibrator.to_dict(source=os.path.basename(scored_path)), indent=2))
    else:
        save_calibrator(calibrator, output, source=os.path.basename(scored_path))
    stderr.print(
        f"Fitted [bold]{calibrator.method}[/] for [bold]{calibrator.score}[/] (target {target}) on "
        f"{len(confidence)} labelled records, {int(correct.sum())} correct; skipped: "
        f"{scored.skipped_text(unlabelled)}.\n"
        f"Calibrated confidence on these records: {confidence.min():.3f} to {confidence.max():.3f}, "
        f"in-sample ECE {ece(confidence, correct):.4f} (optimistic: measure it on held-out records with "
        "`steerunc evaluate --calibrator`)." + ("" if output == "-" else f"\nWrote {output}"),
        highlight=False,
    )
    warning = confidence_warning(confidence, calibrator)
    if warning:
        stderr.print(warning, highlight=False, soft_wrap=True)


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.option(
    "--calibrator",
    "-c",
    "calibrator_paths",
    multiple=True,
    metavar="CAL.json",
    help="Also evaluate this calibrator's confidence (repeatable).",
)
@_target_option
@click.option("--out", "out_dir", default=None, metavar="DIR", help="Write metrics.json and PNG/SVG plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics JSON to stdout.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ECE and MCE.")
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals of ECE and AUROC (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--no-smooth", is_flag=True, help="Skip smooth ECE (relplot).")
@translate_errors
def evaluate(
    scored_path: str,
    calibrator_paths: tuple[str, ...],
    target: str,
    out_dir: str | None,
    as_json: bool,
    bins: int,
    bootstrap: int,
    seed: int,
    no_smooth: bool,
) -> None:
    """Accuracy, calibration (ECE, MCE, Brier, NLL, smooth ECE) and error detection (AUROC, AUPRC,
    AURC, PRR, selective accuracy) for every score in a scored file."""
    from steerunc.evaluation import evaluate as run_evaluation

    if out_dir is not None:
        try:
            check_output_path(out_dir, "--out", directory=True)
        except InputError as exc:
            raise FileLevelError(str(exc)) from exc
    calibrators = [(path, load_calibrator(path)) for path in calibrator_paths]
    scored = read_scored(scored_path)
    result = run_evaluation(
        scored,
        target=target,
        calibrators=calibrators,
        n_bins=bins,
        n_boot=bootstrap,
        seed=seed,
        smooth=not no_smooth,
    )
    for table in evaluation_tables(result.report):
        stderr.print(table)
    if out_dir is not None:
        written = _write_evaluation(result, out_dir, bins)
        stderr.print(
            f"Wrote {len(written)} files to {out_dir}: {', '.join(os.path.basename(p) for p in written)}",
            highlight=False,
        )
    if as_json:
        click.echo(json.dumps(_jsonable(result.report), indent=2))


def _jsonable(obj: Any) -> Any:
    return json.loads(dumps(obj))  # NaN/inf -> null, tuples -> lists


def _write_evaluation(result: Any, out_dir: str, bins: int) -> list[str]:
    from steerunc.plots import reliability_diagram, risk_coverage_plot, save_figure

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics.json")
    with atomic_write(path) as handle:
        handle.write(json.dumps(_jsonable(result.report), indent=2) + "\n")
    written = [path]
    for row in result.rows:
        if row.confidence is None:
            continue
        name = f"{row.name} (judged against the {row.judged_against} prediction)"
        fig = reliability_diagram(row.confidence, row.correct, n_bins=bins, name=name)
        stem = os.path.join(out_dir, "reliability_" + row.name.replace("@", "_").replace(os.sep, "_"))
        written += save_figure(fig, stem)
    curves = {row.name: row.uncertainty for row in result.rows}
    correct = {row.name: row.correct for row in result.rows}
    against = {row.name: row.judged_against for row in result.rows}
    figure = risk_coverage_plot(curves, correct, judged_against=against)
    written += save_figure(figure, os.path.join(out_dir, "risk_coverage"))
    return written


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.option("--calibrator", "-c", "calibrator_path", metavar="CAL.json", help="Calibrator from `steerunc calibrate`.")
@click.option(
    "--budget",
    type=FiniteFloatRange(0, 1),
    help="Send this share of the records (rounded down) to review; ties in confidence go by the raw score.",
)
@click.option(
    "--max-risk",
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    help="Keep the error rate of accepted records at most this, with probability >= 1 - delta.",
)
@click.option(
    "--delta",
    type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
    default=0.1,
    show_default=True,
    help="Allowed probability that the --max-risk guarantee fails.",
)
@click.option(
    "--calibration-data",
    metavar="LABELLED.jsonl",
    help="Labelled scored records to choose the --max-risk threshold on, none of them among those the "
    "calibrator was fitted on [default: the labelled input].",
)
@click.option("--policy", "policy_path", metavar="POLICY.json", help="Apply a saved policy instead.")
@click.option("--policy-out", metavar="POLICY.json", help="Save the threshold, its guarantee and the calibrator.")
@click.option("--accept-out", required=True, metavar="ACCEPT.jsonl", help="Records accepted automatically.")
@click.option("--review-out", required=True, metavar="REVIEW.jsonl", help="Records for a person to review.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON to stdout.")
@translate_errors
def triage(
    scored_path: str,
    calibrator_path: str | None,
    budget: float | None,
    max_risk: float | None,
    delta: float,
    calibration_data: str | None,
    policy_path: str | None,
    policy_out: str | None,
    accept_out: str,
    review_out: str,
    as_json: bool,
) -> None:
    """Route every record to ACCEPT or REVIEW by calibrated confidence, each annotated with its
    confidence and the reason.

    Choose the threshold with --budget or --max-risk (with --calibrator), or
    apply a saved --policy. --max-risk needs three disjoint parts: labelled
    records that fit the calibrator, labelled records that choose the threshold,
    and the records the policy is applied to; it refuses threshold records the
    calibrator was fitted on. Nothing is written unless everything can be: the
    records, the policy and every output are checked first, and the output files
    are renamed into place together.
    """
    modes = [
        name
        for name, value in (("--budget", budget), ("--max-risk", max_risk), ("--policy", policy_path))
        if value is not None
    ]
    if len(modes) != 1:
        raise click.UsageError("give exactly one of --budget, --max-risk or --policy")
    if policy_path is not None and calibrator_path is not None:
        raise click.UsageError("--policy already holds its calibrator; drop --calibrator")
    if policy_path is None and calibrator_path is None:
        raise click.UsageError(f"{modes[0]} needs --calibrator CAL.json")
    if calibration_data is not None and max_risk is None:
        raise click.UsageError("--calibration-data is only used with --max-risk")
    check_outputs((accept_out, "--accept-out"), (review_out, "--review-out"), (policy_out, "--policy-out"))

    scored = read_scored(scored_path)
    decisions: list[Decision] | None = None  # a budget router decides while it is chosen
    if policy_path is not None:
        router = Router.from_policy(policy_path)
        _check_input(scored, router.calibrator, policy_path)
    elif calibrator_path is not None:
        calibrator = load_calibrator(calibrator_path)
        _check_input(scored, calibrator, calibrator_path)
        if budget is not None:
            router, decisions = _budget_router(scored, calibrator, budget)
        elif max_risk is not None:
            router = _risk_router(scored, calibrator, calibrator_path, max_risk, delta, calibration_data)

    scored.labelled(TARGETS[router.calibrator.target])  # a bad label stops here, before anything is written
    if decisions is None:
        decisions = router.route_many([ln.data for ln in scored.lines], scored_path)
    policy_text = router.policy_text() if policy_out is not None else None  # fails here, before any write
    summary = triage_summary(scored, router, decisions, accept_out, review_out, policy_out, policy_path)
    warning = confidence_warning([d.confidence for d in decisions if d.confidence is not None], router.calibrator)
    if warning:
        stderr.print(warning, highlight=False, soft_wrap=True)
    paths = [accept_out, review_out] + ([policy_out] if policy_out is not None else [])
    with atomic_write_many(paths) as handles:
        accept, review = handles[0], handles[1]
        for ln, decision in zip(scored.lines, decisions):
            (accept if decision.accepted else review).write(dumps(decision.annotate(ln.data, ln.number)) + "\n")
        if policy_text is not None:
            handles[2].write(policy_text)
    if as_json:
        click.echo(json.dumps(_jsonable(summary["json"]), indent=2))
    stderr.print(summary["text"], highlight=False)


def _check_input(scored: ScoredFile, calibrator: Calibrator, source: str) -> None:
    """If no usable record offers the calibrator's input, the calibrator is for another score or system."""
    records = scored.records
    if not records:
        return
    needed = TARGETS[calibrator.target].logits if calibrator.input_kind == "logits" else calibrator.score
    if calibrator.input_kind == "logits":
        present = any(isinstance(d.get(needed), dict) for _, d in records)
    else:
        present = any(needed in score_names(d) for _, d in records)
    if not present:
        line, data = records[0]
        raise InputError(
            f"no record offers '{needed}', which the calibrator {source} was fitted on "
            f"(this record offers: {', '.join(score_names(data)) or 'none'})",
            path=scored.path,
            line=line,
        )


def _budget_router(scored: ScoredFile, calibrator: Calibrator, budget: float) -> tuple[Router, list[Decision]]:
    """The router and its decisions on this file: exactly floor(budget * lines) lines go to review
    (all of them if fewer are scorable). Error and unscorable records go to review anyway and count
    against the budget; the others are ranked by (confidence, raw score, line), the earlier of two
    lines tied on both going to review first (the one place the decisions differ from the router's rule)."""
    data = [ln.data for ln in scored.lines]
    probe = Router(calibrator, 0.0)
    decisions = probe.route_many(data, scored.path)
    scorable = [i for i, d in enumerate(decisions) if d.confidence is not None]
    source = os.path.basename(scored.path)
    if not scorable:
        return Router(calibrator, None, mode="budget", budget=budget, source=source), decisions
    confidence = np.array([decisions[i].confidence for i in scorable], dtype=np.float64)
    good = [(scored.lines[i].number, data[i] or {}) for i in scorable]
    raw = raw_certainty(calibrator, good, scored.path)
    allowed = int(np.floor(budget * len(decisions) + 1e-9)) - (len(decisions) - len(scorable))
    cut = budget_cut(confidence, raw, min(len(scorable), max(0, allowed)))
    router = Router(
        calibrator, cut.threshold, mode="budget", budget=budget, source=source, tie_threshold=cut.tie_threshold
    )
    decisions = router.route_many(data, scored.path)
    for j, i in enumerate(scorable):
        if cut.review[j] and decisions[i].accepted:  # tied with the first accepted line on both keys
            reason = (
                f"confidence {confidence[j]:.4f} and raw score {raw_name(calibrator)} {raw[j]:.6g} tie with "
                "the first accepted line; the budget sends the earliest tied lines to review"
            )
            decisions[i] = Decision("review", float(confidence[j]), reason, cut.threshold)
    return router, decisions


def _risk_router(
    scored: ScoredFile,
    calibrator: Calibrator,
    calibrator_path: str,
    max_risk: float,
    delta: float,
    calibration_data: str | None,
) -> Router:
    """Threshold chosen on labelled records disjoint from those the calibrator was fitted on."""
    source = read_scored(calibration_data) if calibration_data is not None else scored
    records, correct, _ = source.labelled(TARGETS[calibrator.target])
    if not records:
        hint = (
            ""
            if calibration_data
            else ": pass --calibration-data LABELLED.jsonl, labelled records kept apart from those the "
            "calibrator was fitted on (three disjoint parts: fit the calibrator, choose the threshold, triage)"
        )
        raise InputError(
            f"--max-risk chooses its threshold on labelled records and this file has none{hint}", path=source.path
        )
    if not check_disjoint(calibrator, [d for _, d in records], source.path, calibrator_path):
        stderr.print(
            f"warning: {calibrator_path} does not record which records it was fitted on (saved by an older "
            f"steerunc, or fitted without them), so steerunc cannot check that the --max-risk threshold is chosen on others; the "
            f"guarantee holds only if {source.path} shares no record with them (refit with `steerunc calibrate` "
            "to have this checked)",
            highlight=False,
            soft_wrap=True,
        )
    confidence = calibrated_confidence(calibrator, records, source.path)
    return Router.for_risk(calibrator, confidence, correct, max_risk, delta, source=os.path.basename(source.path))


COMMANDS = [calibrate, evaluate, triage]
