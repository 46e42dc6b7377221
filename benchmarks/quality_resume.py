"""``bench_quality --reuse-scored``: what an earlier run left in a run's folder, and what may be kept.

A run may stop part-way (a session ends; scoring TruthfulQA with the prompt
ensemble on a 2-core CPU takes longer than one). Its folder then holds:

- scored files, one line per record in the records' order, flushed as written:
  a file's whole lines for the first records are kept and scoring goes on after
  them (:func:`survey`); a line cut short ends what is kept;
- ``started.json`` (:data:`STARTED`), written before any scoring: the model and
  settings those lines were made with, checked when the run never wrote its JSON
  (:func:`earlier_run`, :func:`same_model`, :func:`same_settings`).

A scored file is never continued with settings, a model or vectors other than
the ones its lines were made with (``bench_quality`` starts it over when it
builds the vectors again).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from steerunc.scoring.registry import builtin  # imports no torch

__all__ = ["STARTED", "REJUDGED", "done_prefix", "keep_lines", "survey", "earlier_run", "write_started",
           "same_model", "same_settings"]

#: in a run's folder: the model and settings its scored files are made with
STARTED = "started.json"

REJUDGED = ("re-judged with --reuse-scored without loading the model: load_model, build_vectors, score_* and "
            "total are the earlier run's; evaluate and rejudge_total are this run's")

_SETTINGS = ("coeff", "tau", "fusion", "alpha", "top_m", "seed", "layer", "center")


def done_prefix(path: str, ids: list[Any]) -> tuple[int, bool]:
    """How many of ``path``'s first lines are whole scored lines for the first of ``ids``, in
    order (what an earlier run finished; a line cut short ends the count), and whether that is
    the whole file: one line per record and nothing after (a finished run on these records)."""
    if not os.path.exists(path):
        return 0, False
    done = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line) if line.endswith("\n") else None
            except ValueError:
                break
            if done >= len(ids) or not isinstance(record, dict) or record.get("id") != ids[done]:
                break
            done += 1
        else:
            return done, done == len(ids)
    return done, False


def keep_lines(path: str, n: int) -> None:
    """Cut ``path`` to its first ``n`` lines."""
    with open(path, encoding="utf-8") as handle:
        kept = [line for _, line in zip(range(n), handle)]
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(kept)


def survey(files: dict[str, str], ids: dict[str, list[Any]], methods: list[str],
           reuse_scored: bool) -> tuple[dict[str, bool], dict[str, int]]:
    """Per scored file (key ``{method}_{split}``): whether it is complete, to be kept as it is,
    and, for the others, how many whole lines an interrupted run left (0 without --reuse-scored)."""
    found = {f"{method}_{split}": done_prefix(files[f"{method}_{split}"], ids[split])
             if reuse_scored else (0, False) for method in methods for split in ("cal", "eval")}
    complete = {key: whole for key, (_, whole) in found.items()}
    partial = {key: done for key, (done, whole) in found.items() if not whole}
    return complete, partial


def earlier_run(out: str, name: str, reuse_scored: bool) -> dict[str, Any]:
    """The JSON of the earlier run with this name (--reuse-scored), or {}. Where a later run
    started scoring in the same folder (its ``started.json`` is newer, as when it was
    interrupted before writing its JSON), that run's model and settings replace the JSON's."""
    if not reuse_scored:
        return {}
    path, started = os.path.join(out, f"{name}.json"), os.path.join(out, name, STARTED)
    earlier: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            earlier = json.load(handle)
    if os.path.exists(started) and (not earlier or os.path.getmtime(started) > os.path.getmtime(path)):
        with open(started, encoding="utf-8") as handle:
            earlier.update(json.load(handle))
    return earlier


def write_started(work: str, model: dict[str, Any], settings: dict[str, Any]) -> None:
    """Record, before scoring, what the scored files in ``work`` are made with."""
    with open(os.path.join(work, STARTED), "w", encoding="utf-8") as handle:
        json.dump({"model": model, "settings": settings}, handle, indent=2)


def same_settings(args: argparse.Namespace, before: dict[str, Any], name: str) -> None:
    """Refuse to mix scored files made with other settings (a setting left at its default,
    as layer and centring may be, is not compared)."""
    for key in _SETTINGS:
        now = getattr(args, key)
        if key in before and now is not None and before[key] != now:
            raise SystemExit(f"[{name}] --reuse-scored: the scored files were made with {key} "
                             f"{before[key]!r}, not {now!r}; drop --reuse-scored to score again, "
                             "or pass the earlier setting")


def same_model(args: argparse.Namespace, before: dict[str, Any], name: str) -> None:
    """Refuse scored files that another built-in model made."""
    known, made_by = builtin(args.model), before.get("id")
    if known is not None and made_by and known.model_id != made_by:
        raise SystemExit(f"[{name}] --reuse-scored: the scored files were made by {made_by}, not by "
                         f"{args.model} ({known.model_id}); drop --reuse-scored to score again")
