"""``steerunc show``: one scored record, its views side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
from rich import box
from rich.table import Table

from steerunc.cli.common import FileLevelError, stderr, translate_errors
from steerunc.io import dumps, read_jsonl

__all__ = ["COMMANDS", "record_table", "show"]


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2g}"


def _top(probs: Any, n: int = 3) -> str:
    if not isinstance(probs, Mapping):
        return "—"
    best = sorted(probs.items(), key=lambda kv: -kv[1] if isinstance(kv[1], (int, float)) else 0.0)[:n]
    return ", ".join(f"{k!r} {_number(v)}" for k, v in best)


def record_table(record: Mapping[str, Any]) -> Table:
    """The base reading, each view and the fused prediction of a scored record, one row each:
    prediction, probability per option (the top tokens over a vocabulary), KL and weight."""
    views: Mapping[str, Any] = record["views"] if isinstance(record.get("views"), Mapping) else {}
    weights: Mapping[str, Any] = record["weights"] if isinstance(record.get("weights"), Mapping) else {}
    probs = record.get("probs") if isinstance(record.get("probs"), Mapping) else None
    options = list(probs) if probs is not None and record.get("mode") == "options" else None
    continuation = record.get("mode") == "continuation"
    top = record.get("top_view")
    top_view = top.get("name") if isinstance(top, Mapping) else top
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left",
                  title=f"{record.get('id')!r} (line {record.get('line', '?')}, {record.get('mode', '?')})")
    table.add_column("reading")
    if not continuation:
        table.add_column("prediction")
    if options is not None:
        for option in options:
            table.add_column(f"P({option})", justify="right")
    elif continuation:
        table.add_column("log-prob", justify="right")
    else:
        table.add_column("top tokens")
    table.add_column("kl", justify="right")
    table.add_column("weight", justify="right")

    def add(name: str, fields: Mapping[str, Any], prefix: str = "", view: bool = False) -> None:
        cells = [name + (" *" if name == top_view else "")]
        if continuation:
            cells.append(_number(fields.get(f"{prefix}logprob")))
        else:
            cells.append(str(fields.get(f"{prefix}prediction", "—")))
            dist = fields.get(f"{prefix}probs")
            if options is not None:
                cells += [_number(dist.get(o)) if isinstance(dist, Mapping) else "—" for o in options]
            else:
                cells.append(_top(dist))
        cells += [_number(fields.get("kl"), 4), _number(weights.get(name))] if view else ["", ""]
        table.add_row(*cells)

    add("base", record, "base_")
    for name, fields in views.items():
        add(str(name), fields if isinstance(fields, Mapping) else {}, view=True)
    add("fused", record, "fused_" if continuation else "")
    return table


def _lines_about(record: Mapping[str, Any]) -> list[str]:
    lines = []
    scores = record.get("scores")
    if isinstance(scores, Mapping):
        lines.append("scores: " + ", ".join(f"{k} {_number(v, 4)}" for k, v in scores.items()))
    top = record.get("top_view")
    if isinstance(top, Mapping):
        lines.append(f"top view (*): {top.get('name')}, moved P(base prediction) by {_number(top.get('delta'), 4)}")
    elif top is not None:
        lines.append(f"top view (*): {top}")
    if record.get("label") is not None:
        lines.append(f"label: {record['label']} (fused {'right' if record.get('correct') else 'wrong'}, "
                     f"base {'right' if record.get('base_correct') else 'wrong'})")
    if record.get("truncated"):
        lines.append(f"truncated: {record['truncated']} tokens dropped from the left")
    return lines


@click.command()
@click.argument("scored_path", metavar="SCORED.jsonl")
@click.argument("record_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON on stdout.")
@translate_errors
def show(scored_path: str, record_id: str, as_json: bool) -> None:
    """Show the record ID of a scored file: its base reading, each perspective and the fused
    prediction side by side (probabilities, KL to the views' mixture, weight), and its scores.

    The first record whose id, as text, is ID is shown; exit 2 if there is none.
    """
    if scored_path != "-" and not os.path.isfile(scored_path):
        raise FileLevelError(f"{scored_path}: no such file")
    found: tuple[int, dict[str, Any]] | None = None
    same = 0
    for line in read_jsonl(scored_path):
        if line.data is not None and line.data.get("id") is not None and str(line.data.get("id")) == record_id:
            same += 1
            found = found or (line.number, line.data)
    if found is None:
        raise FileLevelError(f"{scored_path}: no record with id {record_id!r}")
    number, record = found
    if as_json:
        click.echo(dumps(record))
    if record.get("error") is not None:
        stderr.print(f"{scored_path}:{number}: an error record: {record['error']}", markup=False, highlight=False, soft_wrap=True)
        raise click.exceptions.Exit(1)
    if not as_json:
        stderr.print(record_table(record))
        stderr.print("\n".join(_lines_about(record)), markup=False, highlight=False, soft_wrap=True)
    if same > 1:
        stderr.print(f"note: {same} records have the id {record_id!r}; this is the first, line {number}", highlight=False)


COMMANDS = [show]
