"""Judging records only with what was made for them: calibrators and priors keep the scoring settings
(``provenance``) and the records they were fitted on; evaluate and triage refuse the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from scored_fixtures import PROVENANCE, biased_records, make_records, write_jsonl

from steerunc.cli import main


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _write(path: Path, n: int, seed: int, **changes: Any) -> str:
    return write_jsonl(path, make_records(n, seed, provenance={**PROVENANCE, **changes}))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("prov")
    cal = _write(d / "cal.jsonl", 300, 0)
    result = run("calibrate", cal, "-s", "mutual_info", "-m", "platt", "-o", d / "cal.json")
    assert result.exit_code == 0, result.stderr
    assert "provenance" not in result.stderr  # nothing to note: the records record their settings
    return {"cal": cal, "calibrator": str(d / "cal.json"), "dir": str(d)}


def test_calibrate_keeps_the_scoring_settings_of_its_records(fitted: dict[str, str]) -> None:
    saved = json.loads(Path(fitted["calibrator"]).read_text())["provenance"]["scoring"]
    assert saved == PROVENANCE


def test_calibrate_refuses_records_scored_with_different_settings(tmp_path: Path) -> None:
    records = make_records(60, 0, provenance=PROVENANCE)
    records[5]["provenance"] = {**PROVENANCE, "coeff": 0.2}
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    result = run("calibrate", path, "-s", "msp")
    assert result.exit_code == 2
    assert f"{path}: records scored with different settings: provenance 'coeff' is 0.1 on line 1 but 0.2 on line 6" in (
        result.stderr
    )
    del records[5]["provenance"]
    path = write_jsonl(tmp_path / "half.jsonl", records)
    result = run("calibrate", path, "-s", "msp")
    assert result.exit_code == 2 and "line 1 carries a 'provenance' and line 6 does not" in result.stderr


_CHANGED = {
    "model": "qwen2.5-coder-1.5b-instruct",
    "model_fingerprint": "ffff",
    "vectors": "my.safetensors:1234",
    "layer": 12,
    "perspectives": ["strict_moderator"],
    "coeff": 0.3,
    "center": False,
    "tau": 1.0,
    "alpha": 0.0,
    "fusion": "dvd",
}


@pytest.mark.parametrize("key", sorted(_CHANGED))
def test_evaluate_and_triage_refuse_a_calibrator_made_for_other_settings(
    fitted: dict[str, str], tmp_path: Path, key: str
) -> None:
    other = _write(tmp_path / "other.jsonl", 80, 1, **{key: _CHANGED[key]})
    wanted = f"was made for records scored with {key} {json.dumps(PROVENANCE[key], sort_keys=True)}, but {other} " \
             f"was scored with {key} {json.dumps(_CHANGED[key], sort_keys=True)}"
    evaluated = run("evaluate", other, "-c", fitted["calibrator"], "--bootstrap", "0", "--no-smooth")
    assert evaluated.exit_code == 2 and wanted in evaluated.stderr and fitted["calibrator"] in evaluated.stderr
    accept, review, policy = tmp_path / "a.jsonl", tmp_path / "r.jsonl", Path(fitted["dir"]) / f"policy-{key}.json"
    routed = run("triage", other, "-c", fitted["calibrator"], "--budget", "0.2", "--accept-out", accept,
                 "--review-out", review)
    assert routed.exit_code == 2 and wanted in routed.stderr and not accept.exists()
    same = _write(tmp_path / "same.jsonl", 80, 2)
    assert run("triage", same, "-c", fitted["calibrator"], "--budget", "0.2", "--accept-out", accept,
               "--review-out", review, "--policy-out", policy).exit_code == 0
    applied = run("triage", other, "--policy", policy, "--accept-out", accept, "--review-out", review)
    assert applied.exit_code == 2 and f"the calibrator {policy} was made for records scored with {key}" in applied.stderr
    risk = run("triage", same, "-c", fitted["calibrator"], "--max-risk", "0.45", "--calibration-data", other,
               "--accept-out", accept, "--review-out", review)
    assert risk.exit_code == 2 and f"but {other} was scored with {key}" in risk.stderr


def test_another_steerunc_version_only_warns_and_old_files_get_a_note(fitted: dict[str, str], tmp_path: Path) -> None:
    newer = _write(tmp_path / "newer.jsonl", 80, 3, steerunc="0.2.0")
    result = run("evaluate", newer, "-c", fitted["calibrator"], "--bootstrap", "0", "--no-smooth")
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "steerunc 0.1.0" in result.stderr and "0.2.0" in result.stderr
    old = write_jsonl(tmp_path / "old.jsonl", make_records(80, 4))  # scored before records carried provenance
    result = run("evaluate", old, "-c", fitted["calibrator"], "--bootstrap", "0", "--no-smooth")
    assert result.exit_code == 0 and f"note: {old} carries no scoring provenance" in result.stderr
    data = json.loads(Path(fitted["calibrator"]).read_text())
    del data["provenance"]["scoring"]  # a calibrator saved before it kept them
    (tmp_path / "oldcal.json").write_text(json.dumps(data))
    accept, review = tmp_path / "a.jsonl", tmp_path / "r.jsonl"
    result = run("triage", newer, "-c", tmp_path / "oldcal.json", "--budget", "0.1", "--accept-out", accept,
                 "--review-out", review)
    assert result.exit_code == 0 and "does not record the scoring settings" in result.stderr


def test_a_prior_made_for_other_settings_is_refused(tmp_path: Path) -> None:
    a = [dict(r, provenance=PROVENANCE) for r in biased_records(100, seed=1, prefix="a")]
    b = [dict(r, provenance={**PROVENANCE, "layer": 3}) for r in biased_records(100, seed=2, prefix="b")]
    pa, pb = write_jsonl(tmp_path / "a.jsonl", a), write_jsonl(tmp_path / "b.jsonl", b)
    assert run("calibrate-prior", pa, "--target", "base", "-o", tmp_path / "prior.json").exit_code == 0
    assert json.loads((tmp_path / "prior.json").read_text())["provenance"]["scoring"] == PROVENANCE
    result = run("evaluate", pb, "--target", "base", "--prior", tmp_path / "prior.json", "--bootstrap", "0")
    assert result.exit_code == 2 and "the option prior" in result.stderr and "layer 16" in result.stderr
    calib = run("calibrate", pb, "--target", "base", "-s", "msp", "--prior", tmp_path / "prior.json")
    assert calib.exit_code == 2 and "layer 3" in calib.stderr


# -- evaluate on the records a calibrator was fitted on ------------------------------------------


def test_evaluate_refuses_in_sample_records_or_labels_everything_in_sample(
    fitted: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = run("evaluate", fitted["cal"], "-c", fitted["calibrator"], "--bootstrap", "0")
    assert refused.exit_code == 2
    (line,) = refused.stderr.strip().splitlines()
    assert f"{fitted['cal']}: 300 of these 300 labelled records evaluated are among the 300 the calibrator " \
           f"{fitted['calibrator']} was fitted on" in line and "--in-sample" in line
    import steerunc.judging.plots

    titles: list[str] = []
    real_reliability, real_risk = steerunc.judging.plots.reliability_diagram, steerunc.judging.plots.risk_coverage_plot

    def reliability(*args: Any, **kwargs: Any) -> Any:
        figure = real_reliability(*args, **kwargs)
        titles.append(figure.axes[0].get_title())
        return figure

    def risk(*args: Any, **kwargs: Any) -> Any:
        figure = real_risk(*args, **kwargs)
        titles.append(figure.axes[0].get_title())
        return figure

    monkeypatch.setattr(steerunc.judging.plots, "reliability_diagram", reliability)
    monkeypatch.setattr(steerunc.judging.plots, "risk_coverage_plot", risk)
    out = tmp_path / "report"
    result = run("evaluate", fitted["cal"], "-c", fitted["calibrator"], "--in-sample", "--bootstrap", "0",
                 "--no-smooth", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["in_sample"] == {fitted["calibrator"]: {"fitted": "calibrator", "records_fitted_on": 300,
                                                          "records_evaluated": 300}}
    assert json.loads((out / "metrics.json").read_text())["in_sample"] == report["in_sample"]
    for title in ("Does the score single out the errors?", "Selective accuracy", "Is the confidence calibrated?"):
        assert f"In-sample (optimistic): {title}" in result.stderr
    assert "IN-SAMPLE" in result.stderr
    assert len(titles) >= 3 and all("in-sample" in t for t in titles), titles
    held_out = _write(tmp_path / "held.jsonl", 80, 5)
    clean = run("evaluate", held_out, "-c", fitted["calibrator"], "--in-sample", "--bootstrap", "0", "--json")
    assert clean.exit_code == 0 and json.loads(clean.stdout)["in_sample"] is None
    assert "not labelled in-sample" in clean.stderr and "In-sample" not in clean.stderr


def test_router_routes_a_scored_record_object(fitted: dict[str, str]) -> None:
    from steerunc.judging.calibration import load_calibrator
    from steerunc.records import ScoredRecord
    from steerunc.judging.triage import Router

    router = Router(load_calibrator(fitted["calibrator"]), 0.5)
    data = make_records(1, 6)[0]
    record = ScoredRecord(id="x", mode="options", prediction=data["prediction"], probs=data["probs"],
                          base_prediction=data["base_prediction"], base_probs=data["base_probs"],
                          scores=data["scores"], views={})
    assert router.route(record) == router.route(record.to_json())
    assert router.route(record).confidence is not None


def test_chat_reading_is_checked_and_files_from_before_it_was_recorded_get_a_note(
    fitted: dict[str, str], tmp_path: Path
) -> None:
    plain = _write(tmp_path / "plain.jsonl", 300, 5, chat=False)
    assert run("calibrate", plain, "-s", "mutual_info", "-m", "platt", "-o", tmp_path / "plain.json").exit_code == 0
    chat = _write(tmp_path / "chat.jsonl", 80, 6, chat=True)
    result = run("evaluate", chat, "-c", tmp_path / "plain.json", "--bootstrap", "0", "--no-smooth")
    assert result.exit_code == 2 and "scored with chat false, but" in result.stderr and "with chat true" in result.stderr
    # a calibrator made before records said how they were read: not refused, a note that it cannot be checked
    result = run("evaluate", chat, "-c", fitted["calibrator"], "--bootstrap", "0", "--no-smooth")
    assert result.exit_code == 0, result.stderr
    assert "does not record 'chat'" in " ".join(result.stderr.split())
    # one file with records from before and after (a resumed run): not "scored with different settings"
    records = make_records(60, 7, provenance=PROVENANCE)
    records[10]["provenance"] = {**PROVENANCE, "chat": False}
    mixed = write_jsonl(tmp_path / "mixed.jsonl", records)
    assert run("calibrate", mixed, "-s", "mutual_info", "-m", "platt", "-o", tmp_path / "m.json").exit_code == 0
