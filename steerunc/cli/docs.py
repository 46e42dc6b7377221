"""Render every command's ``--help`` as Markdown: ``python -m steerunc.cli.docs > docs/cli.md``.

tests/test_docs.py checks that docs/cli.md is what this prints.
"""

from __future__ import annotations

import click

from steerunc.cli import main

__all__ = ["render"]


def _sections(command: click.Command, name: str, parent: click.Context | None) -> list[str]:
    # each context has its parent's, as when run, so settings such as -h/--help are inherited
    settings = {**command.context_settings, "terminal_width": 100, "max_content_width": 100}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    parts = ["", f"## {ctx.command_path}", "", "```", command.get_help(ctx), "```"]
    if isinstance(command, click.Group):
        for child in sorted(command.commands):
            parts += _sections(command.commands[child], child, ctx)
    return parts


def render() -> str:
    """The Markdown text of docs/cli.md."""
    header = [
        "# Command line reference",
        "",
        "Generated from `--help` by `python -m steerunc.cli.docs > docs/cli.md`; a test keeps it current.",
    ]
    return "\n".join(header + _sections(main, "steerunc", None)) + "\n"


if __name__ == "__main__":
    print(render(), end="")
