"""Render every command's ``--help`` as Markdown: ``python -m steerunc.cli.docs > docs/cli.md``.

tests/test_docs.py checks that docs/cli.md is what this prints.
"""

from __future__ import annotations

import click

from steerunc.cli import main

__all__ = ["render"]


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found.extend(_walk(command.commands[name], [*path, name]))
    return found


def render() -> str:
    """The Markdown text of docs/cli.md."""
    parts = [
        "# Command line reference",
        "",
        "Generated from `--help` by `python -m steerunc.cli.docs > docs/cli.md`; a test keeps it current.",
    ]
    for path, command in _walk(main, ["steerunc"]):
        with click.Context(command, info_name=" ".join(path), terminal_width=100, max_content_width=100) as ctx:
            text = command.get_help(ctx)
        parts += ["", f"## {' '.join(path)}", "", "```", text, "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
