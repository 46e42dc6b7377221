"""``steerunc vectors``: build steering vectors from paired texts; inspect a file; check what they do."""

from __future__ import annotations

import json
from typing import Any

import click

from steerunc.cli.common import (
    FINITE_FLOAT,
    MODEL_HELP,
    FileLevelError,
    FiniteFloatRange,
    check_model_arg,
    check_outputs,
    setup_logging,
    stderr,
    translate_errors,
)

__all__ = ["COMMANDS", "vectors"]


@click.group()
def vectors() -> None:
    """Build, inspect and check steering vectors (safetensors + metadata)."""


@vectors.command()
@click.argument("pairs_path", metavar="PAIRS", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write VECS.safetensors.")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--layer", type=int, help="Block whose output is read (default: the model's default layer: 20 on the default model, else the second-to-last block).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--from", "source", type=click.Choice(["auto", "pairs", "annotations"]), default="auto",
              show_default=True, help="What the file holds; auto: pairs if lines have 'positive', else annotations.")
@click.option("--recipe", type=click.Choice(["auto", "feedback", "answer"]), default="auto", show_default=True,
              help="Annotations only: how an example becomes a pair (auto: 'feedback' if the line has one, else 'answer').")
@click.option("--max-per-perspective", type=click.IntRange(min=0), default=50, show_default=True,
              help="Annotations only: use the first N examples of each perspective (0: all).")
@click.option("-q", "--quiet", is_flag=True)
@translate_errors
def build(
    pairs_path: str, output: str, model: str, layer: int | None, batch_size: int, device: str, dtype: str,
    source: str, recipe: str, max_per_perspective: int, quiet: bool,
) -> None:
    """Build one vector per perspective from PAIRS.jsonl or annotated examples.

    Pairs, one a line: {"perspective": "...", "positive": "...", "negative": "..."}; the
    vector is the mean of a(positive) - a(negative) at the last token.

    Annotations, one a line: {"perspective", "text", "feedback"?, "answer"?,
    "contrast"?}. Recipe 'feedback': positive = feedback + newline + text,
    negative = text. Recipe 'answer': positive = text + answer, negative = text +
    contrast (or each different answer another perspective gave to the same
    text).

    A line with "chat": true (pairs, or annotations with feedback) is read as the
    user turn of the model's chat template, as a record with "chat": true is
    scored: build the vectors the way the records will be read. See
    docs/perspectives.md.
    """
    check_outputs((output, "-o/--output"))
    check_model_arg(model)
    setup_logging(quiet)
    from rich.progress import Progress

    from steerunc.scoring.annotations import read_pairs_or_annotations
    from steerunc.scoring.model import load_model
    from steerunc.scoring.pairs import read_expectations
    from steerunc.scoring.vectors import build_vectors

    pairs, source_meta = read_pairs_or_annotations(pairs_path, source, recipe, max_per_perspective)
    names = {p.perspective for p in pairs}
    expect = {name: option for name, option in read_expectations(pairs_path).items() if name in names}
    loaded = load_model(model, device=device, dtype=dtype)
    with Progress(console=stderr, disable=quiet) as progress:
        task = progress.add_task("building vectors", total=len({p.perspective for p in pairs}))
        built = build_vectors(
            loaded, pairs, layer=layer, batch_size=batch_size,
            progress=lambda done, total: progress.update(task, completed=done),
        )
    built.meta["pairs"] = pairs_path
    built.meta.update(source_meta)
    if expect:
        built.meta["expect"] = json.dumps(expect)
    built.save(output)
    if not quiet:
        summary = ", ".join(f"{n} ({c} pairs)" for n, c in zip(built.names, built.n_pairs))
        stderr.print(f"wrote {len(built.names)} vectors at layer {built.layer} to {output} "
                     f"(texts read as {built.meta['read']}): {summary}")
    cosine = built.mean_cosine()
    if cosine is not None and cosine > 0.9 and not quiet:
        stderr.print(f"note: the perspectives point almost the same way (mean cosine {cosine:.2f}); "
                     "'steerunc score' centres them by default, steering by what tells them apart")


@vectors.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@translate_errors
def info(path: str) -> None:
    """Print a vector file's metadata as JSON."""
    from steerunc.scoring.vectors import load_vectors

    loaded = load_vectors(path)
    meta: dict[str, Any] = dict(loaded.meta)
    for key in ("perspectives", "n_pairs", "norms", "expect"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    meta["mean_cosine"] = loaded.mean_cosine()  # files written before it was stored lack it
    click.echo(json.dumps(meta, indent=2))


def _interval(stats: dict[str, Any]) -> str:
    if stats.get("mean_change") is None:
        return "-"
    return f"{stats['mean_change']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}]"


def _print_check(result: dict[str, Any]) -> None:
    """The check as a table on stderr, then one line per failed expectation."""
    from rich.table import Table

    level = f"{round(result['confidence'] * 100, 1):g}%"
    table = Table(
        title=f"{result['n_records']} probe records, layer {result['layer']}, coeff {result['coeff']:g}, "
              f"{'centred' if result['centered'] else 'not centred'}; change in P(option) vs the plain "
              f"model, mean [{level} interval]",
        title_justify="left",
    )
    for column, justify in (("perspective", "left"), ("expects", "left"), ("option", "left"),
                            ("+v: ΔP", "right"), ("+v: records up", "right"), ("-v: ΔP", "right"),
                            ("-v: records down", "right"), ("+v favours", "left"), ("distance ±v", "right"),
                            ("result", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    styles = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "none": "-"}
    for p in result["perspectives"]:
        option = p["expect"] or p["plus"]["favours"]
        plus, minus = p["plus"]["options"].get(option, {}), p["minus"]["options"].get(option, {})
        up = "-" if plus.get("moved_up") is None else f"{plus['moved_up']:.0%}"
        down = "-" if minus.get("moved_down") is None else f"{minus['moved_down']:.0%}"
        table.add_row(
            p["name"], p["expect"] or "-", option or "-", _interval(plus), up, _interval(minus), down,
            p["plus"]["favours"] or "-", f"{p['plus']['distance']:.3f} / {p['minus']['distance']:.3f}",
            styles[p["status"]],
        )
    stderr.print(table)
    for p in result["perspectives"]:
        if p["status"] == "fail":
            stderr.print(f"[red]FAIL[/red] {p['name']} (expects {p['expect']}, from {p['expect_source']}): {p['reason']}")
    if not result["n_expectations"]:
        stderr.print("no expectations declared (--expect NAME=OPTION or an 'expect' field in the pairs file): "
                     "nothing to pass or fail")
    else:
        passed = result["n_expectations"] - len(result["failed"])
        stderr.print(f"{passed} of {result['n_expectations']} expectations pass")


@vectors.command()
@click.argument("vectors_path", metavar="VECS")
@click.argument("probe_path", metavar="PROBE")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--expect", "expect_flags", multiple=True, metavar="NAME=OPTION",
              help="Perspective NAME should make OPTION more likely (repeatable; overrides declared ones).")
@click.option("--pairs", "pairs_path", type=click.Path(dir_okay=False),
              help="Pairs or annotations file whose 'expect' fields declare expectations "
                   "(default: those stored in VECS; for 'default', the shipped file's).")
@click.option("--ignore-declared", is_flag=True, help="Use only the --expect flags.")
@click.option("--layer", type=int, help="VECS 'default': the block to build and steer at (default: the model's default layer); "
                                        "a file: must be the file's layer.")
@click.option("--coeff", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="Vector length relative to the mean residual norm at the layer (as in 'score').")
@click.option("--center/--no-center", default=None,
              help="Steer with the vectors minus their mean (default: as 'score' does, when there are 2 or more).")
@click.option("--options", "options_csv", help="Comma-separated options for probe records without 'options'.")
@click.option("--confidence", type=FiniteFloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Level of the bootstrap intervals.")
@click.option("--n-boot", type=click.IntRange(min=100), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--min-change", type=FiniteFloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Also require each mean change in P(expected option) to be at least this large.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Rows per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the full result (per perspective, sign, option and record) as JSON here ('-': stdout).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or table.")
@translate_errors
def check(
    vectors_path: str, probe_path: str, model: str, expect_flags: tuple[str, ...], pairs_path: str | None,
    ignore_declared: bool, layer: int | None, coeff: float, center: bool | None, options_csv: str | None,
    confidence: float, n_boot: int, seed: int, min_change: float, batch_size: int, device: str, dtype: str,
    json_out: str | None, quiet: bool,
) -> None:
    """Check that each perspective moves the answers the way it should.

    VECS is a vector file or 'default' (the shipped perspectives). PROBE is a
    JSONL of records with 'options' (as 'score' reads them). For each
    perspective, the probe is read with +v and with -v (scaled and centred as
    'score' does) and each option's probability is compared with the plain
    model's: mean change, bootstrap interval, share of records moved. A
    perspective expected to favour an option (--expect NAME=OPTION, or an
    'expect' field on its lines of the pairs or annotations file) passes when
    +v raises that option's probability and -v lowers it, each beyond its
    interval. Exit 0: every expectation passes (or none is declared); 1: one
    fails; 2: the check could not run (bad flag or file, vectors for another
    model).
    """
    from steerunc.errors import SteeruncError

    try:
        result = _run_check(
            vectors_path, probe_path, model, expect_flags, pairs_path, ignore_declared, layer, coeff, center,
            options_csv, confidence, n_boot, seed, min_change, batch_size, device, dtype, json_out, quiet,
        )
    except SteeruncError as exc:  # anything that stops the check is not a failed check: exit 2, not 1
        raise FileLevelError(str(exc)) from exc
    if not quiet:
        _print_check(result)
    if json_out is not None:
        from steerunc.io import dumps, open_output

        with open_output(None if json_out == "-" else json_out) as out:
            out.write(dumps(result) + "\n")
    if not result["passed"]:
        raise click.exceptions.Exit(1)


def _run_check(
    vectors_path: str, probe_path: str, model: str, expect_flags: tuple[str, ...], pairs_path: str | None,
    ignore_declared: bool, layer: int | None, coeff: float, center: bool | None, options_csv: str | None,
    confidence: float, n_boot: int, seed: int, min_change: float, batch_size: int, device: str, dtype: str,
    json_out: str | None, quiet: bool,
) -> dict[str, Any]:
    import os

    from steerunc.errors import VectorsError
    from steerunc.scoring.pairs import read_expectations, read_pairs
    from steerunc.scoring.vectors import load_vectors
    from steerunc.scoring.vectors_default import DEFAULT_PAIRS, default_pairs_path
    from steerunc.scoring.vectors_check import (
        check_expected_options,
        merge_expectations,
        parse_expect_flags,
        probe_probabilities,
        read_probe,
        summarize,
    )

    # everything a user can get wrong is refused here, before the model loads
    shipped = vectors_path == DEFAULT_PAIRS
    if not shipped and not os.path.isfile(vectors_path):
        raise FileLevelError(f"{vectors_path}: no such vector file (or 'default' for the shipped perspectives)")
    if not os.path.isfile(probe_path):
        raise FileLevelError(f"{probe_path}: no such probe file")
    if pairs_path is not None and not os.path.isfile(pairs_path):
        raise FileLevelError(f"{pairs_path}: no such pairs file")
    check_outputs((json_out, "--json"))
    options = [o.strip() for o in options_csv.split(",") if o.strip()] if options_csv else None
    if options is not None and (len(options) < 2 or len(set(options)) != len(options)):
        raise click.BadParameter(f"needs at least two distinct options, got {options_csv!r}", param_hint="--options")
    check_model_arg(model)
    setup_logging(quiet)
    flags = parse_expect_flags(expect_flags)
    sources: list[tuple[str, dict[str, str]]] = []
    vectors = None
    if shipped:
        shipped_path = default_pairs_path()
        names = list(dict.fromkeys(p.perspective for p in read_pairs(shipped_path)))
        sources.append(("the shipped perspectives", read_expectations(shipped_path)))
    else:
        vectors = load_vectors(vectors_path)
        names = list(vectors.names)
        if layer is not None and layer != vectors.layer:
            raise VectorsError(f"--layer {layer} asked for, but {vectors_path} was built at layer {vectors.layer}")
        sources.append((f"{vectors_path} (stored)", vectors.expectations))
    if center and len(names) < 2:
        raise VectorsError("--center needs at least 2 perspectives: one vector minus its mean is zero")
    if pairs_path is not None:
        sources.append((pairs_path, read_expectations(pairs_path)))
    if ignore_declared:
        sources = []
    expectations = merge_expectations(names, *sources, ("flag", flags))
    records = read_probe(probe_path, options)
    check_expected_options(expectations, records)

    from rich.progress import Progress

    from steerunc.scoring.model import load_model
    from steerunc.scoring.vectors_default import default_vectors

    loaded = load_model(model, device=device, dtype=dtype)
    if vectors is None:
        vectors = default_vectors(loaded, layer)
    else:
        try:
            vectors.check_model(loaded)
        except VectorsError as exc:
            raise VectorsError(f"{vectors_path}: {exc}") from exc
    with Progress(console=stderr, disable=quiet, transient=True) as progress:
        task = progress.add_task("probing", total=len(records))
        run = probe_probabilities(
            loaded, vectors, records, coeff=coeff, center=center, batch_size=batch_size,
            progress=lambda done: progress.update(task, completed=done),
        )
    result = summarize(run, expectations, confidence=confidence, n_boot=n_boot, seed=seed, min_change=min_change)
    where = {"vectors": vectors_path, "probe": probe_path, "model": loaded.model_id, "fingerprint": loaded.fingerprint}
    return {"format": result["format"], **where, **result}


COMMANDS = [vectors]
