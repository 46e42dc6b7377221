"""``steerunc calibrate / evaluate / triage`` as a user runs them: exit codes, messages, files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from scored_fixtures import make_records, write_jsonl, write_scored

from steerunc.cli import main


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("judge")
    paths = {
        "cal": write_scored(d / "cal.jsonl", 600, seed=0, unlabelled=4, errors=2, continuation=3),
        "test": write_scored(d / "test.jsonl", 300, seed=1, human=40),
        "new": write_jsonl(
            d / "new.jsonl",
            [
                {k: v for k, v in r.items() if k not in ("label", "correct", "base_correct")}
                for r in make_records(200, seed=2, errors=1)
            ],
        ),
        "dir": str(d),
    }
    result = run("calibrate", paths["cal"], "--score", "mutual_info", "--method", "isotonic", "-o", d / "cal.json")
    assert result.exit_code == 0, result.output
    paths["calibrator"] = str(d / "cal.json")
    return paths


def read_jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# -- calibrate ------------------------------------------------------------------------------------


def test_calibrate_writes_json_with_provenance_and_counts_skips(files: dict[str, str]) -> None:
    data = json.loads(Path(files["calibrator"]).read_text())
    assert data["kind"] == "steerunc.calibrator" and data["method"] == "isotonic"
    prov = data["provenance"]
    assert prov["score"] == "mutual_info" and prov["n"] == 600 and prov["source"] == "cal.jsonl"
    result = run("calibrate", files["cal"], "-s", "entropy", "-m", "platt", "-o", Path(files["dir"]) / "p.json")
    assert result.exit_code == 0 and result.stdout == ""
    assert "2 error records, 3 continuation records, 4 unlabelled" in result.stderr


@pytest.mark.parametrize("method", ["histogram", "beta", "logistic", "temperature"])
def test_calibrate_every_method_to_stdout(files: dict[str, str], method: str) -> None:
    args = ["calibrate", files["cal"], "-m", method] + ([] if method == "temperature" else ["-s", "msp"])
    result = run(*args, "--target", "base")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["provenance"]["target"] == "base" and data["provenance"]["n"] == 600


def test_calibrate_without_labels_fails_clearly(files: dict[str, str]) -> None:
    result = run("calibrate", files["new"], "-s", "mutual_info", "-o", Path(files["dir"]) / "none.json")
    assert result.exit_code == 2
    assert f"{files['new']}: no labelled records to calibrate on" in result.stderr
    assert "1 error records" in result.stderr and not (Path(files["dir"]) / "none.json").exists()


def test_calibrate_nan_score_names_file_and_line(tmp_path: Path) -> None:
    records = make_records(50, seed=3)
    records[7]["scores"]["mutual_info"] = math.nan
    path = write_jsonl(tmp_path / "nan.jsonl", records)
    out = tmp_path / "cal.json"
    out.write_text("previous content")
    result = run("calibrate", path, "-s", "mutual_info", "-o", out)
    assert result.exit_code == 1
    assert f"{path}:8: score 'mutual_info' is nan" in result.stderr
    assert out.read_text() == "previous content"  # nothing written half-way, nothing clobbered


def test_calibrate_score_problems_are_usage_errors(files: dict[str, str]) -> None:
    missing = run("calibrate", files["cal"], "-m", "isotonic")
    assert missing.exit_code == 2 and "--score is required" in missing.stderr and "mutual_info" in missing.stderr
    unknown = run("calibrate", files["cal"], "-s", "confidence_magic")
    assert unknown.exit_code == 2 and f"{files['cal']}:1: no score 'confidence_magic'" in unknown.stderr
    temp = run("calibrate", files["cal"], "-m", "temperature", "-s", "msp")
    assert temp.exit_code == 2 and "drop --score" in temp.stderr


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for command in (["calibrate", empty, "-s", "msp"], ["evaluate", empty]):
        result = run(*command)
        assert result.exit_code == 2 and f"{empty}: empty file" in result.stderr
    result = run("evaluate", tmp_path / "nope.jsonl")
    assert result.exit_code == 2 and "no such file" in result.stderr


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_json_has_every_metric(files: dict[str, str]) -> None:
    result = run("evaluate", files["test"], "-c", files["calibrator"], "--json", "--bootstrap", "50", "--no-smooth")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["records"]["evaluated"] == 300 and 0 < report["accuracy"] < 1
    scores = report["scores"]
    assert {
        "msp",
        "entropy",
        "mutual_info",
        "mean_kl",
        "flip_rate",
        "fused_entropy",
        "fused_confidence",
        "base_confidence",
        "mutual_info@isotonic",
    } <= set(scores)
    for name, m in scores.items():
        assert {"auroc", "auroc_ci", "auprc", "aurc", "prr", "selective_accuracy"} <= set(m), name
    assert scores["mutual_info"]["ece"] is None  # no raw confidence for a disagreement score
    cal = scores["mutual_info@isotonic"]
    assert cal["ece"] is not None and cal["ece_equal_mass"] is not None and cal["n_bins"] == 15
    assert cal["ece"] < scores["fused_confidence"]["ece"]  # calibration helped on held-out data
    assert report["human"]["fused"]["n"] == 40 and "js_distance" in report["human"]["base"]
    assert "Does the score single out the errors?" in result.stderr and "mutual_info@isotonic" in result.stderr


def test_evaluate_out_writes_metrics_and_pictures(files: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run("evaluate", files["test"], "--out", out, "--bootstrap", "20")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["fused_confidence"]["smooth_ece"] is not None
    for stem in ("reliability_fused_confidence", "reliability_base_confidence", "reliability_msp", "risk_coverage"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]


def test_evaluate_rejects_a_calibrator_for_something_else(files: dict[str, str], tmp_path: Path) -> None:
    records = make_records(30, seed=4)
    for r in records:
        r["scores"] = {"entropy": r["scores"]["entropy"]}
    path = write_jsonl(tmp_path / "other.jsonl", records)
    result = run("evaluate", path, "-c", files["calibrator"], "--bootstrap", "0")
    assert result.exit_code == 1 and f"{path}:1: no score 'mutual_info'" in result.stderr
    base = tmp_path / "base.json"
    run("calibrate", files["cal"], "-s", "msp", "--target", "base", "-o", base)
    mismatch = run("evaluate", files["test"], "-c", base, "--bootstrap", "0", "--no-smooth")
    assert mismatch.exit_code == 2 and "--target base" in mismatch.stderr
    policy = run("evaluate", files["test"], "-c", tmp_path / "missing.json")
    assert policy.exit_code == 2 and "no such calibrator file" in policy.stderr


def test_evaluate_without_labels(files: dict[str, str]) -> None:
    result = run("evaluate", files["new"])
    assert result.exit_code == 2 and "no labelled records to evaluate" in result.stderr


# -- triage ---------------------------------------------------------------------------------------


def _triage(files: dict[str, str], tmp_path: Path, *extra: Any, source: str = "new") -> tuple[Result, list, list]:
    accept, review = tmp_path / "accept.jsonl", tmp_path / "review.jsonl"
    result = run("triage", files[source], *extra, "--accept-out", accept, "--review-out", review)
    if result.exit_code != 0:
        return result, [], []
    return result, read_jsonl(str(accept)), read_jsonl(str(review))


def test_triage_budget_routes_every_record_once(files: dict[str, str], tmp_path: Path) -> None:
    result, accept, review = _triage(files, tmp_path, "-c", files["calibrator"], "--budget", "0.2")
    assert result.exit_code == 0, result.stderr
    ids = [r["id"] for r in accept + review]
    assert sorted(ids) == sorted(r["id"] for r in read_jsonl(files["new"])) and len(ids) == len(set(ids))
    assert len(review) <= 0.2 * len(ids)
    assert all(r["triage"]["decision"] == "accept" and r["triage"]["confidence"] is not None for r in accept)
    assert any("error record" in r["triage"]["reason"] for r in review)
    assert "threshold" in result.stderr and "accepted:" in result.stderr


def test_triage_max_risk_policy_round_trip(files: dict[str, str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    result, accept, review = _triage(
        files,
        tmp_path,
        "-c",
        files["calibrator"],
        "--max-risk",
        "0.45",
        "--delta",
        "0.1",
        "--calibration-data",
        files["cal"],
        "--policy-out",
        policy,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["guarantee"]["max_risk"] == 0.45 and summary["guarantee"]["risk_upper_bound"] <= 0.45
    assert summary["accepted"] == len(accept) > 0 and summary["review"] == len(review)
    assert "with probability >= 90%" in result.stderr
    again, accept2, _ = _triage(files, tmp_path, "--policy", policy)
    assert again.exit_code == 0 and [r["id"] for r in accept2] == [r["id"] for r in accept]

    from steerunc import Router

    router = Router.from_policy(str(policy))
    assert [router.route(r).accepted for r in read_jsonl(files["new"])] == [
        r["id"] in {a["id"] for a in accept} for r in read_jsonl(files["new"])
    ]


def test_triage_max_risk_on_labelled_input(files: dict[str, str], tmp_path: Path) -> None:
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", source="test")
    assert result.exit_code == 0, result.stderr
    assert "realised error rate" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0.2", "--max-risk", "0.1"], "exactly one of"),
        (["--budget", "0.2"], "needs --calibrator"),
        (["--budget", "1.5"], "1.5"),
        (["--policy", "p.json", "-c", "c.json"], "drop --calibrator"),
    ],
)
def test_triage_usage_errors(files: dict[str, str], tmp_path: Path, extra: list[str], message: str) -> None:
    result, _, _ = _triage(files, tmp_path, *extra)
    assert result.exit_code == 2 and message in result.stderr


def test_triage_max_risk_needs_labels(files: dict[str, str], tmp_path: Path) -> None:
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.1")
    assert result.exit_code == 2 and "--calibration-data" in result.stderr


def test_triage_with_a_calibrator_for_another_score_writes_nothing(files: dict[str, str], tmp_path: Path) -> None:
    records = make_records(20, seed=5)
    for r in records:
        r["scores"] = {"entropy": r["scores"]["entropy"]}
    files = {**files, "other": write_jsonl(tmp_path / "other.jsonl", records)}
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--budget", "0.1", source="other")
    assert result.exit_code == 1 and f"{files['other']}:1: no record offers 'mutual_info'" in result.stderr
    assert not (tmp_path / "accept.jsonl").exists() and not (tmp_path / "review.jsonl").exists()


def test_calibrate_without_errors_names_the_file(tmp_path: Path) -> None:
    records = make_records(40, seed=6)
    for r in records:
        r["correct"] = True
    path = write_jsonl(tmp_path / "perfect.jsonl", records)
    result = run("calibrate", path, "-s", "msp")
    assert result.exit_code == 2 and f"{path}: calibration needs both correct and incorrect" in result.stderr
