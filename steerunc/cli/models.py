"""``steerunc models``: the built-in models, and whether each is installed and converted."""

from __future__ import annotations

import json
import os

import click

from steerunc.cli.common import stderr, translate_errors
from steerunc.scoring.registry import BUILTIN_MODELS, DEFAULT_ALIAS, DEFAULT_TARGET, BuiltinModel

__all__ = ["COMMANDS", "models"]


def _dir_bytes(path: str | None) -> int | None:
    if path is None or not os.path.isdir(path):
        return None
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _packages_text(model: BuiltinModel) -> str:
    if not model.packages:
        return "(none: built in process)"
    return model.install_hint().removeprefix("pip install ")


def model_rows() -> list[dict[str, object]]:
    """One JSON-ready row per built-in model."""
    rows: list[dict[str, object]] = []
    for model in BUILTIN_MODELS.values():
        path = model.cache_path()
        rows.append({
            "name": model.name,
            "default": model.name == DEFAULT_TARGET,
            "summary": model.summary,
            "packages": [p.distribution for p in model.packages],
            "package_version": model.package_version,
            "gguf_bytes": model.gguf_bytes,
            "cache_path": path,
            "cache_bytes": _dir_bytes(path) if model.converted() else None,
            "stored_dtype": model.stored_dtype if path is not None else None,
            "installed": model.installed(),
            "missing_packages": model.missing_packages(),
            "converted": model.converted(),
        })
    return rows


def _mb(n: object) -> str:
    return f"{int(n) / 1e6:,.0f} MB" if isinstance(n, int) else "-"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON on stdout.")
@translate_errors
def models(as_json: bool) -> None:
    """List the built-in models: source packages, size, cache path, installed?, converted?

    A model is converted (its GGUF de-quantised into the cache) the first time it
    is loaded. 'default' is an alias for the model marked *.
    """
    rows = model_rows()
    if as_json:
        click.echo(json.dumps({"default": DEFAULT_TARGET, "models": rows}, indent=2))
        return
    by_name = {m.name: m for m in BUILTIN_MODELS.values()}
    lines = [f"'{DEFAULT_ALIAS}' is {DEFAULT_TARGET} (marked *); a model is converted on its first load.", ""]
    for row in rows:
        model = by_name[str(row["name"])]
        missing = [str(d) for d in row["missing_packages"]]  # type: ignore[attr-defined]
        size = f"GGUF {_mb(row['gguf_bytes'])}" if row["gguf_bytes"] else "-"
        if row["cache_bytes"] is not None and model.cache_path() is not None:
            size += f", converted {_mb(row['cache_bytes'])} ({row['stored_dtype']})"
        lines += [
            f"{row['name']}{' *' if row['default'] else ''}",
            f"  {row['summary']}",
            f"  packages:   {_packages_text(model)}",
            f"  size:       {size}",
            f"  cache path: {row['cache_path'] or '-'}",
            f"  installed:  {'yes' if row['installed'] else 'no: ' + model.install_hint(missing)}",
            f"  converted:  {'yes' if row['converted'] else 'no'}",
            "",
        ]
    stderr.print("\n".join(lines).rstrip(), markup=False, highlight=False, soft_wrap=True)


COMMANDS = [models]
