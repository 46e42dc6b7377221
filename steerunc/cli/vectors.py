"""``steerunc vectors``: build steering vectors from paired texts; inspect a file."""

from __future__ import annotations

import json
from typing import Any

import click

from steerunc.cli.common import MODEL_HELP, check_model_arg, check_outputs, setup_logging, stderr, translate_errors

__all__ = ["COMMANDS", "vectors"]


@click.group()
def vectors() -> None:
    """Build and inspect steering vectors (safetensors + metadata)."""


@vectors.command()
@click.argument("pairs_path", metavar="PAIRS", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write VECS.safetensors.")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--layer", type=int, help="Block whose output is read (default: the second-to-last block).")
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
    text). See docs/perspectives.md.
    """
    check_outputs((output, "-o/--output"))
    check_model_arg(model)
    setup_logging(quiet)
    from rich.progress import Progress

    from steerunc.annotations import read_pairs_or_annotations
    from steerunc.model import load_model
    from steerunc.vectors import build_vectors

    pairs, source_meta = read_pairs_or_annotations(pairs_path, source, recipe, max_per_perspective)
    loaded = load_model(model, device=device, dtype=dtype)
    with Progress(console=stderr, disable=quiet) as progress:
        task = progress.add_task("building vectors", total=len({p.perspective for p in pairs}))
        built = build_vectors(
            loaded, pairs, layer=layer, batch_size=batch_size,
            progress=lambda done, total: progress.update(task, completed=done),
        )
    built.meta["pairs"] = pairs_path
    built.meta.update(source_meta)
    built.save(output)
    if not quiet:
        summary = ", ".join(f"{n} ({c} pairs)" for n, c in zip(built.names, built.n_pairs))
        stderr.print(f"wrote {len(built.names)} vectors at layer {built.layer} to {output}: {summary}")
    cosine = built.mean_cosine()
    if cosine is not None and cosine > 0.9 and not quiet:
        stderr.print(f"note: the perspectives point almost the same way (mean cosine {cosine:.2f}); "
                     "'steerunc score' centres them by default, steering by what tells them apart")


@vectors.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@translate_errors
def info(path: str) -> None:
    """Print a vector file's metadata as JSON."""
    from steerunc.vectors import load_vectors

    loaded = load_vectors(path)
    meta: dict[str, Any] = dict(loaded.meta)
    for key in ("perspectives", "n_pairs", "norms"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    meta["mean_cosine"] = loaded.mean_cosine()  # files written before it was stored lack it
    click.echo(json.dumps(meta, indent=2))


COMMANDS = [vectors]
