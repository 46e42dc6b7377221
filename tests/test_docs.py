"""The docs a user reads stay true: CLI reference, README commands, CI script."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_cli_reference_is_current() -> None:
    from steerunc.cli.docs import render

    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run: python -m steerunc.cli.docs > docs/cli.md"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_commands = [c for c in _readme_commands() if "pytest" in c]
    assert len(test_commands) == 1
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_readme_quickstart_scores_an_existing_example() -> None:
    (setup_and_run,) = [c for c in _readme_commands() if c.startswith("pip install") and "steerunc score" in c]
    example = re.search(r"steerunc score (\S+)", setup_and_run)
    assert example and (ROOT / example.group(1)).is_file()
