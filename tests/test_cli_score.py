"""``steerunc score`` as a user meets it: outputs, bad input, exit codes, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from steerunc.cli import main

from conftest import MODERATION

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-random", "--device", "cpu", "-q"]


def _run(args: list[str], stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(main, args, input=stdin, catch_exceptions=False)


def _good(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"r{i}", "text": MODERATION.format(f"comment number {i}"), "options": ["Yes", "No"], **extra}


def _write(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            handle.write(b"\n")
    return path


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_scores_the_examples_with_every_field(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = _run(["score", str(ROOT / "examples" / "moderation.jsonl"), "-o", str(out), *TINY])
    assert result.exit_code == 0, result.output
    records = _lines(out.read_text())
    inputs = _lines((ROOT / "examples" / "moderation.jsonl").read_text())
    assert [r["id"] for r in records] == [r["id"] for r in inputs]
    for record in records:
        assert {"id", "prediction", "probs", "base_prediction", "base_probs", "scores", "views", "label", "correct"} <= set(record)
        assert set(record["scores"]) == {"msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"}
        assert len(record["views"]) == 5  # the shipped perspectives
        assert all({"prediction", "probs", "kl"} <= set(v) for v in record["views"].values())
        assert record["correct"] == (record["prediction"] == record["label"])


def test_stdout_carries_only_jsonl_and_stdin_works() -> None:
    lines = "\n".join(json.dumps(_good(i)) for i in range(3)).encode()
    result = _run(["score", "-", "--model", "tiny-random", "--device", "cpu"], stdin=lines)
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in _lines(result.stdout)] == ["r0", "r1", "r2"]  # nothing else on stdout
    assert "scored 3 records, 0 errors" in result.stderr


BAD_LINES: list[tuple[Any, str]] = [
    (b'{"id": "broken", "text": ', "malformed JSON"),
    ({"id": "no-text", "options": ["Yes", "No"]}, "missing 'text'"),
    ({"id": "empty", "text": "   ", "options": ["Yes", "No"]}, "'text' is empty"),
    ({"id": "label", "text": "hi", "options": ["Yes", "No"], "label": "Maybe"}, "unknown label 'Maybe'"),
    (b'{"id": "latin1", "text": "caf\xe9"}', "not UTF-8"),
    (b"[1, 2]", "expected a JSON object"),
    ({"id": "one-option", "text": "hi", "options": ["Yes"]}, "at least two distinct options"),
    ({"id": "dup-options", "text": "hi", "options": ["Yes", "Yes"]}, "'options' has duplicates"),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_each_bad_line_becomes_an_error_record_and_the_run_goes_on(tmp_path: Path, bad: Any, message: str) -> None:
    path = _write(tmp_path / "in.jsonl", [_good(1), bad, _good(3)])
    result = _run(["score", str(path), *TINY])
    assert result.exit_code == 1
    out = _lines(result.stdout)
    assert len(out) == 3
    assert out[0]["id"] == "r1" and "scores" in out[0]
    assert out[1]["line"] == 2 and message in out[1]["error"]
    assert out[2]["id"] == "r3" and "scores" in out[2]


def test_strict_stops_at_the_first_bad_record(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", [_good(1), {"id": "x", "options": ["Yes", "No"]}, _good(3)])
    result = _run(["score", str(path), "--strict", *TINY])
    assert result.exit_code == 1
    assert f"{path}:2: missing 'text' (--strict)" in result.stderr
    assert [r.get("id") for r in _lines(result.stdout)] == ["r1", "x"]


def test_missing_file_and_bad_flag_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = _run(["score", str(tmp_path / "nope.jsonl"), *TINY])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"Error: {tmp_path / 'nope.jsonl'}: no such input file"
    bad_flag = _run(["score", str(tmp_path / "nope.jsonl"), "--no-such-flag"])
    assert bad_flag.exit_code == 2 and "No such option '--no-such-flag'" in bad_flag.stderr
    bad_choice = _run(["score", "-", "--device", "tpu"])
    assert bad_choice.exit_code == 2 and "'tpu' is not one of" in bad_choice.stderr
    for options in ("Yes", "Yes,Yes"):
        one = _run(["score", str(ROOT / "examples" / "moderation.jsonl"), "--options", options, *TINY])
        assert one.exit_code == 2 and "--options" in one.stderr and "at least two distinct options" in one.stderr
    bad_model = _run(["score", str(ROOT / "examples" / "moderation.jsonl"), "--model", "no-such-model", "-q"])
    assert bad_model.exit_code == 2 and "--model no-such-model: no such model directory" in bad_model.stderr


def test_resume_finishes_without_redoing_or_duplicating(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", [_good(i) for i in range(1, 7)])
    out = tmp_path / "out.jsonl"
    full = _run(["score", str(path), "-o", str(out), *TINY])
    assert full.exit_code == 0
    complete = out.read_text().splitlines()
    # an interrupted run: three lines written, the fourth cut half-way
    out.write_text("\n".join(complete[:3]) + "\n" + complete[3][:40])
    resumed = _run(["score", str(path), "-o", str(out), "--resume", *TINY])
    assert resumed.exit_code == 0, resumed.stderr
    again = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in again] == [f"r{i}" for i in range(1, 7)]
    # the same record in another batch: equal up to kernel noise (mutual_info is a small difference of entropies)
    assert json.loads(again[5])["scores"] == pytest.approx(json.loads(complete[5])["scores"], rel=1e-4, abs=1e-6)
    assert _run(["score", str(path), "--resume", *TINY]).exit_code == 2  # needs -o


def test_long_text_is_truncated_from_the_left_and_says_so(tmp_path: Path) -> None:
    long_text = "blah " * 400 + "\nIs this comment offensive? Answer:"
    path = _write(tmp_path / "in.jsonl", [{"id": "long", "text": long_text, "options": ["Yes", "No"]}])
    result = _run(["score", str(path), "--max-tokens", "64", *TINY])
    assert result.exit_code == 0, result.stderr
    (record,) = _lines(result.stdout)
    assert record["truncated"] > 0 and "scores" in record


def test_options_flag_applies_to_records_without_options(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", [{"id": "a", "text": "Is the sky green? Answer:", "label": "No"}])
    result = _run(["score", str(path), "--options", "Yes,No,Unsure", *TINY])
    assert result.exit_code == 0, result.stderr
    (record,) = _lines(result.stdout)
    assert set(record["probs"]) == {"Yes", "No", "Unsure"} and record["label"] == "No"


def test_vectors_build_and_use(tmp_path: Path) -> None:
    pairs = _write(tmp_path / "pairs.jsonl", [
        {"perspective": "kind", "positive": "I am kind.\nComment: hi", "negative": "Comment: hi"},
        {"perspective": "harsh", "positive": "I am harsh.\nComment: hi", "negative": "Comment: hi"},
    ])
    vecs = tmp_path / "v.safetensors"
    built = _run(["vectors", "build", str(pairs), "-o", str(vecs), "--model", "tiny-random", "--device", "cpu", "--layer", "1"])
    assert built.exit_code == 0, built.stderr
    info = json.loads(_run(["vectors", "info", str(vecs)]).stdout)
    assert info["perspectives"] == ["kind", "harsh"] and info["layer"] == "1"
    assert -1.0 <= info["mean_cosine"] <= 1.0
    scored = _run(["score", "-", "--vectors", str(vecs), *TINY], stdin=json.dumps(_good(1)).encode())
    assert scored.exit_code == 0, scored.stderr
    assert set(_lines(scored.stdout)[0]["views"]) == {"kind", "harsh"}
    centred = _run(["score", "-", "--vectors", str(vecs), "--center", *TINY], stdin=json.dumps(_good(1)).encode())
    raw = _run(["score", "-", "--vectors", str(vecs), "--no-center", *TINY], stdin=json.dumps(_good(1)).encode())
    assert centred.exit_code == 0 and raw.exit_code == 0, centred.stderr + raw.stderr
    assert _lines(centred.stdout)[0]["scores"] == _lines(scored.stdout)[0]["scores"]  # K = 2: centred by default
    assert _lines(raw.stdout)[0]["scores"] != _lines(scored.stdout)[0]["scores"]
    wrong_layer = _run(["score", "-", "--vectors", str(vecs), "--layer", "2", *TINY], stdin=b"{}")
    assert wrong_layer.exit_code == 1 and "built at layer 1" in wrong_layer.stderr


def test_cli_defaults_are_the_library_defaults() -> None:
    """The CLI spells its defaults out (its --help loads no torch); they must stay the library's."""
    from steerunc.cli.score import score
    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.scorer import ScoreConfig

    defaults = {p.name: p.default for p in score.params}
    steering, fusion = ScoreConfig(), FusionConfig()
    assert (defaults["coeff"], defaults["center"]) == (steering.coeff, steering.center)
    assert (defaults["tau"], defaults["alpha"], defaults["top_m"]) == (fusion.tau, fusion.alpha, fusion.top_m)
    assert defaults["fusion_method"] == fusion.method


# -- a run that tells what happened ------------------------------------------------------------------


def test_the_run_ends_with_a_summary_of_what_it_wrote(tmp_path: Path, loads: list[str]) -> None:
    lines = [_good(1, label="Yes"), _good(2, label="No"), {"id": "bad", "text": ""}, _good(4, label="No"), _good(5)]
    path = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    result = _run(["score", str(path), "-o", str(out), "--model", "tiny-random", "--device", "cpu"])
    assert result.exit_code == 1
    records = _lines(out.read_text())
    scored = [r for r in records if "scores" in r]
    labelled = [r for r in scored if "label" in r]
    err = result.stderr
    assert f"scored 4 records, 1 errors -> {out}" in err
    predictions = Counter(r["prediction"] for r in scored)
    shown = ", ".join(f"{name} {n}" for name, n in predictions.most_common())
    assert f"predictions: {shown} (plain model:" in err
    accuracy = sum(r["correct"] for r in labelled) / len(labelled)
    base = sum(r["base_correct"] for r in labelled) / len(labelled)
    assert f"accuracy: {accuracy:.3f} (plain model {base:.3f}) on 3 labelled records" in err
    for name in ("msp", "mutual_info", "flip_rate"):
        mean = sum(r["scores"][name] for r in scored) / len(scored)
        assert f"{name} {mean:.3g}" in err
    assert f"error: {path}:3: 'text' is empty" in err
    assert ("warning: every one of the 4 records is predicted" in err) == (len(predictions) == 1)


def test_a_warning_when_every_prediction_is_one_class() -> None:
    from steerunc.cli.score import _Summary

    one = _Summary("in.jsonl")
    for i in range(3):
        one.add({"mode": "options", "prediction": "No", "base_prediction": "No", "scores": {"msp": 0.1 * i}})
    assert one.warnings() and "every one of the 3 records is predicted 'No'" in one.warnings()[0]
    two = _Summary("in.jsonl")
    for prediction in ("No", "Yes", "No"):
        two.add({"mode": "options", "prediction": prediction, "base_prediction": "No", "scores": {}})
    assert two.warnings() == []
    assert "predictions: No 2, Yes 1 (plain model: No 3)" in "\n".join(two.lines())


def test_quiet_prints_no_summary_and_silences_transformers(tmp_path: Path, loads: list[str]) -> None:
    import huggingface_hub.utils
    import transformers

    path = _write(tmp_path / "in.jsonl", [_good(1), _good(2)])
    result = _run(["score", str(path), *TINY])
    assert result.exit_code == 0
    assert "scored" not in result.stderr and "mean scores" not in result.stderr
    assert not transformers.utils.logging.is_progress_bar_enabled()
    assert huggingface_hub.utils.are_progress_bars_disabled()
    loud = _run(["score", str(path), "--model", "tiny-random", "--device", "cpu"])
    assert "scored 2 records" in loud.stderr
    assert transformers.utils.logging.is_progress_bar_enabled()


def test_resume_with_nothing_left_exits_0_without_loading_the_model(tmp_path: Path, loads: list[str]) -> None:
    path = _write(tmp_path / "in.jsonl", [_good(i) for i in range(1, 4)])
    out = tmp_path / "out.jsonl"
    assert _run(["score", str(path), "-o", str(out), *TINY]).exit_code == 0
    before = out.read_text()
    loads.clear()
    again = _run(["score", str(path), "-o", str(out), "--resume", "--model", "tiny-random", "--device", "cpu"])
    assert again.exit_code == 0, again.stderr
    assert loads == [] and out.read_text() == before
    assert f"nothing left to do: all 3 input lines are in {out}" in again.stderr
    assert "mean scores:" in again.stderr  # the summary of what the output holds


_UNWRAPPED = """
import logging
from rich.table import Table
from steerunc.cli.common import setup_logging, stderr, stderr_console
setup_logging()
logging.getLogger("steerunc").info("Building the default perspective vectors for a model with a long name at layer 16 (once)")
table = Table()
for i in range(8):
    table.add_column(f"a rather long column {i}")
table.add_row(*[f"value number {i} of the row" for i in range(8)])
stderr.print(table)
print(stderr_console().width)
"""


def test_messages_and_tables_are_not_wrapped_when_stderr_is_not_a_terminal() -> None:
    """Under a pipe, a file or a test runner, rich took 80 columns: log lines were wrapped and
    tables cut. The shared console takes the width the lines need. Run as a process whose stderr
    is a pipe and whose environment sets no COLUMNS (which rich reads once, on import)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-c", _UNWRAPPED], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    message = "Building the default perspective vectors for a model with a long name at layer 16 (once)"
    assert err[0] == f"INFO     {message}"  # one line, not padded
    assert any("value number 0 of the row" in line and "value number 7 of the row" in line for line in err)
    assert int(done.stdout) > 1000
