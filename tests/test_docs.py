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


def test_declared_python_floor_covers_what_the_code_imports() -> None:
    """setup.cfg's python_requires must be true: datetime.UTC and typing.Self need 3.11."""
    import ast
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    floor = tuple(int(x) for x in config["options"]["python_requires"].strip().lstrip(">=").split("."))
    needs_311 = {("datetime", "UTC"), ("typing", "Self"), ("enum", "StrEnum"), ("typing", "LiteralString")}
    found = []
    for path in (ROOT / "steerunc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names if (node.module, a.name) in needs_311]
            if isinstance(node, ast.Import) and any(a.name == "tomllib" for a in node.names):
                found.append(f"{path.name}: tomllib")
    assert not found or floor >= (3, 11), f"python_requires {floor} but the code uses {found}"
