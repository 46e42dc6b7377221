"""``steerunc triage``: route every record to acceptance or review by calibrated confidence."""

from __future__ import annotations

import json
import os

import click
import numpy as np

from steerunc.judging.calibration import Calibrator, load_calibrator
from steerunc.cli.common import FiniteFloatRange, check_outputs, stderr, translate_errors
from steerunc.cli.judge_common import (
    check_prior,
    jsonable,
    load_prior_arg,
    print_notes,
    prior_option,
    settings_notes,
)
from steerunc.cli.judge_report import triage_summary
from steerunc.judging.confidence import (
    calibrated_confidence,
    confidence_warning,
    input_names,
    offers_input,
    raw_certainty,
    raw_name,
)
from steerunc.errors import InputError
from steerunc.io import Line, atomic_write_many, dumps
from steerunc.judging.option_prior import OptionPrior
from steerunc.judging.provenance import check_disjoint
from steerunc.scored import TARGETS, ScoredFile, read_scored, record_groups, score_names
from steerunc.judging.triage import Decision, Router
from steerunc.judging.triage_bounds import budget_cut, one_per_group

__all__ = ["triage"]


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.option("--calibrator", "-c", "calibrator_path", metavar="CAL.json", help="Calibrator from `steerunc calibrate`.")
@prior_option
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
@click.option(
    "--one-per-group",
    is_flag=True,
    help="--max-risk: choose the threshold on one record per 'group', drawn at random (records of one group "
    "err together; the guarantee needs independent records).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --one-per-group draw.")
@click.option("--policy", "policy_path", metavar="POLICY.json", help="Apply a saved policy instead.")
@click.option("--policy-out", metavar="POLICY.json", help="Save the threshold, its guarantee and the calibrator.")
@click.option("--accept-out", required=True, metavar="ACCEPT.jsonl", help="Records accepted automatically.")
@click.option("--review-out", required=True, metavar="REVIEW.jsonl", help="Records for a person to review.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON to stdout.")
@translate_errors
def triage(
    scored_path: str,
    calibrator_path: str | None,
    prior_path: str | None,
    budget: float | None,
    max_risk: float | None,
    delta: float,
    calibration_data: str | None,
    one_per_group: bool,
    seed: int,
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
    calibrator was fitted on. With --prior (or a policy that holds one), each
    record's prediction is corrected first and the outputs carry the corrected
    record. A calibrator or policy made for records scored with other settings
    is refused. Nothing is written unless everything can be: the records, the
    policy and every output are checked first, and the output files are renamed
    into place together.
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
    if policy_path is not None and prior_path is not None:
        raise click.UsageError("--policy already holds its option prior; drop --prior")
    if policy_path is None and calibrator_path is None:
        raise click.UsageError(f"{modes[0]} needs --calibrator CAL.json")
    if calibration_data is not None and max_risk is None:
        raise click.UsageError("--calibration-data is only used with --max-risk")
    if one_per_group and max_risk is None:
        raise click.UsageError("--one-per-group is only used with --max-risk")
    check_outputs((accept_out, "--accept-out"), (review_out, "--review-out"), (policy_out, "--policy-out"))

    scored = read_scored(scored_path)
    decisions: list[Decision] | None = None  # a budget router decides while it is chosen
    if policy_path is not None:
        router = Router.from_policy(policy_path)
        notes = _check_input(scored, router.calibrator, router.prior, policy_path, policy_path)
    elif calibrator_path is not None:
        calibrator = load_calibrator(calibrator_path)
        prior = load_prior_arg(prior_path)
        check_prior(calibrator, calibrator_path, prior)
        notes = _check_input(scored, calibrator, prior, calibrator_path, prior_path)
        if budget is not None:
            router, decisions = _budget_router(scored, calibrator, budget, prior)
        elif max_risk is not None:
            thin = seed if one_per_group else None
            router, more = _risk_router(scored, calibrator, calibrator_path, max_risk, delta, calibration_data,
                                        prior, prior_path, thin)
            notes += more

    scored.labelled(TARGETS[router.calibrator.target])  # a bad label stops here, before anything is written
    if decisions is None:
        decisions = router.route_many([ln.data for ln in scored.lines], scored_path)
    policy_text = router.policy_text() if policy_out is not None else None  # fails here, before any write
    shown = ScoredFile(
        scored.path,
        [ln if d.corrected is None else Line(ln.number, d.corrected, ln.error) for ln, d in zip(scored.lines, decisions)],
        scored.counts,
    )
    summary = triage_summary(shown, router, decisions, accept_out, review_out, policy_out, policy_path)
    warning = confidence_warning([d.confidence for d in decisions if d.confidence is not None], router.calibrator)
    print_notes(notes + ([warning] if warning else []))
    paths = [accept_out, review_out] + ([policy_out] if policy_out is not None else [])
    with atomic_write_many(paths) as handles:
        accept, review = handles[0], handles[1]
        for ln, decision in zip(scored.lines, decisions):
            (accept if decision.accepted else review).write(dumps(decision.annotate(ln.data, ln.number)) + "\n")
        if policy_text is not None:
            handles[2].write(policy_text)
    if as_json:
        click.echo(json.dumps(jsonable(summary["json"]), indent=2))
    stderr.print(summary["text"], highlight=False)


def _check_input(
    scored: ScoredFile, calibrator: Calibrator, prior: OptionPrior | None, source: str, prior_source: str | None
) -> list[str]:
    """If no usable record offers the calibrator's input, the calibrator is for another score or system;
    a calibrator or prior made for other scoring settings is refused. Returns notes to print."""
    records = scored.records
    if not records:
        return []
    if not any(offers_input(calibrator, d) for _, d in records):
        line, data = records[0]
        raise InputError(
            f"no record offers '{', '.join(input_names(calibrator))}', which the calibrator {source} was fitted on "
            f"(this record offers: {', '.join(score_names(data)) or 'none'})",
            path=scored.path,
            line=line,
        )
    fitted: list[tuple[str, str, Calibrator | OptionPrior]] = [("calibrator", source, calibrator)]
    if prior is not None:
        fitted.append(("option prior", prior_source or source, prior))
    return settings_notes(scored, records, fitted)


def _budget_router(
    scored: ScoredFile, calibrator: Calibrator, budget: float, prior: OptionPrior | None
) -> tuple[Router, list[Decision]]:
    """The router and its decisions on this file: exactly floor(budget * lines) lines go to review
    (all of them if fewer are scorable). Error and unscorable records go to review anyway and count
    against the budget; the others are ranked by (confidence, raw score, line), the earlier of two
    lines tied on both going to review first (the one place the decisions differ from the router's rule)."""
    data = [ln.data for ln in scored.lines]
    probe = Router(calibrator, 0.0, prior=prior)
    decisions = probe.route_many(data, scored.path)
    scorable = [i for i, d in enumerate(decisions) if d.confidence is not None]
    source = os.path.basename(scored.path)
    if not scorable:
        return Router(calibrator, None, mode="budget", budget=budget, source=source, prior=prior), decisions
    confidence = np.array([decisions[i].confidence for i in scorable], dtype=np.float64)
    good = [(scored.lines[i].number, decisions[i].corrected or data[i] or {}) for i in scorable]
    raw = raw_certainty(calibrator, good, scored.path)
    allowed = int(np.floor(budget * len(decisions) + 1e-9)) - (len(decisions) - len(scorable))
    cut = budget_cut(confidence, raw, min(len(scorable), max(0, allowed)))
    router = Router.at_cut(calibrator, cut, budget, source, prior)
    decisions = router.route_many(data, scored.path)
    for j, i in enumerate(scorable):
        if cut.review[j] and decisions[i].accepted:  # tied with the first accepted line on both keys
            reason = (
                f"confidence {confidence[j]:.4f} and raw score {raw_name(calibrator)} {raw[j]:.6g} tie with "
                "the first accepted line; the budget sends the earliest tied lines to review"
            )
            decisions[i] = Decision("review", float(confidence[j]), reason, cut.threshold, decisions[i].corrected)
    return router, decisions


def _risk_router(
    scored: ScoredFile,
    calibrator: Calibrator,
    calibrator_path: str,
    max_risk: float,
    delta: float,
    calibration_data: str | None,
    prior: OptionPrior | None,
    prior_path: str | None,
    thin: int | None = None,
) -> tuple[Router, list[str]]:
    """Threshold chosen on labelled records disjoint from those the calibrator (and prior) were fitted on;
    ``thin`` (a seed): on one record per group, drawn at random."""
    source = read_scored(calibration_data) if calibration_data is not None else scored
    if prior is not None:
        source = prior.correct_file(source)
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
    notes: list[str] = []
    if calibration_data is not None:
        fitted: list[tuple[str, str, Calibrator | OptionPrior]] = [("calibrator", calibrator_path, calibrator)]
        if prior is not None:
            fitted.append(("option prior", prior_path or "", prior))
        notes += settings_notes(source, records, fitted)
    if not check_disjoint(calibrator, [d for _, d in records], source.path, calibrator_path):
        notes.append(
            f"warning: {calibrator_path} does not record which records it was fitted on (saved by an older "
            f"steerunc, or fitted without them), so steerunc cannot check that the --max-risk threshold is chosen "
            f"on others; the guarantee holds only if {source.path} shares no record with them (refit with "
            "`steerunc calibrate` to have this checked)"
        )
    if prior is not None:
        check_disjoint(prior, [d for _, d in records], source.path, prior_path, what="option prior")
    groups = record_groups(records)
    shared = groups is not None and len(set(groups)) < len(groups)
    confidence = calibrated_confidence(calibrator, records, source.path)
    sample = None
    if thin is not None and groups is not None and shared:
        kept = one_per_group(groups, thin)
        sample = (f"one record per group ('group'), drawn at random with seed {thin}: {kept.size} of the "
                  f"{len(records)} labelled records")
        confidence, correct = np.asarray(confidence)[kept], np.asarray(correct)[kept]
        notes.append(f"note: the threshold is chosen on {sample} in {source.path}")
    elif thin is not None:
        notes.append(f"note: --one-per-group: no two labelled records in {source.path} share a 'group'; "
                     "every one is used")
    elif shared:
        assert groups is not None
        notes.append(
            f"warning: the {len(groups)} records in {source.path} that choose the threshold fall in "
            f"{len(set(groups))} groups ('group'): the guarantee assumes independent records, and records of "
            "one group err together, so it is optimistic here; pass --one-per-group to choose the threshold "
            "on one record per group"
        )
    router = Router.for_risk(
        calibrator, confidence, correct, max_risk, delta, source=os.path.basename(source.path), prior=prior,
        sample=sample,
    )
    return router, notes
