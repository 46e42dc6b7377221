"""``steerunc evaluate``: every metric of every score, and of every calibrator given."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from steerunc.judging.calibration import load_calibrator
from steerunc.cli.common import FileLevelError, stderr, translate_errors
from steerunc.cli.judge_common import jsonable, load_prior_arg, print_notes, prior_option, target_option
from steerunc.cli.judge_report import evaluation_tables
from steerunc.errors import InputError
from steerunc.io import atomic_write, check_output_path
from steerunc.scored import read_scored

__all__ = ["evaluate"]


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
@target_option
@prior_option
@click.option(
    "--in-sample",
    is_flag=True,
    help="Evaluate records a calibrator (or the prior) was fitted on, labelling the report and every "
    "table and plot 'in-sample' (refused without it).",
)
@click.option("--out", "out_dir", default=None, metavar="DIR", help="Write metrics.json and PNG/SVG plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics JSON to stdout.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ECE and MCE.")
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals of ECE and AUROC (0: none); records sharing a 'group' are resampled together.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--no-smooth", is_flag=True, help="Skip smooth ECE (relplot).")
@translate_errors
def evaluate(
    scored_path: str,
    calibrator_paths: tuple[str, ...],
    target: str,
    prior_path: str | None,
    in_sample: bool,
    out_dir: str | None,
    as_json: bool,
    bins: int,
    bootstrap: int,
    seed: int,
    no_smooth: bool,
) -> None:
    """Accuracy, calibration (ECE, MCE, Brier, NLL, smooth ECE) and error detection (AUROC, AUPRC,
    AURC, PRR, selective accuracy) for every score in a scored file.

    A calibrator (or --prior) fitted on some of the evaluated records is
    refused, as are those made for records scored with other settings.
    """
    from steerunc.judging.evaluation import evaluate as run_evaluation

    if out_dir is not None:
        try:
            check_output_path(out_dir, "--out", directory=True)
        except InputError as exc:
            raise FileLevelError(str(exc)) from exc
    calibrators = [(path, load_calibrator(path)) for path in calibrator_paths]
    prior = load_prior_arg(prior_path)
    scored = read_scored(scored_path)
    result = run_evaluation(
        scored,
        target=target,
        calibrators=calibrators,
        n_bins=bins,
        n_boot=bootstrap,
        seed=seed,
        smooth=not no_smooth,
        prior=None if prior is None or prior_path is None else (prior_path, prior),
        in_sample=in_sample,
    )
    print_notes(result.notes)
    for table in evaluation_tables(result.report):
        stderr.print(table)
    if out_dir is not None:
        written = _write_evaluation(result, out_dir, bins)
        stderr.print(
            f"Wrote {len(written)} files to {out_dir}: {', '.join(os.path.basename(p) for p in written)}",
            highlight=False,
        )
    if as_json:
        click.echo(json.dumps(jsonable(result.report), indent=2))


def _write_evaluation(result: Any, out_dir: str, bins: int) -> list[str]:
    """metrics.json, and the figures of :func:`steerunc.judging.plots.evaluation_figures` (titled in-sample when
    the report is) as PNG and SVG."""
    from steerunc.judging.plots import evaluation_figures, save_figure

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics.json")
    with atomic_write(path) as handle:
        handle.write(json.dumps(jsonable(result.report), indent=2) + "\n")
    written = [path]
    for stem, figure in evaluation_figures(result.rows, n_bins=bins, in_sample=result.in_sample).items():
        written += save_figure(figure, os.path.join(out_dir, stem))
    return written
