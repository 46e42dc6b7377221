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


def test_calibration_docs_choose_the_threshold_on_records_the_calibrator_was_not_fitted_on() -> None:
    """docs/calibration.md shows three disjoint parts: the file `calibrate` fits a calibrator on is never
    the file `triage --max-risk` chooses that calibrator's threshold on (--calibration-data, else the input)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "docs" / "calibration.md").read_text(), flags=re.S)
    lines = [line.strip().lstrip("$ ") for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    fitted_on: dict[str, str] = {}
    for line in lines:
        fit = re.match(r"steerunc calibrate (\S+) .*-o (\S+)", line)
        if fit:
            fitted_on[fit.group(2)] = fit.group(1)
    checked = 0
    for line in lines:
        if not line.startswith("steerunc triage ") or "--max-risk" not in line:
            continue
        calibrator = re.search(r"(?:--calibrator|-c) (\S+)", line)
        chosen_on = re.search(r"--calibration-data (\S+)", line) or re.match(r"steerunc triage (\S+)", line)
        assert calibrator and chosen_on and calibrator.group(1) in fitted_on, line
        assert chosen_on.group(1) != fitted_on[calibrator.group(1)], line
        checked += 1
    assert checked >= 2  # the workflow and the real run

