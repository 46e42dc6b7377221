"""Hostile input: one poisoned line never costs the rest of the file, and a bad file or flag is one
line of message, never a traceback (each test here failed before the fix it guards)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from scored_fixtures import make_records, write_jsonl

from steerunc.cli import main

from conftest import MODERATION

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny-random", "--device", "cpu", "-q"]


def run(*args: Any, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=False)


def good(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"r{i}", "text": MODERATION.format(f"comment number {i}"), "options": ["Yes", "No"], **extra}


def write_lines(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            handle.write(b"\n")
    return path


def out_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line(result: Result) -> str:
    """The error message, checked to be a single line (no traceback, no usage text)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def vecs(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two perspectives for the tiny model (built from a few pairs: scoring stays fast)."""
    from steerunc.scoring.vectors import Pair, build_vectors

    pairs = [
        Pair("kind", "I am a kind reader.\nComment: hello", "Comment: hello"),
        Pair("harsh", "I judge everything harshly.\nComment: hello", "Comment: hello"),
    ]
    path = tmp_path_factory.mktemp("vectors") / "two.safetensors"
    build_vectors(tiny, pairs, layer=1).save(str(path))
    return str(path)


@pytest.fixture
def loads(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``load_model`` hands out the session's tiny model; the list records every load."""
    import steerunc.scoring.model

    calls: list[str] = []

    def load(name: str, device: str = "auto", dtype: str = "auto") -> Any:
        calls.append(name)
        return tiny

    monkeypatch.setattr(steerunc.scoring.model, "load_model", load)
    return calls


def score(path: Path, vecs: str, *extra: Any) -> Result:
    return run("score", path, "--vectors", vecs, *TINY, *extra)


# -- 1. a line that crashed the run becomes an error record ---------------------------------------

POISON: list[tuple[str, Any, str]] = [
    ("deep-array", b'{"id": "deep", "text": "x", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than"),
    ("deep-object", b'{"id": "deep", "text": "x", "a": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3001, "nested deeper"),
    ("surrogate-text", b'{"id": "s", "text": "Comment: \\ud800\\nAnswer:", "options": ["Yes", "No"]}', "lone surrogate"),
    ("surrogate-option", b'{"id": "s", "text": "Comment: hi\\nAnswer:", "options": ["Yes", "N\\uDFFF"]}', "lone surrogate"),
    ("surrogate-continuation", b'{"id": "s", "text": "Comment: hi", "continuation": " ok\\udc00"}', "lone surrogate"),
    ("surrogate-id", b'{"id": "\\ud800", "text": "Comment: hi\\nAnswer:", "options": ["Yes", "No"]}', "lone surrogate"),
    ("surrogate-key", b'{"id": "s", "text": "hi", "\\ud800": 1, "options": ["Yes", "No"]}', "lone surrogate"),
    ("huge-integer", b'{"id": "n", "text": "hi", "n": ' + b"9" * 5000 + b"}", "malformed JSON"),
    ("human-string", good(2, human_probs={"Yes": "abc", "No": 0.5}), "'human_probs'['Yes'] must be a probability"),
    ("human-null", good(2, human_probs={"Yes": None}), "'human_probs'['Yes'] must be a probability"),
    ("human-list", good(2, human_probs={"Yes": [0.5]}), "'human_probs'['Yes'] must be a probability"),
    ("human-bool", good(2, human_probs={"Yes": True}), "'human_probs'['Yes'] must be a probability"),
    ("human-infinity", good(2, human_probs={"Yes": float("inf"), "No": 0.0}), "must be a probability"),
    ("human-nan", good(2, human_probs={"Yes": float("nan"), "No": 1.0}), "must be a probability"),
    ("human-negative", good(2, human_probs={"Yes": -0.5, "No": 1.5}), "must be a probability"),
    ("human-zero", good(2, human_probs={"Yes": 0, "No": 0}), "positive probability"),
    ("label-object", good(2, label={"a": 1}), "'label' must be a string"),
    ("too-many-options", good(2, options=[f"o{i}" for i in range(300)]), "at most 256"),
]


@pytest.mark.parametrize("bad,message", [p[1:] for p in POISON], ids=[p[0] for p in POISON])
def test_a_poisoned_line_becomes_an_error_record_and_the_run_goes_on(
    tmp_path: Path, vecs: str, loads: list[str], bad: Any, message: str
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [good(1), bad, good(3)])
    result = score(path, vecs)
    assert result.exit_code == 1, result.stderr
    out = out_lines(result.stdout)
    assert [r["line"] for r in out] == [1, 2, 3]
    assert out[0]["id"] == "r1" and "scores" in out[0] and out[2]["id"] == "r3" and "scores" in out[2]
    assert "scores" not in out[1] and message in out[1]["error"], out[1]


def test_a_record_with_a_lone_surrogate_from_python_is_an_error_not_a_crash(tiny: Any, vecs: str) -> None:
    """The Python API: a Record built by hand with a string no tokenizer takes."""
    from steerunc.records import ErrorRecord, Record
    from steerunc.scoring.scorer import Scorer
    from steerunc.scoring.vectors import load_vectors

    scorer = Scorer(tiny, load_vectors(vecs, tiny))
    out = scorer.score([Record("Comment: a\ud800b\nAnswer:", id="s", options=["Yes", "No"]), "Answer:"], ["Yes", "No"])
    assert isinstance(out[0], ErrorRecord) and "tokenizer" in out[0].error and out[0].id == "s"
    assert not isinstance(out[1], ErrorRecord)


# -- 2. memory: work per record is bounded by the context -----------------------------------------


def test_a_long_text_is_tokenized_only_up_to_a_bound_set_by_the_context(
    tiny: Any, vecs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerunc.records import Record, ScoredRecord
    from steerunc.scoring.scorer import Scorer, ScoreConfig
    from steerunc.scoring.vectors import load_vectors

    scorer = Scorer(tiny, load_vectors(vecs, tiny), ScoreConfig(max_tokens=64))
    seen: list[int] = []
    encode = Scorer._encode_many

    def spy(self: Scorer, texts: list[str], special: bool) -> list[Any]:
        seen.extend(len(text) for text in texts)
        return encode(self, texts, special)

    monkeypatch.setattr(Scorer, "_encode_many", spy)
    text = "Comment: " + "blah " * 200_000 + "\nIs this comment offensive? Answer:"  # 1 MB
    (long,) = scorer.score([Record(text, options=["Yes", "No"])])
    assert max(seen) <= 64 * 16 * 4, max(seen)  # never the whole megabyte
    (tail,) = scorer.score([Record(text[-5000:], options=["Yes", "No"])])
    assert isinstance(long, ScoredRecord) and isinstance(tail, ScoredRecord)
    assert long.truncated > 0 and long.scores == tail.scores  # the same last 64 tokens were scored
    with pytest.raises(Exception, match="too long"):
        scorer.score_text("Answer:", options=["Yes", "No " * 100_000])  # an option cannot be cut


def test_a_line_longer_than_the_maximum_is_an_error_record(
    tmp_path: Path, vecs: str, loads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerunc.io

    assert steerunc.io.MAX_LINE_BYTES == 32 * 2**20 and "32 MiB" in (ROOT / "README.md").read_text()
    monkeypatch.setattr(steerunc.io, "MAX_LINE_BYTES", 4096)
    path = write_lines(tmp_path / "in.jsonl", [good(1), good(2, text="x" * 10_000), good(3)])
    result = score(path, vecs)
    assert result.exit_code == 1
    out = out_lines(result.stdout)
    assert [r.get("id") for r in out] == ["r1", None, "r3"]
    assert out[1] == {"line": 2, "error": "line longer than 4 KiB: not read"}


# -- 3. a byte order mark, blank lines -----------------------------------------------------------


def test_a_utf8_bom_before_the_first_line_is_skipped(tmp_path: Path, vecs: str, loads: list[str]) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(good(1)).encode() + b"\r\n" + json.dumps(good(2)).encode() + b"\r\n")
    result = score(path, vecs)
    assert result.exit_code == 0, result.stdout
    assert [(r["id"], r["line"]) for r in out_lines(result.stdout)] == [("r1", 1), ("r2", 2)]


def test_blank_lines_are_skipped_said_so_and_numbered_physically(tmp_path: Path, vecs: str, loads: list[str]) -> None:
    path = write_lines(tmp_path / "in.jsonl", [good(1), b"", b" \t\r", good(4)])
    result = score(path, vecs)
    assert result.exit_code == 0
    assert [(r["id"], r["line"]) for r in out_lines(result.stdout)] == [("r1", 1), ("r4", 4)]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "Blank lines are skipped" in readme and "physical lines" in readme


# -- 4. vector files that pass the header check but mean nothing ----------------------------------


def _vector_variants() -> list[tuple[str, dict[str, Any], str]]:
    """(case, changes to the tensor or metadata, the field the message must name)."""
    return [
        ("perspectives-string", {"perspectives": '"kind"'}, "'perspectives'"),
        ("perspectives-object", {"perspectives": '{"kind": 1}'}, "'perspectives'"),
        ("perspectives-not-json", {"perspectives": "[kind, harsh"}, "'perspectives'"),
        ("perspectives-duplicate", {"perspectives": '["kind", "kind"]'}, "'perspectives' has duplicate names: kind"),
        ("perspectives-empty-name", {"perspectives": '["kind", ""]'}, "'perspectives'"),
        ("tensor-1d", {"tensor": "1d"}, "'vectors'"),
        ("tensor-3d", {"tensor": "3d"}, "'vectors'"),
        ("tensor-k0", {"tensor": "k0", "perspectives": "[]", "n_pairs": "[]", "norms": "[]"}, "'vectors'"),
        ("tensor-nan", {"tensor": "nan"}, "'vectors' holds NaN"),
        ("tensor-zero-row", {"tensor": "zero"}, "'vectors' has zero vector"),
        ("tensor-int", {"tensor": "int"}, "'vectors'"),
        ("norms-not-json", {"norms": "not json"}, "'norms'"),
        ("norms-short", {"norms": "[1.0]"}, "'norms'"),
        ("n-pairs-string", {"n_pairs": '"many"'}, "'n_pairs'"),
        ("resid-nan", {"resid_norm": "nan"}, "'resid_norm'"),
        ("resid-negative", {"resid_norm": "-3.5"}, "'resid_norm'"),
        ("resid-word", {"resid_norm": "big"}, "'resid_norm'"),
        ("layer-word", {"layer": "top"}, "'layer'"),
        ("layer-negative", {"layer": "-1"}, "'layer'"),
        ("layer-missing", {"layer": None}, "'layer' is missing"),
    ]


def _bad_vectors(good_path: str, path: Path, changes: dict[str, Any]) -> str:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(good_path, framework="pt") as handle:
        meta = dict(handle.metadata())
        tensor = handle.get_tensor("vectors")
    kind = changes.pop("tensor", None)
    if kind == "1d":
        tensor = tensor[0]
    elif kind == "3d":
        tensor = tensor[:, None, :]
    elif kind == "k0":
        tensor = tensor[:0]
    elif kind == "nan":
        tensor = tensor.clone()
        tensor[1, 3] = float("nan")
    elif kind == "zero":
        tensor = torch.zeros_like(tensor)
    elif kind == "int":
        tensor = tensor.to(torch.int64)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file({"vectors": tensor.contiguous()}, str(path), metadata=meta)
    return str(path)


@pytest.mark.parametrize("changes,field", [v[1:] for v in _vector_variants()], ids=[v[0] for v in _vector_variants()])
def test_a_vector_file_that_means_nothing_is_refused_naming_file_and_field_before_the_model_loads(
    tmp_path: Path, vecs: str, loads: list[str], changes: dict[str, Any], field: str
) -> None:
    from steerunc.errors import VectorsError
    from steerunc.scoring.vectors import load_vectors

    bad = _bad_vectors(vecs, tmp_path / "bad.safetensors", dict(changes))
    with pytest.raises(VectorsError) as caught:
        load_vectors(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ") and field in message and "\n" not in message
    path = write_lines(tmp_path / "in.jsonl", [good(1)])
    result = score(path, bad)
    assert result.exit_code == 1 and f"{bad}: " in one_line(result) and field in result.stderr
    assert loads == []  # refused before the model was loaded
    info = run("vectors", "info", bad)
    assert info.exit_code == 1 and field in one_line(info)


# -- 5. numeric flags must be finite --------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,value", [("--coeff", "nan"), ("--coeff", "inf"), ("--coeff", "-inf"), ("--alpha", "nan"), ("--tau", "nan")]
)
def test_non_finite_scoring_flags_exit_2(tmp_path: Path, vecs: str, loads: list[str], flag: str, value: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", [good(1)])
    result = score(path, vecs, flag, value)
    assert result.exit_code == 2 and f"'{value}' is not a finite number" in result.stderr and flag in result.stderr
    assert result.stdout == "" and loads == []


@pytest.mark.parametrize("flag", ["--budget", "--max-risk", "--delta"])
def test_non_finite_triage_flags_exit_2(tmp_path: Path, flag: str) -> None:
    scored = write_jsonl(tmp_path / "s.jsonl", make_records(30, seed=1))
    args = ["--budget", "0.2"] if flag != "--budget" else []
    result = run("triage", scored, "-c", "c.json", flag, "nan", *args, "--accept-out", tmp_path / "a", "--review-out", tmp_path / "r")
    assert result.exit_code == 2 and "'nan' is not a finite number" in result.stderr


# -- 6. judging: validate everything first, write all outputs or none -----------------------------


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("judged")
    files = {
        "cal": write_jsonl(d / "cal.jsonl", make_records(200, seed=0)),
        "test": write_jsonl(d / "test.jsonl", make_records(120, seed=1)),
        "new": write_jsonl(d / "new.jsonl", make_records(60, seed=2)),
        "calibrator": str(d / "cal.json"),
        "policy": str(d / "policy.json"),
    }
    assert run("calibrate", files["cal"], "-s", "mutual_info", "-o", files["calibrator"]).exit_code == 0
    made = run(
        "triage", files["test"], "-c", files["calibrator"], "--max-risk", "0.45", "--policy-out", files["policy"],
        "--accept-out", d / "a.jsonl", "--review-out", d / "r.jsonl",
    )
    assert made.exit_code == 0, made.stderr
    return files


def _outputs(tmp_path: Path) -> tuple[Path, Path]:
    accept, review = tmp_path / "accept.jsonl", tmp_path / "review.jsonl"
    accept.write_text("earlier accept\n")
    review.write_text("earlier review\n")
    return accept, review


def test_triage_writes_all_its_outputs_or_none(judged: dict[str, str], tmp_path: Path) -> None:
    accept, review = _outputs(tmp_path)
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("")
    for policy_out in (tmp_path / "a-directory", tmp_path / "a-file" / "policy.json"):
        result = run(
            "triage", judged["new"], "-c", judged["calibrator"], "--budget", "0.2", "--policy-out", policy_out,
            "--accept-out", accept, "--review-out", review,
        )
        assert result.exit_code == 2 and str(policy_out) in one_line(result)
        assert accept.read_text() == "earlier accept\n" and review.read_text() == "earlier review\n"
    policy_out = tmp_path / "policy.json"
    result = run(
        "triage", judged["new"], "-c", judged["calibrator"], "--budget", "0.2", "--policy-out", policy_out,
        "--accept-out", accept, "--review-out", review,
    )
    assert result.exit_code == 0, result.stderr
    assert len(out_lines(accept.read_text()) + out_lines(review.read_text())) == 60
    assert json.loads(policy_out.read_text())["mode"] == "budget"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]  # no temporary file left


def _edit(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set the field at a dotted path ('state.X_thresholds.1'); a value of ... deletes it."""
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last: Any = int(keys[-1]) if isinstance(node, list) else keys[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


NAN, INF = float("nan"), float("inf")
CALIBRATOR_DAMAGE: list[tuple[str, Any, str]] = [
    ("state.X_thresholds.1", NAN, "'state.X_thresholds' holds NaN"),
    ("state.y_thresholds.0", INF, "'state.y_thresholds'"),
    ("state.y_thresholds.0", "high", "'state.y_thresholds'"),
    ("state.orientation", "upward", "'state.orientation'"),
    ("state.orientation", ["uncertain"], "'state.orientation'"),
    ("params.target", "sideways", "'params.target'"),
    ("params.target", ["fused"], "'params.target'"),
    ("params.score", ["mutual_info"], "'params.score'"),
    ("params.higher_means", "up", "'params.higher_means'"),
    ("params.colour", "red", "params.colour"),
    ("method", ["isotonic"], "'method'"),
    ("provenance.n", "many", "'provenance.n'"),
    ("provenance.fitted_on", ["a"], "'provenance.fitted_on'"),
    ("state", [1, 2], "'state'"),
]


@pytest.mark.parametrize("field,value,message", CALIBRATOR_DAMAGE)
def test_a_malformed_calibrator_is_refused_naming_file_and_field(
    judged: dict[str, str], tmp_path: Path, field: str, value: Any, message: str
) -> None:
    data = _edit(json.loads(Path(judged["calibrator"]).read_text()), field, value)
    cal = tmp_path / "bad.json"
    cal.write_text(json.dumps(data))
    for args in (
        ["evaluate", judged["test"], "-c", cal, "--bootstrap", "0", "--no-smooth"],
        ["triage", judged["new"], "-c", cal, "--budget", "0.2", "--accept-out", tmp_path / "a", "--review-out", tmp_path / "r"],
    ):
        result = run(*args)
        assert result.exit_code == 2, result.stderr
        line = one_line(result)
        assert f"{cal}: " in line and message in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "r").exists()


POLICY_DAMAGE: list[tuple[str, Any, str]] = [
    ("threshold", NAN, "'threshold'"),
    ("threshold", INF, "'threshold'"),
    ("threshold", "0.5", "'threshold'"),
    ("tie_threshold", NAN, "'tie_threshold'"),
    ("mode", ["max_risk"], "'mode'"),
    ("mode", "lottery", "'mode'"),
    ("budget", "all", "'budget'"),
    ("guarantee", "yes", "'guarantee'"),
    ("guarantee.max_risk", ..., "'guarantee.max_risk'"),
    ("guarantee.n_calibration", -4, "'guarantee.n_calibration'"),
    ("guarantee.risk_upper_bound", NAN, "'guarantee.risk_upper_bound'"),
    ("source", {"a": 1}, "'source'"),
    ("calibrator.state.X_thresholds.0", NAN, "'state.X_thresholds'"),
    ("calibrator.params.target", "sideways", "'params.target'"),
    ("calibrator", ..., "'calibrator'"),
]


@pytest.mark.parametrize("field,value,message", POLICY_DAMAGE)
def test_a_malformed_policy_is_refused_naming_file_and_field_and_nothing_is_written(
    judged: dict[str, str], tmp_path: Path, field: str, value: Any, message: str
) -> None:
    data = _edit(json.loads(Path(judged["policy"]).read_text()), field, value)
    policy = tmp_path / "bad-policy.json"
    policy.write_text(json.dumps(data))
    accept, review = _outputs(tmp_path)
    result = run(
        "triage", judged["new"], "--policy", policy, "--policy-out", tmp_path / "again.json",
        "--accept-out", accept, "--review-out", review,
    )
    assert result.exit_code == 2, result.stderr
    line = one_line(result)
    assert f"{policy}: " in line and message in line
    assert accept.read_text() == "earlier accept\n" and review.read_text() == "earlier review\n"
    assert not (tmp_path / "again.json").exists()


def test_unusable_output_paths_are_refused_before_any_work(
    judged: dict[str, str], tmp_path: Path, vecs: str, loads: list[str]
) -> None:
    folder, plain = tmp_path / "folder", tmp_path / "plain.txt"
    folder.mkdir()
    plain.write_text("")
    records = write_lines(tmp_path / "in.jsonl", [good(1)])
    for output in (folder, plain / "out.jsonl", tmp_path / "no-such-folder" / "out.jsonl"):
        result = score(records, vecs, "-o", output)
        assert result.exit_code == 2 and str(output) in result.stderr.strip().splitlines()[-1]
    assert "does not exist" in score(records, vecs, "-o", tmp_path / "typo" / "out.jsonl").stderr
    assert loads == []  # the model was never loaded
    same = score(records, vecs, "-o", records)
    assert same.exit_code == 2 and "is the input file" in same.stderr and loads == []
    for args in (
        ["calibrate", judged["cal"], "-s", "msp", "-o", folder],
        ["calibrate", judged["cal"], "-s", "msp", "-o", plain / "cal.json"],
        ["evaluate", judged["test"], "--out", plain, "--bootstrap", "0"],
        ["triage", judged["new"], "-c", judged["calibrator"], "--budget", "0.1", "--accept-out", folder,
         "--review-out", tmp_path / "r.jsonl"],
        ["triage", judged["new"], "-c", judged["calibrator"], "--budget", "0.1", "--accept-out", tmp_path / "a.jsonl",
         "--review-out", plain / "r.jsonl"],
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert "directory" in one_line(result)
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "r.jsonl").exists()


# -- 7. resume ------------------------------------------------------------------------------------


def test_resume_refuses_an_output_written_for_another_input(tmp_path: Path, vecs: str, loads: list[str]) -> None:
    first = write_lines(tmp_path / "first.jsonl", [good(i) for i in range(1, 5)])
    out = tmp_path / "out.jsonl"
    assert score(first, vecs, "-o", out).exit_code == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # interrupted after two records
    before = out.read_text()
    loads.clear()
    others = [
        [good(i + 10) for i in range(1, 5)],  # other ids
        [{k: v for k, v in good(i).items() if k != "id"} for i in range(1, 5)],  # no ids
        [good(i, options=["No", "Unsure"]) for i in range(1, 5)],  # the same ids, other options
        [good(1)],  # shorter than what was done
    ]
    for n, records in enumerate(others):
        other = write_lines(tmp_path / f"other{n}.jsonl", records)
        result = score(other, vecs, "-o", out, "--resume")
        assert result.exit_code == 2 and "cannot resume" in one_line(result), result.stderr
        assert out.read_text() == before
    assert loads == []  # refused before the model loaded
    resumed = score(first, vecs, "-o", out, "--resume")
    assert resumed.exit_code == 0
    assert [r["id"] for r in out_lines(out.read_text())] == ["r1", "r2", "r3", "r4"]


def test_resume_from_stdin_refuses_another_input_too(tmp_path: Path, vecs: str, loads: list[str]) -> None:
    out = tmp_path / "out.jsonl"
    write_lines(out, [{"id": "x1", "line": 1, "error": "input too long"}])
    other = "\n".join(json.dumps(good(i)) for i in range(1, 3)).encode()
    result = run("score", "-", "--vectors", vecs, *TINY, "-o", out, "--resume", stdin=other)
    assert result.exit_code == 2 and "cannot resume" in one_line(result)


def test_the_exit_code_of_a_resumed_run_counts_the_errors_of_the_earlier_run(
    tmp_path: Path, vecs: str, loads: list[str]
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [good(1, label="Maybe"), good(2), good(3)])
    out = tmp_path / "out.jsonl"
    assert score(path, vecs, "-o", out).exit_code == 1
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # the error record and one good one were written
    resumed = run("score", path, "--vectors", vecs, "--model", "tiny-random", "--device", "cpu", "-o", out, "--resume")
    assert resumed.exit_code == 1
    assert "scored 1 records, 0 errors (2 already done, 1 of them errors)" in resumed.stderr
    assert [r["line"] for r in out_lines(out.read_text())] == [1, 2, 3]


# -- 8. small ones --------------------------------------------------------------------------------


def test_a_missing_vectors_file_or_model_directory_exits_2_before_loading(
    tmp_path: Path, vecs: str, loads: list[str]
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [good(1)])
    missing = tmp_path / "missing.safetensors"
    result = score(path, str(missing))
    assert result.exit_code == 2 and one_line(result) == f"Error: {missing}: no such vector file"
    for model in (str(tmp_path / "no" / "such" / "dir"), "no-such-model"):
        result = run("score", path, "--model", model, "-q")
        assert result.exit_code == 2 and f"--model {model}: no such model directory" in one_line(result)
    assert loads == []


def test_ids_keep_their_json_type_or_are_refused(tmp_path: Path, vecs: str, loads: list[str]) -> None:
    ids: list[Any] = [7, "7", 2**70, True, 1.5, ["a"], {"a": 1}, None]
    path = write_lines(tmp_path / "in.jsonl", [{**good(0), "id": i} for i in ids])
    result = score(path, vecs)
    assert result.exit_code == 1
    out = out_lines(result.stdout)
    assert [r.get("id") for r in out[:3]] == [7, "7", 2**70] and all("scores" in r for r in out[:3])
    assert isinstance(out[0]["id"], int) and isinstance(out[1]["id"], str)
    for record, got in zip(out[3:7], ["true", "the number 1.5", "a list", "an object"]):
        assert record == {"line": record["line"], "error": f"'id' must be a string or an integer, got {got}"}
    assert out[7]["id"] is None and "scores" in out[7]
    bad_label = write_lines(tmp_path / "label.jsonl", [{**good(0), "id": 3, "label": "Maybe"}])
    (error,) = out_lines(score(bad_label, vecs).stdout)
    assert error["id"] == 3 and "unknown label" in error["error"]  # an error record keeps the id's type


def test_loading_the_tiny_model_leaves_no_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerunc.scoring import tiny

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    for _ in range(2):
        tiny._tokenizer_dir.cache_clear()  # as a new process would
        tiny.tiny_random_model()
    assert os.listdir(private) == []


def _pickled_model_dir(tiny: Any, folder: Path) -> Path:
    tiny.hf_model.config.save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return folder


def test_a_model_directory_with_pickle_weights_gets_one_line(tiny: Any, tmp_path: Path, loads: list[str]) -> None:
    folder = _pickled_model_dir(tiny, tmp_path / "pickled")
    path = write_lines(tmp_path / "in.jsonl", [good(1)])
    result = run("score", path, "--model", folder, "-q")
    assert result.exit_code == 2
    line = one_line(result)
    assert f"{folder}: only safetensors weights are read" in line and "pytorch_model.bin" in line
    assert loads == []
    assert "only safetensors weights are read" in " ".join((ROOT / "README.md").read_text().split())


def test_load_model_never_reads_pickle_weights(tiny: Any, tmp_path: Path) -> None:
    from steerunc.errors import ModelError
    from steerunc.scoring.model import load_model

    folder = _pickled_model_dir(tiny, tmp_path / "pickled")
    with pytest.raises(ModelError, match="only safetensors weights are read"):
        load_model(str(folder), device="cpu")
