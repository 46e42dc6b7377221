"""``steerunc score``: score a JSONL file with steering disagreement."""

from __future__ import annotations

import os
from typing import Any, Iterator

import click

from steerunc.cli.common import FileLevelError, setup_logging, stderr, translate_errors
from steerunc.errors import InputError
from steerunc.io import dumps, open_output, read_jsonl
from steerunc.records import ErrorRecord, Record, record_from_json

__all__ = ["COMMANDS", "score"]

MODEL_HELP = "'default' (Gemma 3 270M), 'tiny-random', or a local Hugging Face model directory."


def _done_lines(path: str) -> set[int]:
    """Input line numbers an earlier run already wrote; drops a half-written last line."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):  # killed mid-line: cut the fragment
            keep = data.rfind(b"\n") + 1
            handle.seek(keep)
            handle.truncate()
            data = data[:keep]
    done = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        line = next(iter(_safe_parse(raw)), None)
        if line is None or not isinstance(line.get("line"), int):
            raise InputError("cannot resume: this output line has no input 'line' number", path=path, line=number)
        done.add(line["line"])
    return done


def _safe_parse(raw: bytes) -> Iterator[dict[str, Any]]:
    import json

    try:
        value = json.loads(raw)
    except ValueError:
        return
    if isinstance(value, dict):
        yield value


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as handle:
        return sum(1 for raw in handle if raw.strip())


def _items(path: str, skip: set[int], options: list[str] | None) -> Iterator[Record | ErrorRecord]:
    for line in read_jsonl(path):
        if line.number in skip:
            continue
        if line.error is not None or line.data is None:
            yield ErrorRecord(line.number, line.error or "empty line")
            continue
        try:
            yield record_from_json(line.data, line.number, options)
        except InputError as exc:
            raw_id = line.data.get("id")
            yield ErrorRecord(line.number, exc.message, None if raw_id is None else str(raw_id))


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output JSONL (default: stdout).")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--vectors", "vectors_path", type=click.Path(dir_okay=False),
              help="Steering vectors (.safetensors from 'steerunc vectors build'); default: the shipped perspectives.")
@click.option("--layer", type=int, help="Block whose output is steered (default: the vectors' layer; shipped set: second-to-last block).")
@click.option("--coeff", type=float, default=0.1, show_default=True,
              help="Vector length relative to the mean residual norm at the layer.")
@click.option("--center/--no-center", default=None,
              help="Steer with the vectors minus their mean, keeping what tells the perspectives apart "
                   "(default: centre when there are 2 or more vectors).")
@click.option("--options", "options_csv", help="Comma-separated options for records without 'options', e.g. 'No,Yes,Unsure'.")
@click.option("--tau", type=float, default=0.4, show_default=True,
              help="Temperature at which views are compared (mutual_info, mean_kl, kl); outputs are at 1.")
@click.option("--fusion", "fusion_method", type=click.Choice(["mixture", "dvd"]), default="mixture", show_default=True,
              help="Fused prediction: the mixture of the views, or the seed work's contrastive DVD logits.")
@click.option("--alpha", type=float, default=0.2, show_default=True, help="Contrast of the fused logits (--fusion dvd).")
@click.option("--top-m", type=int, default=10, show_default=True, help="Entries in the top-m entropy weighting (--fusion dvd).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Rows per forward pass.")
@click.option("--max-tokens", type=click.IntRange(min=2), help="Truncate texts from the left to this many tokens (default: context).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True,
              help="auto: float32 on CPU, bfloat16 on CUDA.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip input lines already in OUTPUT.")
@click.option("--strict", is_flag=True, help="Stop at the first bad record (exit 1).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or log messages.")
@translate_errors
def score(
    input_path: str, output: str | None, model: str, vectors_path: str | None, layer: int | None, coeff: float,
    center: bool | None, options_csv: str | None, tau: float, fusion_method: str, alpha: float, top_m: int, batch_size: int, max_tokens: int | None,
    device: str, dtype: str, resume: bool, strict: bool, quiet: bool,
) -> None:
    """Score INPUT.jsonl (or - for stdin): one output line per input line, in order.

    Input lines: {"id", "text", "options"?, "label"?, "continuation"?, "human_probs"?}.
    Output lines: the fused prediction and probabilities, the base ones, the
    scores (msp, entropy, mutual_info, mean_kl, flip_rate, fused_entropy; higher =
    less sure) and each perspective's view; or {"id"?, "line", "error"} for a bad
    line. Exits 1 if any line failed.
    """
    if input_path != "-" and not os.path.isfile(input_path):
        raise FileLevelError(f"{input_path}: no such input file")
    if resume and output in (None, "-"):
        raise click.UsageError("--resume needs -o/--output: the file to continue")
    options = [o.strip() for o in options_csv.split(",") if o.strip()] if options_csv else None
    if options is not None and (len(options) < 2 or len(set(options)) != len(options)):
        raise click.BadParameter(f"needs at least two distinct options, got {options_csv!r}", param_hint="--options")
    setup_logging(quiet)
    skip = _done_lines(output) if resume and output else set()

    from steerunc.fusion import FusionConfig
    from steerunc.model import load_model
    from steerunc.scorer import Scorer, ScoreConfig
    from steerunc.vectors import load_vectors

    try:
        fusion = FusionConfig(tau=tau, alpha=alpha, top_m=top_m, method=fusion_method)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    loaded = load_model(model, device=device, dtype=dtype)
    vectors = load_vectors(vectors_path, loaded) if vectors_path else None
    config = ScoreConfig(coeff=coeff, layer=layer, center=center, fusion=fusion, batch_size=batch_size, max_tokens=max_tokens)
    scorer = Scorer(loaded, vectors, config)

    total = _count_lines(input_path)
    n_ok = n_bad = 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=quiet) as progress, open_output(output, append=resume) as out:
        task = progress.add_task("score", total=total, completed=len(skip))
        for result in scorer.score_iter(_items(input_path, skip, options)):
            out.write(dumps(result.to_json()) + "\n")
            out.flush()
            progress.advance(task)
            if isinstance(result, ErrorRecord):
                n_bad += 1
                if strict:
                    raise click.ClickException(f"{input_path}:{result.line}: {result.error} (--strict)")
            else:
                n_ok += 1
    where = f" -> {output}" if output not in (None, "-") else ""
    if not quiet:
        resumed = f" ({len(skip)} already done)" if skip else ""
        stderr.print(f"scored {n_ok} records, {n_bad} errors{resumed}{where}")
    if n_bad:
        raise click.exceptions.Exit(1)


COMMANDS = [score]
