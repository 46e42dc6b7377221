"""``steerunc score``: score a JSONL file with steering disagreement."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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
from steerunc.errors import InputError, VectorsError
from steerunc.io import Line, dumps, open_output, read_jsonl
from steerunc.records import ErrorRecord, Record, id_of, record_from_json

__all__ = ["COMMANDS", "score"]


@dataclass(frozen=True)
class _Done:
    """What an earlier run wrote for one input line, as far as resuming checks it."""

    id: str | None  # as text
    error: bool
    mode: str | None
    options: frozenset[str] | None
    label: str | None


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _done_lines(path: str) -> dict[int, _Done]:
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
    done: dict[int, _Done] = {}
    for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
        record = next(iter(_safe_parse(raw)), None)
        line = None if record is None else record.get("line")
        if record is None or isinstance(line, bool) or not isinstance(line, int):
            raise InputError("cannot resume: this output line has no input 'line' number", path=path, line=number)
        if line in done:
            raise InputError(f"cannot resume: input line {line} appears twice in the output", path=path, line=number)
        probs = record.get("probs")
        done[line] = _Done(
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


def _mismatch(line: Line, done: _Done, options: list[str] | None) -> str | None:
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


def _check_resume(
    lines: Iterator[Line], done: dict[int, _Done], options: list[str] | None, input_path: str, output: str
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


def _count_lines(path: str) -> int | None:
    """Non-blank lines of a file, read in pieces (a line may be longer than memory should hold)."""
    if path == "-":
        return None
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
    path: str, done: dict[int, _Done], options: list[str] | None, output: str | None
) -> Iterator[Record | ErrorRecord]:
    lines: Iterator[Line] = read_jsonl(path)
    if done and output is not None:
        lines = _check_resume(lines, done, options, path, output)
    for line in lines:
        if line.number in done:
            continue
        if line.error is not None or line.data is None:
            yield ErrorRecord(line.number, line.error or "empty line")
            continue
        try:
            yield record_from_json(line.data, line.number, options)
        except InputError as exc:
            try:
                rid = id_of(line.data)
            except InputError:
                rid = None
            yield ErrorRecord(line.number, exc.message, rid)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output JSONL (default: stdout).")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--vectors", "vectors_path", type=click.Path(dir_okay=False),
              help="Steering vectors (.safetensors from 'steerunc vectors build'); default: the shipped perspectives.")
@click.option("--layer", type=int, help="Block whose output is steered (default: the vectors' layer; shipped set: second-to-last block).")
@click.option("--coeff", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="Vector length relative to the mean residual norm at the layer.")
@click.option("--center/--no-center", default=None,
              help="Steer with the vectors minus their mean, keeping what tells the perspectives apart "
                   "(default: centre when there are 2 or more vectors).")
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
    line. Blank lines are skipped. Exits 1 if any line failed (with --resume,
    also lines that failed in the earlier run).
    """
    if input_path != "-" and not os.path.isfile(input_path):
        raise FileLevelError(f"{input_path}: no such input file")
    if resume and output in (None, "-"):
        raise click.UsageError("--resume needs -o/--output: the file to continue")
    check_outputs((output, "-o/--output"))
    if output not in (None, "-") and input_path != "-" and os.path.exists(output) and os.path.samefile(input_path, output):
        raise click.UsageError(f"-o/--output {output} is the input file: it would be overwritten before it is read")
    options = [o.strip() for o in options_csv.split(",") if o.strip()] if options_csv else None
    if options is not None and (len(options) < 2 or len(set(options)) != len(options)):
        raise click.BadParameter(f"needs at least two distinct options, got {options_csv!r}", param_hint="--options")
    if vectors_path is not None and not os.path.isfile(vectors_path):
        raise FileLevelError(f"{vectors_path}: no such vector file")
    check_model_arg(model)
    setup_logging(quiet)

    from steerunc.fusion import FusionConfig
    from steerunc.vectors import load_vectors

    try:
        fusion = FusionConfig(tau=tau, alpha=alpha, top_m=top_m, method=fusion_method)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    vectors = load_vectors(vectors_path) if vectors_path else None  # a malformed file stops before the model loads
    done = _done_lines(output) if resume and output else {}
    if done and input_path != "-":  # an output for another input stops before the model loads
        for _ in _check_resume(read_jsonl(input_path), done, options, input_path, output or ""):
            pass

    from steerunc.model import load_model
    from steerunc.scorer import Scorer, ScoreConfig

    loaded = load_model(model, device=device, dtype=dtype)
    if vectors is not None:
        try:
            vectors.check_model(loaded)
        except VectorsError as exc:
            raise VectorsError(f"{vectors_path}: {exc}") from exc
    config = ScoreConfig(coeff=coeff, layer=layer, center=center, fusion=fusion, batch_size=batch_size, max_tokens=max_tokens)
    scorer = Scorer(loaded, vectors, config)

    total = _count_lines(input_path)
    n_ok = n_bad = 0
    bad_before = sum(d.error for d in done.values())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=quiet) as progress, open_output(output, append=resume) as out:
        task = progress.add_task("score", total=total, completed=len(done))
        for result in scorer.score_iter(_items(input_path, done, options, output)):
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
        resumed = f" ({len(done)} already done, {bad_before} of them errors)" if done else ""
        stderr.print(f"scored {n_ok} records, {n_bad} errors{resumed}{where}")
    if n_bad or bad_before:
        raise click.exceptions.Exit(1)


COMMANDS = [score]
