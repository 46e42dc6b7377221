"""``steerunc score``: score a JSONL, CSV or Parquet file with steering disagreement."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import click

from steerunc.cli.common import (
    FINITE_FLOAT,
    MODEL_HELP,
    FileLevelError,
    check_model_arg,
    check_outputs,
    setup_logging,
    stderr,
    translate_errors,
)
from steerunc.cli.resume import Done, check_resume, done_lines
from steerunc.errors import InputError, VectorsError
from steerunc.io import Line, dumps, open_output, read_jsonl
from steerunc.records import ErrorRecord, Record, check_template, id_of, record_from_json
from steerunc.tables import FORMATS, format_of, sniff_format

__all__ = ["COMMANDS", "score"]


def _count_lines(path: str, fmt: str, lines: Iterator[Line] | None = None) -> int | None:
    """Non-blank lines of a JSONL file, read in pieces (a line may be longer than memory should
    hold); rows of a CSV or Parquet file, counted from ``lines``."""
    if path == "-":
        return None
    if fmt != "jsonl":
        return sum(1 for _ in lines or ())
    count, content = 0, False
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            *complete, rest = chunk.split(b"\n")
            for part in complete:
                count += content or bool(part.strip())
                content = False
            content = content or bool(rest.strip())
    return count + content


def _items(
    lines: Iterator[Line], done: dict[int, Done], options: list[str] | None, template: str | None = None
) -> Iterator[Record | ErrorRecord]:
    for line in lines:
        if line.number in done:
            continue
        if line.error is not None or line.data is None:
            yield ErrorRecord(line.number, line.error or "empty line")
            continue
        try:
            yield record_from_json(line.data, line.number, options, template)
        except InputError as exc:
            try:
                rid = id_of(line.data)
            except InputError:
                rid = None
            yield ErrorRecord(line.number, exc.message, rid)


def _input_format(path: str, given: str | None, text_col: str | None) -> str:
    """The input's format (--format, else the file name's), refused (exit 2) where the file's first
    bytes plainly say it is another: a CSV read as JSONL would be one error per line, after the model
    has loaded."""
    fmt = given or ("jsonl" if path == "-" else format_of(path))
    if path == "-":
        if fmt == "parquet":
            raise click.UsageError("Parquet cannot be read from stdin: give the file's path")
        return fmt
    try:
        seen = sniff_format(path, text_col or "text")
    except OSError as exc:
        raise FileLevelError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if seen is None or seen == fmt:
        return fmt
    names = {"jsonl": "JSONL", "csv": "CSV", "parquet": "Parquet"}
    if fmt == "jsonl" and seen == "csv":
        raise FileLevelError(
            f"{path}: not JSONL (its first line does not start with '{{'): it looks like CSV with a header "
            "line; use --format csv (and --text-col to name the text column)"
        )
    raise FileLevelError(f"{path}: not {names[fmt]}: it looks like {names[seen]}; use --format {seen}")


@dataclass
class _Summary:
    """What an output holds, for the lines printed at the end of a run."""

    path: str
    records: int = 0
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    predictions: Counter[str] = field(default_factory=Counter)
    base_predictions: Counter[str] = field(default_factory=Counter)
    options: Counter[str] = field(default_factory=Counter)  # predictions of records scored over options
    labelled: int = 0
    correct: int = 0
    base_correct: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, out: dict[str, Any]) -> None:
        if "error" in out:
            self.errors.append((out.get("line"), str(out["error"])))
            return
        self.records += 1
        if out.get("prediction") is not None:
            self.predictions[str(out["prediction"])] += 1
        if out.get("base_prediction") is not None:
            self.base_predictions[str(out["base_prediction"])] += 1
        if out.get("mode") == "options" and out.get("prediction") is not None:
            self.options[str(out["prediction"])] += 1
        if isinstance(out.get("correct"), bool):
            self.labelled += 1
            self.correct += out["correct"]
            self.base_correct += out.get("base_correct") is True
        for name, value in (out.get("scores") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] += 1

    @staticmethod
    def _counts(counter: Counter[str], top: int = 8) -> str:
        shown = ", ".join(f"{name} {n}" for name, n in counter.most_common(top))
        return shown + (f", and {len(counter) - top} more" if len(counter) > top else "")

    def lines(self) -> list[str]:
        """Predictions per class, accuracy where labelled, the mean of each score, the first errors."""
        out = []
        if self.predictions:
            out.append(f"  predictions: {self._counts(self.predictions)} (plain model: {self._counts(self.base_predictions)})")
        if self.labelled:
            out.append(
                f"  accuracy: {self.correct / self.labelled:.3f} (plain model {self.base_correct / self.labelled:.3f}) "
                f"on {self.labelled} labelled records"
            )
        if self.counts:
            means = ", ".join(f"{name} {self.sums[name] / self.counts[name]:.3g}" for name in self.counts)
            out.append(f"  mean scores: {means}")
        for line, error in self.errors[:3]:
            out.append(f"  error: {self.path}:{line}: {error}")
        if len(self.errors) > 3:
            out.append(f"  ... and {len(self.errors) - 3} more errors (the records with 'error')")
        return out

    def warnings(self) -> list[str]:
        n = sum(self.options.values())
        if n >= 2 and len(self.options) == 1:
            (only,) = self.options
            return [
                f"warning: every one of the {n} records is predicted {only!r}: the scores rank records "
                "but the predictions tell them nothing apart (check that each text ends where the answer goes, "
                "e.g. 'Answer:', and the options)"
            ]
        return []


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output JSONL (default: stdout).")
@click.option("--format", "input_format", type=click.Choice(list(FORMATS)),
              help="Format of INPUT (default: from its suffix, .csv or .parquet, else jsonl).")
@click.option("--text-col", metavar="COLUMN", help="Column (or JSON field) holding the text [default: text].")
@click.option("--template", metavar="PROMPT",
              help="Prompt around each text: {text} is replaced by it, and \\n in PROMPT is a newline; e.g. "
                   "'Comment: \"{text}\"\\nIs this comment offensive? Answer Yes or No.\\nAnswer:'.")
@click.option("--label-col", metavar="COLUMN", help="Column holding the label [default: label, if there is one].")
@click.option("--id-col", metavar="COLUMN", help="Column holding the id [default: id, if there is one].")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--vectors", "vectors_path", type=click.Path(dir_okay=False),
              help="Steering vectors (.safetensors from 'steerunc vectors build'); default: the shipped perspectives.")
@click.option("--layer", type=int, help="Block whose output is steered (default: the vectors' layer; shipped set: the model's default layer, 20 on the default model, else the second-to-last block).")
@click.option("--coeff", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="Vector length relative to the mean residual norm at the layer.")
@click.option("--center/--no-center", default=None,
              help="Steer with the vectors minus their mean, keeping what tells the perspectives apart "
                   "(default: centre when there are 2 or more vectors).")
@click.option("--chat", is_flag=True,
              help="Read every text as the user turn of the model's chat template (a record's \"chat\" field overrides).")
@click.option("--options", "options_csv", help="Comma-separated options for records without 'options', e.g. 'No,Yes,Unsure'.")
@click.option("--tau", type=FINITE_FLOAT, default=0.4, show_default=True,
              help="Temperature at which views are compared (mutual_info, mean_kl, kl); outputs are at 1.")
@click.option("--fusion", "fusion_method", type=click.Choice(["mixture", "dvd"]), default="mixture", show_default=True,
              help="Fused prediction: the mixture of the views, or the seed work's contrastive DVD logits.")
@click.option("--alpha", type=FINITE_FLOAT, default=0.2, show_default=True, help="Contrast of the fused logits (--fusion dvd).")
@click.option("--top-m", type=int, default=10, show_default=True, help="Entries in the top-m entropy weighting (--fusion dvd).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Rows per forward pass.")
@click.option("--max-tokens", type=click.IntRange(min=2), help="Truncate texts from the left to this many tokens (default: context).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
              help="auto: float32 on CPU, bfloat16 on CUDA.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip input lines already in OUTPUT.")
@click.option("--strict", is_flag=True, help="Stop at the first bad record (exit 1).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, log messages or summary (warnings still show).")
@translate_errors
def score(
    input_path: str, output: str | None, input_format: str | None, text_col: str | None, template: str | None,
    label_col: str | None,
    id_col: str | None, model: str, vectors_path: str | None, layer: int | None, coeff: float,
    center: bool | None, chat: bool, options_csv: str | None, tau: float, fusion_method: str, alpha: float, top_m: int, batch_size: int, max_tokens: int | None,
    device: str, dtype: str, resume: bool, strict: bool, quiet: bool,
) -> None:
    """Score INPUT (JSONL, CSV or Parquet; - for stdin): one output line per input line or row, in order.

    Input lines: {"id", "text", "options"?, "label"?, "continuation"?, "human_probs"?, "chat"?, "group"?};
    a CSV or Parquet file has those columns, or others named by --text-col,
    --label-col and --id-col. Output lines: the fused prediction and
    probabilities, the base ones, the scores (msp, entropy, mutual_info, mean_kl,
    flip_rate, fused_entropy; higher = less sure) and each perspective's view; or
    {"id"?, "line", "error"} for a bad line or row ('line': the physical line it
    starts on, the CSV header being line 1; a Parquet row's number). Blank lines
    are skipped. At the end a summary goes to stderr. Exits 1 if any line failed
    (with --resume, also lines that failed in the earlier run). 'group' (a
    string) is carried into the output: records sharing one are not
    independent: `calibrate --scores` keeps each group in one
    cross-validation fold, and `evaluate` resamples whole groups.
    """
    from steerunc.integrations.frames import read_input

    if input_path != "-" and not os.path.isfile(input_path):
        raise FileLevelError(f"{input_path}: no such input file")
    if resume and output in (None, "-"):
        raise click.UsageError("--resume needs -o/--output: the file to continue")
    check_outputs((output, "-o/--output"))
    if output not in (None, "-") and input_path != "-" and os.path.exists(output) and os.path.samefile(input_path, output):
        raise click.UsageError(f"-o/--output {output} is the input file: it would be overwritten before it is read")
    if template is not None:
        try:
            template = check_template(template.replace("\\n", "\n"))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--template") from exc
    options = [o.strip() for o in options_csv.split(",") if o.strip()] if options_csv else None
    if options is not None and (len(options) < 2 or len(set(options)) != len(options)):
        raise click.BadParameter(f"needs at least two distinct options, got {options_csv!r}", param_hint="--options")
    if vectors_path is not None and not os.path.isfile(vectors_path):
        raise FileLevelError(f"{vectors_path}: no such vector file")
    check_model_arg(model)
    fmt = _input_format(input_path, input_format, text_col)
    columns = {"text": text_col, "label": label_col, "id": id_col}
    _, lines = read_input(input_path, fmt, **columns)  # a CSV or Parquet header without these columns stops here
    setup_logging(quiet)

    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.vectors import load_vectors

    try:
        fusion = FusionConfig(tau=tau, alpha=alpha, top_m=top_m, method=fusion_method)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    vectors = load_vectors(vectors_path) if vectors_path else None  # a malformed file stops before the model loads
    done = done_lines(output) if resume and output else {}
    summary = _Summary(input_path)
    if done:
        for line in read_jsonl(output or ""):
            summary.add(line.data if line.data is not None else {"line": None, "error": line.error})
    bad_before = sum(d.error for d in done.values())
    where = f" -> {output}" if output not in (None, "-") else ""
    if done and input_path != "-":  # an output for another input stops before the model loads
        left = sum(line.number not in done for line in check_resume(lines, done, options, input_path, output or ""))
        if not left:  # nothing to score: the model is not loaded
            _report(summary, quiet, f"nothing left to do: all {len(done)} input lines are in {output} ({bad_before} of them errors)")
            raise click.exceptions.Exit(1 if bad_before else 0)
        _, lines = read_input(input_path, fmt, **columns)
    elif done:  # stdin: checked as it is read
        lines = check_resume(lines, done, options, input_path, output or "")
    rows = read_input(input_path, fmt, **columns)[1] if fmt != "jsonl" and input_path != "-" else None
    total = _count_lines(input_path, fmt, rows)

    from steerunc.scoring.model import load_model
    from steerunc.scoring.scorer import Scorer, ScoreConfig

    loaded = load_model(model, device=device, dtype=dtype)
    if vectors is not None:
        try:
            vectors.check_model(loaded)
        except VectorsError as exc:
            raise VectorsError(f"{vectors_path}: {exc}") from exc
    config = ScoreConfig(coeff=coeff, layer=layer, center=center, fusion=fusion, batch_size=batch_size,
                         max_tokens=max_tokens, chat=chat)
    scorer = Scorer(loaded, vectors, config)

    n_ok = n_bad = 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns_shown = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns_shown, console=stderr, disable=quiet) as progress, open_output(output, append=resume) as out:
        task = progress.add_task("score", total=total, completed=len(done))
        for result in scorer.score_iter(_items(lines, done, options, template)):
            record = result.to_json()
            out.write(dumps(record) + "\n")
            out.flush()
            progress.advance(task)
            summary.add(record)
            if isinstance(result, ErrorRecord):
                n_bad += 1
                if strict:
                    raise click.ClickException(f"{input_path}:{result.line}: {result.error} (--strict)")
            else:
                n_ok += 1
    resumed = f" ({len(done)} already done, {bad_before} of them errors)" if done else ""
    _report(summary, quiet, f"scored {n_ok} records, {n_bad} errors{resumed}{where}")
    if n_bad or bad_before:
        raise click.exceptions.Exit(1)


def _report(summary: _Summary, quiet: bool, headline: str) -> None:
    """The summary on stderr (not with -q), then any warning (always)."""
    if not quiet:
        stderr.print("\n".join([headline, *summary.lines()]), markup=False, highlight=False, soft_wrap=True)
    for warning in summary.warnings():
        stderr.print(warning, markup=False, highlight=False, soft_wrap=True)


COMMANDS = [score]
