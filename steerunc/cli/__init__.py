"""The ``steerunc`` command line. Only this package imports click and rich.

stdout carries only the product (JSONL or JSON); progress, tables and messages
go to stderr. Usage errors and missing files exit 2, failed records or other
errors exit 1.
"""

from __future__ import annotations

import importlib

import click

from steerunc import __version__

__all__ = ["main"]

# each module defines COMMANDS: a list of click commands to add to the group
_COMMAND_MODULES = (
    "steerunc.cli.score",
    "steerunc.cli.show",
    "steerunc.cli.vectors",
    "steerunc.cli.judge",
    "steerunc.cli.models",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="steerunc")
def main() -> None:
    """steerunc: uncertainty from steering disagreement.

    Score records with a language model read plainly and under K steering
    vectors (perspectives); calibrate, evaluate and triage the scores.
    """


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a wing not built yet
        if _exc.name != _name:
            raise
        continue
    for _command in _module.COMMANDS:
        main.add_command(_command)
