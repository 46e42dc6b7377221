"""The option prior: a per-option bias with a temperature that corrects a model leaning towards one
answer; it must raise held-out accuracy on a biased set over many random splits, agree with a logistic
map of the Yes-minus-No logit, never import torch, and be used by calibrate, evaluate and triage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from scored_fixtures import biased_records, write_jsonl

from steerunc.cli import main
from steerunc.errors import InputError
from steerunc.judging.option_prior import OptionPrior, load_prior, prior_from_dict
from steerunc.judging.triage import Router


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _matrix(records: list[dict[str, Any]], field: str = "base_logits") -> tuple[np.ndarray, np.ndarray]:
    z = np.array([[r[field]["Yes"], r[field]["No"]] for r in records])
    return z, np.array([["Yes", "No"].index(r["label"]) for r in records])


def test_the_prior_raises_heldout_accuracy_on_a_biased_set_over_random_splits() -> None:
    """Fit on one half, measure on the other, 100 random splits of a set whose model answers Yes far too
    often: the corrected prediction is more accurate in every split, and beats the majority class."""
    records = biased_records(600, seed=0)
    z, y = _matrix(records)
    rng = np.random.default_rng(1)
    gains, majority_gap = [], []
    for _ in range(100):
        order = rng.permutation(len(records))
        fit, held = order[:300], order[300:]
        prior = OptionPrior("base").fit(z[fit], y[fit], ["Yes", "No"])
        before = float(np.mean(z[held].argmax(axis=1) == y[held]))
        after = float(np.mean(prior.predict(z[held]) == y[held]))
        gains.append(after - before)
        majority_gap.append(after - max(np.mean(y[held] == 0), np.mean(y[held] == 1)))
        assert prior.bias_[0] < prior.bias_[1]  # it learnt to lean away from Yes
    assert min(gains) > 0.05 and np.mean(gains) > 0.12, (min(gains), np.mean(gains))
    assert min(majority_gap) > 0.05  # it does better than always answering the majority class


def test_two_options_are_a_logistic_map_of_the_yes_minus_no_logit() -> None:
    from sklearn.linear_model import LogisticRegression

    z, y = _matrix(biased_records(2000, seed=2))
    prior = OptionPrior("base", reg=0.0).fit(z, y, ["Yes", "No"])
    x = (z[:, 0] - z[:, 1]).reshape(-1, 1)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, (y == 0).astype(int))
    assert 1 / prior.temperature_ == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert prior.bias_[0] - prior.bias_[1] == pytest.approx(ref.intercept_[0], abs=1e-3)
    np.testing.assert_allclose(prior.predict_proba(z)[:, 0], ref.predict_proba(x)[:, 1], atol=1e-4)


def test_correct_rewrites_the_prediction_and_what_is_read_from_it() -> None:
    records = biased_records(300, seed=3)
    z, y = _matrix(records)
    prior = OptionPrior("base").fit(z, y, ["Yes", "No"])
    changed = [prior.correct(r) for r in records if prior.predict(_matrix([r])[0])[0] != _matrix([r])[0].argmax()]
    assert changed
    for r in changed:
        p = np.array(list(r["base_probs"].values()))
        assert r["base_prediction"] == max(r["base_probs"], key=r["base_probs"].get)
        assert r["prior"]["prediction_before"] != r["base_prediction"]
        assert r["base_correct"] == (r["label"] == r["base_prediction"])
        assert r["scores"]["msp"] == pytest.approx(1 - p.max())
        assert r["scores"]["entropy"] == pytest.approx(-(p * np.log(p)).sum())
        # the fused prediction and its scores are untouched
        assert r["prediction"] != r["base_prediction"] and r["scores"]["fused_entropy"] != r["scores"]["entropy"]
    fused = OptionPrior("fused").fit(*_matrix(records, "logits"), ["Yes", "No"])
    again = fused.correct(records[0])
    assert again["base_probs"] == records[0]["base_probs"] and again["prior"]["corrected"] == "fused+prior"
    three = dict(records[0], base_logits={"Yes": 1.0, "No": 0.0, "Unsure": 0.0})
    with pytest.raises(InputError, match="are not the \\['No', 'Yes'\\] the option prior was fitted on"):
        prior.correct(three, "x.jsonl", 4)
    only_probs = {k: v for k, v in records[0].items() if k != "base_logits"}  # another system: probabilities only
    assert prior.correct(only_probs)["base_prediction"] == prior.correct(records[0])["base_prediction"]


def test_json_round_trip_and_malformed_files(tmp_path: Path) -> None:
    z, y = _matrix(biased_records(200, seed=4))
    prior = OptionPrior("base").fit(z, y, ["Yes", "No"])
    again = prior_from_dict(json.loads(json.dumps(prior.to_dict())))
    np.testing.assert_array_equal(again.predict_proba(z), prior.predict_proba(z))
    assert again.reference()["digest"] == prior.reference()["digest"]
    for change, message in (
        (lambda d: d["state"].update(temperature=-1), "temperature"),
        (lambda d: d["state"].update(bias={"Yes": 0.1}), "bias"),
        (lambda d: d.update(target="other"), "target"),
        (lambda d: d.update(kind="steerunc.calibrator"), "not a steerunc option prior"),
    ):
        data = prior.to_dict()
        change(data)
        path = tmp_path / "p.json"
        path.write_text(json.dumps(data))
        with pytest.raises(InputError, match=message) as info:
            load_prior(str(path))
        assert str(path) in str(info.value)


def test_the_prior_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from steerunc.judging.option_prior import OptionPrior\n"
        "import steerunc.cli.calibrate, steerunc.cli.evaluate, steerunc.cli.triage\n"
        "p = OptionPrior('base').fit(np.array([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0]]), [1, 1, 1], ['Yes', 'No'])\n"
        "p.correct({'base_logits': {'Yes': 1.0, 'No': 0.0}, 'label': 'No'})\n"
        "print([m for m in ('torch', 'netcal', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, str]:
    return {
        "a": write_jsonl(tmp_path / "a.jsonl", biased_records(300, seed=10, prefix="a")),
        "b": write_jsonl(tmp_path / "b.jsonl", biased_records(300, seed=11, prefix="b")),
        "c": write_jsonl(tmp_path / "c.jsonl", biased_records(300, seed=12, prefix="c")),
        "dir": str(tmp_path),
    }


def test_calibrate_prior_then_evaluate_with_it(parts: dict[str, str]) -> None:
    prior = Path(parts["dir"]) / "prior.json"
    fitted = run("calibrate-prior", parts["a"], "--target", "base", "-o", prior)
    assert fitted.exit_code == 0, fitted.stderr
    assert "base+prior" in fitted.stderr and "in-sample" in fitted.stderr
    data = json.loads(prior.read_text())
    assert data["kind"] == "steerunc.option_prior" and data["provenance"]["fitted_on"]["n"] == 300
    report = run("evaluate", parts["b"], "--target", "base", "--prior", prior, "--json", "--bootstrap", "0", "--no-smooth")
    assert report.exit_code == 0, report.stderr
    metrics = json.loads(report.stdout)
    assert metrics["target"] == "base+prior" and metrics["prior"]["accuracy_after"] > metrics["prior"]["accuracy_before"] + 0.1
    assert metrics["accuracy"] == metrics["prior"]["accuracy_after"]
    assert metrics["scores"]["msp"]["judged_against"] == "base+prior" and "base+prior" in report.stderr
    plain = json.loads(run("evaluate", parts["b"], "--target", "base", "--json", "--bootstrap", "0", "--no-smooth").stdout)
    assert plain["scores"]["msp"]["ece"] != metrics["scores"]["msp"]["ece"]  # msp read from the corrected distribution
    refused = run("evaluate", parts["a"], "--target", "base", "--prior", prior, "--bootstrap", "0")
    assert refused.exit_code == 2 and f"{parts['a']}: 300 of these 300 labelled records evaluated" in refused.stderr
    assert f"option prior {prior}" in refused.stderr


def test_calibrate_prior_refuses_mixed_option_lists(parts: dict[str, str]) -> None:
    records = biased_records(20, seed=13)
    for name in ("logits", "base_logits"):
        records[6][name] = {"A": 0.1, "B": 0.2, "C": 0.3}
    for name in ("probs", "base_probs"):
        records[6][name] = {"A": 0.3, "B": 0.3, "C": 0.4}
    records[6].update(label="A", prediction="C", base_prediction="C", correct=False, base_correct=False)
    path = write_jsonl(Path(parts["dir"]) / "mixed.jsonl", records)
    result = run("calibrate-prior", path, "--target", "base")
    assert result.exit_code == 2
    assert f"{path}: an option prior needs one option list: line 1 offers ['Yes', 'No'], line 7 offers" in result.stderr


def test_a_calibrator_fitted_after_the_prior_needs_it_and_triage_outputs_corrected_records(parts: dict[str, str]) -> None:
    d = Path(parts["dir"])
    assert run("calibrate-prior", parts["a"], "--target", "base", "-o", d / "prior.json").exit_code == 0
    fitted = run("calibrate", parts["b"], "--target", "base", "-s", "msp", "-m", "platt", "--prior", d / "prior.json",
                 "-o", d / "cal.json")
    assert fitted.exit_code == 0, fitted.stderr
    assert json.loads((d / "cal.json").read_text())["provenance"]["prior"]["digest"]
    without = run("evaluate", parts["c"], "--target", "base", "-c", d / "cal.json", "--bootstrap", "0")
    assert without.exit_code == 2 and "pass it with --prior" in without.stderr
    ok = run("evaluate", parts["c"], "--target", "base", "-c", d / "cal.json", "--prior", d / "prior.json",
             "--bootstrap", "0", "--no-smooth", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["scores"]["msp@platt"]["judged_against"] == "base+prior"
    accept, review = d / "acc.jsonl", d / "rev.jsonl"
    routed = run("triage", parts["c"], "-c", d / "cal.json", "--prior", d / "prior.json", "--budget", "0.2",
                 "--accept-out", accept, "--review-out", review, "--policy-out", d / "policy.json")
    assert routed.exit_code == 0, routed.stderr
    out = [json.loads(line) for line in accept.read_text().splitlines() + review.read_text().splitlines()]
    assert len(out) == 300 and all(r["prior"]["corrected"] == "base+prior" for r in out)
    assert any(r["prior"]["prediction_before"] != r["base_prediction"] for r in out)
    assert "option prior" in routed.stderr
    policy = json.loads((d / "policy.json").read_text())
    assert policy["prior"]["kind"] == "steerunc.option_prior"
    router = Router.from_policy(str(d / "policy.json"))
    decisions = [router.route(r) for r in biased_records(300, seed=12, prefix="c")]
    assert [dec.accepted for dec in decisions] == [r["triage"]["decision"] == "accept" for r in
                                                   sorted(out, key=lambda r: int(r["id"].split("-")[1]))]
    assert all(dec.corrected is not None for dec in decisions)
    noprior = run("triage", parts["c"], "-c", d / "cal.json", "--budget", "0.2", "--accept-out", accept,
                  "--review-out", review)
    assert noprior.exit_code == 2 and "pass it with --prior" in noprior.stderr
    both = run("triage", parts["c"], "--policy", d / "policy.json", "--prior", d / "prior.json",
               "--accept-out", accept, "--review-out", review)
    assert both.exit_code == 2 and "drop --prior" in both.stderr
    bad = dict(policy, prior=dict(policy["prior"], state={"temperature": 2.0, "bias": {"Yes": 0.0, "No": 0.0}}))
    (d / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="another option prior"):
        Router.from_policy(str(d / "bad.json"))


def test_triage_max_risk_refuses_threshold_records_the_prior_was_fitted_on(parts: dict[str, str]) -> None:
    d = Path(parts["dir"])
    run("calibrate-prior", parts["a"], "--target", "base", "-o", d / "prior.json")
    run("calibrate", parts["b"], "--target", "base", "-s", "msp", "-m", "platt", "--prior", d / "prior.json",
        "-o", d / "cal.json")
    result = run("triage", parts["c"], "-c", d / "cal.json", "--prior", d / "prior.json", "--max-risk", "0.3",
                 "--calibration-data", parts["a"], "--accept-out", d / "x.jsonl", "--review-out", d / "y.jsonl")
    assert result.exit_code == 2 and "the option prior" in result.stderr and "300 of these 300" in result.stderr
    fine = run("triage", parts["a"], "-c", d / "cal.json", "--prior", d / "prior.json", "--max-risk", "0.3",
               "--calibration-data", parts["c"], "--accept-out", d / "x.jsonl", "--review-out", d / "y.jsonl")
    assert fine.exit_code == 0, fine.stderr
