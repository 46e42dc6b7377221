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


def test_evaluate_says_when_its_intervals_resample_groups(files: dict[str, str], tmp_path: Path) -> None:
    records = read_jsonl(files["test"])
    for i, r in enumerate(records):
        r["group"] = f"q{i // 4}"
    path = write_jsonl(tmp_path / "grouped.jsonl", records)
    result = run("evaluate", path, "--json", "--bootstrap", "50", "--no-smooth")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["resampled"] == "groups"
    assert "Intervals resample whole groups (75 of them)" in " ".join(result.stderr.split())
    plain = run("evaluate", files["test"], "--bootstrap", "50", "--no-smooth")
    assert "resample whole groups" not in " ".join(plain.stderr.split())


def test_evaluate_out_writes_metrics_and_pictures(files: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run("evaluate", files["test"], "--out", out, "--bootstrap", "20")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["fused_confidence"]["smooth_ece"] is not None
    assert not (out / "reliability_msp.png").exists()  # 1 - msp is base_confidence: one diagram for both
    for stem in ("reliability_fused_confidence", "reliability_base_confidence", "risk_coverage"):
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
        files["test"],  # labelled, and disjoint from cal.jsonl, which the calibrator was fitted on
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


def test_triage_max_risk_warns_when_the_threshold_records_come_in_groups(files: dict[str, str], tmp_path: Path) -> None:
    records = read_jsonl(files["test"])
    for i, r in enumerate(records):
        r["group"] = f"q{i // 3}"
    grouped = write_jsonl(tmp_path / "grouped.jsonl", records)
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", "--calibration-data", grouped)
    assert result.exit_code == 0, result.stderr
    assert "the 300 records in" in result.stderr and "fall in 100 groups" in " ".join(result.stderr.split())
    alone = [dict(r, group=f"q{i}") for i, r in enumerate(records)]  # one record per group: independent
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", "--calibration-data",
                           write_jsonl(tmp_path / "alone.jsonl", alone))
    assert result.exit_code == 0 and "groups" not in result.stderr
    # --one-per-group: the threshold is chosen on one record per group, and the policy says so
    policy = tmp_path / "thinned-policy.json"
    thinned, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", "--calibration-data",
                            grouped, "--one-per-group", "--seed", "3", "--policy-out", str(policy), "--json")
    assert thinned.exit_code == 0, thinned.stderr
    assert "fall in 100 groups" not in " ".join(thinned.stderr.split())
    guarantee = json.loads(thinned.stdout)["guarantee"]
    assert guarantee["n_calibration"] == 100 and "seed 3: 100 of the 300 labelled records" in guarantee["sample"]
    assert json.loads(policy.read_text())["guarantee"]["sample"] == guarantee["sample"]
    from steerunc import Router
    from steerunc.errors import InputError

    assert Router.from_policy(str(policy)).guarantee == guarantee  # a saved policy keeps how it was chosen
    bad = json.loads(policy.read_text())
    bad["guarantee"]["sample"] = 3
    with pytest.raises(InputError, match="'guarantee.sample' must be a string or null"):
        Router.from_policy(bad)
    assert "on 100 labelled records (one record per group" in " ".join(thinned.stderr.split())  # none certified
    certified, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.6", "--calibration-data",
                              grouped, "--one-per-group")
    assert "Clopper-Pearson upper bound" in certified.stderr
    assert "100 of the 300 labelled records, so each group weighs the same" in " ".join(certified.stderr.split())
    # the draw is the seed's: the same seed, the same threshold records
    again, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", "--calibration-data",
                          grouped, "--one-per-group", "--seed", "3", "--json")
    assert json.loads(again.stdout)["guarantee"] == guarantee
    ungrouped, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.45", "--calibration-data",
                              files["test"], "--one-per-group", "--json")
    assert ungrouped.exit_code == 0 and "every one is used" in " ".join(ungrouped.stderr.split())
    assert json.loads(ungrouped.stdout)["guarantee"]["n_calibration"] == 300
    refused, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--budget", "0.2", "--one-per-group")
    assert refused.exit_code == 2 and "only used with --max-risk" in refused.stderr


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
    # the hint asks for records apart from those the calibrator was fitted on, not for that file
    assert "calibrated on" not in result.stderr and "three disjoint parts" in result.stderr


# -- --max-risk: the threshold is chosen on records the calibrator was not fitted on --------------


def test_calibrate_records_the_keys_of_the_records_it_was_fitted_on(files: dict[str, str]) -> None:
    from steerunc.judging.calibration import load_calibrator
    from steerunc.scored import record_keys

    labelled = [d for d in read_jsonl(files["cal"]) if d.get("correct") is not None]
    assert len(labelled) == 600
    fitted_on = json.loads(Path(files["calibrator"]).read_text())["provenance"]["fitted_on"]
    assert fitted_on["keys"] == sorted(record_keys(labelled)) and fitted_on["n"] == 600
    assert "sha256" in fitted_on["by"]
    assert load_calibrator(files["calibrator"]).fitted_on_ == frozenset(record_keys(labelled))
    temperature = run("calibrate", files["cal"], "-m", "temperature")
    assert temperature.exit_code == 0, temperature.stderr
    assert json.loads(temperature.stdout)["provenance"]["fitted_on"]["keys"] == fitted_on["keys"]  # all carry 'label'


def test_triage_max_risk_refuses_the_records_the_calibrator_was_fitted_on(
    files: dict[str, str], tmp_path: Path
) -> None:
    """The documented mistake: fit on cal.jsonl, then choose the threshold on cal.jsonl too."""
    cal, calibrator = files["cal"], files["calibrator"]
    for extra, source, chosen_on in (
        (["--calibration-data", cal], "new", cal),  # the same file as --calibration-data
        ([], "cal", cal),  # the labelled input itself
    ):
        result, _, _ = _triage(files, tmp_path, "-c", calibrator, "--max-risk", "0.45", *extra, source=source)
        assert result.exit_code == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()  # one line, naming both files and the overlap
        assert f"{chosen_on}: 600 of these 600 labelled records" in line and f"the calibrator {calibrator}" in line
        assert not (tmp_path / "accept.jsonl").exists() and not (tmp_path / "review.jsonl").exists()
    # a partial overlap is refused too, and counted: 25 records of cal.jsonl among 300 others
    mixed = read_jsonl(files["test"]) + [d for d in read_jsonl(cal) if d.get("correct") is not None][:25]
    files = {**files, "mixed": write_jsonl(tmp_path / "mixed.jsonl", mixed)}
    result, _, _ = _triage(files, tmp_path, "-c", calibrator, "--max-risk", "0.45", "--calibration-data", files["mixed"])
    assert result.exit_code == 2 and "25 of these 325 labelled records" in result.stderr
    # ids decide, compared as text: the same items renumbered, lines and triage annotations do not matter
    same = [{**d, "id": str(d["id"]), "line": 0, "triage": {}} for d in read_jsonl(cal)[:10]]
    files["same"] = write_jsonl(tmp_path / "same.jsonl", same)
    result, _, _ = _triage(files, tmp_path, "-c", calibrator, "--max-risk", "0.45", "--calibration-data", files["same"])
    assert result.exit_code == 2 and "10 of these 10" in result.stderr
    # --budget and --policy need no labels and check nothing
    result, _, _ = _triage(files, tmp_path, "-c", calibrator, "--budget", "0.2", source="cal")
    assert result.exit_code == 0, result.stderr


def test_triage_max_risk_warns_when_an_old_calibrator_cannot_be_checked(files: dict[str, str], tmp_path: Path) -> None:
    data = json.loads(Path(files["calibrator"]).read_text())
    del data["provenance"]["fitted_on"]  # as saved before calibrators kept the keys
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    result, accept, review = _triage(files, tmp_path, "-c", old, "--max-risk", "0.45", "--calibration-data", files["cal"])
    assert result.exit_code == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert f"{old} does not record which records it was fitted on" in warning and files["cal"] in warning
    assert len(accept) + len(review) == len(read_jsonl(files["new"]))
    from steerunc.judging.calibration import load_calibrator

    assert load_calibrator(str(old)).fitted_on_ is None


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


# -- each row judged against its own prediction; labels outside the options ---------------------


def test_evaluate_plots_and_tables_use_each_rows_own_prediction(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerunc.judging.plots

    seen: dict[str, Any] = {}
    real_reliability, real_risk = steerunc.judging.plots.reliability_diagram, steerunc.judging.plots.risk_coverage_plot

    def reliability(confidence: Any, correct: Any, **kwargs: Any) -> Any:
        seen[kwargs["name"].split()[0]] = list(correct)
        return real_reliability(confidence, correct, **kwargs)

    def risk(curves: Any, correct: Any, **kwargs: Any) -> Any:
        seen["risk_coverage"] = ({k: list(v) for k, v in correct.items()}, kwargs["judged_against"])
        return real_risk(curves, correct, **kwargs)

    monkeypatch.setattr(steerunc.judging.plots, "reliability_diagram", reliability)
    monkeypatch.setattr(steerunc.judging.plots, "risk_coverage_plot", risk)
    result = run("evaluate", files["test"], "--out", tmp_path / "r", "--bootstrap", "0", "--no-smooth")
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(files["test"])
    base = [float(r["base_correct"]) for r in records]
    fused = [float(r["correct"]) for r in records]
    assert base != fused
    assert "msp" not in seen and seen["base_confidence"] == base and seen["fused_confidence"] == fused
    correct, against = seen["risk_coverage"]
    assert correct["msp"] == base and correct["mutual_info"] == fused and correct["fused_entropy"] == fused
    assert against["entropy"] == "base" and against["mutual_info"] == "fused"
    assert "judged against" in result.stderr and "accuracy by prediction" in result.stderr


def _bad_label_file(tmp_path: Path) -> str:
    records = make_records(30, seed=7)
    records[5]["label"] = "Maybe"
    return write_jsonl(tmp_path / "badlabel.jsonl", records)


def test_a_label_outside_the_options_stops_every_judging_command(files: dict[str, str], tmp_path: Path) -> None:
    path = _bad_label_file(tmp_path)
    message = f"{path}:6: label 'Maybe' is not one of the options"
    for command in (["calibrate", path, "-s", "msp"], ["evaluate", path, "--bootstrap", "0"]):
        result = run(*command)
        assert result.exit_code == 1 and message in result.stderr, command
    files = {**files, "bad": path}
    for extra in (["--budget", "0.2"], ["--max-risk", "0.4"]):
        result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], *extra, source="bad")
        assert result.exit_code == 1 and message in result.stderr, extra
        assert not (tmp_path / "accept.jsonl").exists() and not (tmp_path / "review.jsonl").exists()
    result, _, _ = _triage(files, tmp_path, "-c", files["calibrator"], "--max-risk", "0.4", "--calibration-data", path)
    assert result.exit_code == 1 and message in result.stderr


# -- a review budget is used even when calibrated confidences tie ---------------------------------


def _mi_record(i: int, mi: float, ok: bool = True) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "prediction": "Yes",
        "probs": {"Yes": 0.6, "No": 0.4},
        "label": "Yes" if ok else "No",
        "scores": {"mutual_info": mi},
    }


def _two_valued_calibrator(tmp_path: Path) -> str:
    """Isotonic on 40 records whose fit pools into two values: 0.75 for mutual_info in [0.05, 0.45],
    0.25 in [0.55, 0.95] (within each block the errors sit at the low end, so nothing else survives)."""
    low = [_mi_record(i, 0.05 + 0.02 * i, ok=i >= 5) for i in range(20)]  # 15 of 20 right
    high = [_mi_record(20 + i, 0.55 + 0.02 * i, ok=i >= 15) for i in range(20)]  # 5 of 20 right
    path = write_jsonl(tmp_path / "cal2.jsonl", low + high)
    result = run("calibrate", path, "-s", "mutual_info", "-m", "isotonic", "-o", tmp_path / "cal2.json")
    assert result.exit_code == 0, result.stderr
    assert "takes only 2 distinct values" in result.stderr  # the warning in calibrate
    return str(tmp_path / "cal2.json")


def _twenty_four(tmp_path: Path) -> tuple[str, list[float]]:
    """12 records in each plateau, half of them wrong; mutual_info all distinct."""
    mi = [0.1 + 0.025 * i for i in range(12)] + [0.6 + 0.025 * i for i in range(12)]
    order = [(7 * i) % 24 for i in range(24)]  # plateaus interleaved in the file
    values = [mi[j] for j in order]
    records = [_mi_record(i, v, ok=i % 2 == 0) for i, v in enumerate(values)]
    return write_jsonl(tmp_path / "24.jsonl", records), values


def test_budget_with_a_two_valued_calibrator_reviews_exactly_the_budget(tmp_path: Path) -> None:
    cal = _two_valued_calibrator(tmp_path)
    path, values = _twenty_four(tmp_path)
    files = {"24": path}
    policy = tmp_path / "policy.json"
    result, accept, review = _triage(files, tmp_path, "-c", cal, "--budget", "0.2", "--policy-out", policy, source="24")
    assert result.exit_code == 0, result.stderr
    assert len(review) == 4 == int(0.2 * 24) and len(accept) == 20
    worst = sorted(range(24), key=lambda i: -values[i])[:4]  # lowest confidence, then highest mutual_info
    assert sorted(r["id"] for r in review) == sorted(f"r{i}" for i in worst)
    assert all(r["triage"]["confidence"] == pytest.approx(0.25) for r in review)
    assert all("tie broken by raw score -mutual_info" in r["triage"]["reason"] for r in review)
    assert "takes only 2 distinct values" in result.stderr and "breaking ties on the raw score" in result.stderr
    saved = json.loads(policy.read_text())
    fifth = sorted(values, reverse=True)[4]
    assert saved["threshold"] == pytest.approx(0.25) and saved["tie_threshold"] == -fifth


def test_saved_budget_policy_breaks_ties_the_same_way(tmp_path: Path) -> None:
    cal = _two_valued_calibrator(tmp_path)
    path, values = _twenty_four(tmp_path)
    policy = tmp_path / "policy.json"
    result, _, _ = _triage({"24": path}, tmp_path, "-c", cal, "--budget", "0.2", "--policy-out", policy, source="24")
    assert result.exit_code == 0, result.stderr
    fifth = sorted(values, reverse=True)[4]  # the first accepted record's mutual_info
    new = [_mi_record(0, fifth + 0.01), _mi_record(1, fifth), _mi_record(2, fifth - 0.01), _mi_record(3, 0.2)]
    files = {"new": write_jsonl(tmp_path / "new24.jsonl", new)}
    again, accept, review = _triage(files, tmp_path, "--policy", policy, source="new")
    assert again.exit_code == 0, again.stderr
    assert [r["id"] for r in review] == ["r0"] and [r["id"] for r in accept] == ["r1", "r2", "r3"]

    from steerunc import Router

    router = Router.from_policy(str(policy))
    assert [router.route(r).accepted for r in new] == [False, True, True, True]
    old = json.loads(policy.read_text())
    del old["tie_threshold"]  # a policy written before ties were broken: confidence >= threshold
    assert [Router.from_policy(old).route(r).accepted for r in new] == [True, True, True, True]


def test_budget_with_a_constant_calibrator_still_reviews_the_budget(files: dict[str, str], tmp_path: Path) -> None:
    """A beta fit collapsed to 0.5 everywhere (a = b = c = 0): the raw score decides alone."""
    fitted = run("calibrate", files["cal"], "-s", "mutual_info", "-m", "beta")
    assert fitted.exit_code == 0, fitted.stderr
    data = json.loads(fitted.stdout)
    data["state"].update(a=0.0, b=0.0, c=0.0)
    cal = tmp_path / "flat.json"
    cal.write_text(json.dumps(data))
    path, values = _twenty_four(tmp_path)
    result, accept, review = _triage({"24": path}, tmp_path, "-c", cal, "--budget", "0.25", source="24")
    assert result.exit_code == 0, result.stderr
    assert len(review) == 6 and len(accept) == 18
    worst = sorted(range(24), key=lambda i: -values[i])[:6]
    assert sorted(r["id"] for r in review) == sorted(f"r{i}" for i in worst)
    assert "(nearly) constant on these 24 records (0.5000 to 0.5000)" in result.stderr
    flat = run("calibrate", files["cal"], "-s", "mutual_info", "-m", "histogram", "--bins", "1")
    assert flat.exit_code == 0 and "(nearly) constant" in flat.stderr


def test_budget_counts_exactly_when_records_tie_on_both_keys(files: dict[str, str], tmp_path: Path) -> None:
    records = [_mi_record(i, 0.5) for i in range(10)]
    records.insert(4, {"id": "bad", "error": "input too long"})  # counts against the budget
    path = write_jsonl(tmp_path / "ties.jsonl", records)
    files = {**files, "ties": path}
    result, accept, review = _triage(files, tmp_path, "-c", files["calibrator"], "--budget", "0.3", source="ties")
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in review] == ["r0", "r1", "bad"] and len(accept) == 8  # floor(0.3 * 11) = 3
    assert "earliest tied lines" in review[0]["triage"]["reason"]
