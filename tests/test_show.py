"""``steerunc show SCORED.jsonl ID``: one record's readings side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from steerunc.cli import main


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


RECORD = {
    "id": 7,
    "line": 3,
    "mode": "options",
    "prediction": "No",
    "probs": {"Yes": 0.3125, "No": 0.6875},
    "base_prediction": "Yes",
    "base_probs": {"Yes": 0.5625, "No": 0.4375},
    "scores": {"msp": 0.4375, "mutual_info": 0.0123},
    "views": {
        "strict": {"prediction": "Yes", "probs": {"Yes": 0.8125, "No": 0.1875}, "kl": 0.2468},
        "lenient": {"prediction": "No", "probs": {"Yes": 0.0625, "No": 0.9375}, "kl": 0.1357},
    },
    "weights": {"strict": 0.25, "lenient": 0.75},
    "top_view": {"name": "lenient", "delta": -0.125},
    "label": "No",
    "correct": True,
    "base_correct": False,
}


def scored_file(tmp_path: Path) -> Path:
    path = tmp_path / "scored.jsonl"
    lines = [{"id": "other", "line": 1, "error": "bad"}, {**RECORD, "id": "err", "error": "'text' is empty"}, RECORD]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def test_a_row_per_reading_with_probabilities_kl_and_weight(tmp_path: Path) -> None:
    result = run("show", scored_file(tmp_path), "7")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stderr.splitlines() if line.strip()}
    assert rows["base"][1:] == ["Yes", "0.562", "0.438"]
    assert rows["strict"][1:] == ["Yes", "0.812", "0.188", "0.2468", "0.250"]
    assert rows["lenient"][:2] == ["lenient", "*"] and rows["lenient"][2:] == ["No", "0.062", "0.938", "0.1357", "0.750"]
    assert rows["fused"][1:] == ["No", "0.312", "0.688"]
    assert "P(Yes)" in result.stderr and "P(No)" in result.stderr
    assert "scores: msp 0.4375, mutual_info 0.0123" in result.stderr
    assert "top view (*): lenient, moved P(base prediction) by -0.1250" in result.stderr
    assert "label: No (fused right, base wrong)" in result.stderr
    assert result.stdout == ""


def test_json_prints_the_record_on_stdout(tmp_path: Path) -> None:
    result = run("show", scored_file(tmp_path), "7", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == RECORD


def test_an_absent_id_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = scored_file(tmp_path)
    result = run("show", path, "8")
    assert result.exit_code == 2 and result.stderr.strip() == f"Error: {path}: no record with id '8'"
    missing = run("show", tmp_path / "nope.jsonl", "7")
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_an_error_record_says_so_and_exits_1(tmp_path: Path) -> None:
    path = scored_file(tmp_path)
    result = run("show", path, "err")
    assert result.exit_code == 1 and f"{path}:2: an error record: 'text' is empty" in result.stderr


def test_a_continuation_record_shows_log_probabilities(tmp_path: Path) -> None:
    record = {
        "id": "c", "line": 1, "mode": "continuation", "prediction": None, "probs": None,
        "scores": {"msp": 0.5}, "views": {"strict": {"kl": 0.01, "logprob": -3.5}},
        "weights": {"strict": 1.0}, "base_logprob": -3.25, "fused_logprob": -3.375,
    }
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = run("show", path, "c")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stderr.splitlines() if line.strip()}
    assert rows["base"][1:] == ["-3.250"] and rows["strict"][1:] == ["-3.500", "0.0100", "1.000"]
    assert rows["fused"][1:] == ["-3.375"]
