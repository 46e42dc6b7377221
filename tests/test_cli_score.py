"""``steerunc score`` as a user meets it: outputs, bad input, exit codes, resume."""

from __future__ import annotations

import json
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
        assert len(record["views"]) == 6
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
    assert json.loads(again[5])["scores"] == pytest.approx(json.loads(complete[5])["scores"])
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
    from steerunc.fusion import FusionConfig
    from steerunc.scorer import ScoreConfig

    defaults = {p.name: p.default for p in score.params}
    steering, fusion = ScoreConfig(), FusionConfig()
    assert (defaults["coeff"], defaults["center"]) == (steering.coeff, steering.center)
    assert (defaults["tau"], defaults["alpha"], defaults["top_m"]) == (fusion.tau, fusion.alpha, fusion.top_m)
    assert defaults["fusion_method"] == fusion.method
