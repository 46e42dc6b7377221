"""The combined calibrator: several scores to one P(correct), logistic or monotone; its guarantee in the
documented three-part workflow over many random splits; JSON round trip; the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from scored_fixtures import make_records, write_jsonl, write_scored

from steerunc.judging.calibration import CombinedCalibrator, load_calibrator, make_calibrator
from steerunc.judging.calibration_combined import combination_objective
from steerunc.cli import main
from steerunc.errors import InputError
from steerunc.judging.metrics import brier, ece
from steerunc.judging.metrics import error_auroc as auroc
from steerunc.judging.triage import Router, raw_certainty
from steerunc.judging.triage_bounds import risk_threshold


def run(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- a population where two uncertainty scores each carry part of the errors -----------------------

_EPSILON, _DELTA, _N = 0.12, 0.1, 300
_AXIS = (np.arange(200) + 0.5) / 200
_GRID = np.array(np.meshgrid(_AXIS, _AXIS)).reshape(2, -1).T  # midpoints of the unit square


def _error_rate(s: np.ndarray) -> np.ndarray:
    """Never wrong where 0.6 s1 + 0.4 s2 < 0.15; the error rate then climbs to 40 %."""
    return 0.4 * np.clip((0.6 * s[:, 0] + 0.4 * s[:, 1] - 0.15) / 0.5, 0.0, 1.0)


def _draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = rng.uniform(size=(n, 2))
    return s, (rng.uniform(size=n) >= _error_rate(s)).astype(float)


def _population_risk(confidence: np.ndarray, threshold: float | None) -> tuple[float, float]:
    accepted = np.zeros(_GRID.shape[0], dtype=bool) if threshold is None else confidence >= threshold
    return (float(_error_rate(_GRID)[accepted].mean()) if accepted.any() else 0.0), float(accepted.mean())


@pytest.mark.parametrize(("monotone", "guard"), [(False, False), (True, False), (False, True), (True, True)])
def test_risk_guarantee_holds_for_the_combined_calibrator_over_random_splits(monotone: bool, guard: bool) -> None:
    """Fit the combination on part A, choose the --max-risk threshold on a disjoint part B, integrate the
    true error rate of what it accepts: above epsilon in at most about delta of 150 random splits; and it
    accepts more than the best single score's calibrator does under the same guarantee (with the guard,
    which keeps the first score alone where cross-validation does not show the combination clearly
    better, at least as much)."""
    rng = np.random.default_rng(21)
    splits, violations, coverages, single = 150, 0, [], []
    for _ in range(splits):
        (s_a, ok_a), (s_b, ok_b) = _draw(_N, rng), _draw(_N, rng)
        cal = CombinedCalibrator(["msp", "mutual_info"], monotone=monotone, guard=guard).fit(s_a, ok_a)
        sel = risk_threshold(cal.predict(s_b), ok_b, _EPSILON, _DELTA)
        risk, coverage = _population_risk(cal.predict(_GRID), sel.threshold)
        violations += risk > _EPSILON
        coverages.append(coverage)
        platt = make_calibrator("platt", "msp").fit(s_a[:, 0], ok_a)
        sel1 = risk_threshold(platt.predict(s_b[:, 0]), ok_b, _EPSILON, _DELTA)
        single.append(_population_risk(platt.predict(_GRID[:, 0]), sel1.threshold)[1])
    slack = 2.5 * float(np.sqrt(_DELTA * (1 - _DELTA) / splits))
    assert violations / splits <= _DELTA + slack, violations
    margin = 0.0 if guard else 0.02
    assert np.median(coverages) >= np.median(single) + margin, (np.median(coverages), np.median(single))
    assert np.median(coverages) > (0.09 if guard else 0.15)


def test_the_combination_is_better_calibrated_and_ranks_better_than_each_score_alone() -> None:
    rng = np.random.default_rng(3)
    (s_a, ok_a), (s_b, ok_b) = _draw(2000, rng), _draw(2000, rng)
    for monotone in (False, True):
        cal = CombinedCalibrator(["msp", "mutual_info"], monotone=monotone).fit(s_a, ok_a)
        assert cal.kept == "combination"  # 2000 records: the guard sees that both scores help
        conf = cal.predict(s_b)
        for j in range(2):
            assert auroc(-conf, ok_b) > auroc(s_b[:, j], ok_b) + 0.02
            alone = make_calibrator("platt", "msp").fit(s_a[:, j], ok_a).predict(s_b[:, j])
            assert brier(conf, ok_b) < brier(alone, ok_b)
        assert ece(conf, ok_b) < 0.06


def test_monotone_equals_logistic_where_the_free_fit_is_monotone_and_clips_where_it_is_not() -> None:
    rng = np.random.default_rng(4)
    s, ok = _draw(1500, rng)
    free = CombinedCalibrator(["msp", "mutual_info"], guard=False).fit(s, ok)
    mono = CombinedCalibrator(["msp", "mutual_info"], monotone=True, guard=False).fit(s, ok)
    assert np.all(free.coef_ > 0)
    np.testing.assert_allclose(mono.coef_, free.coef_, atol=1e-4)
    np.testing.assert_allclose(mono.predict(s), free.predict(s), atol=1e-5)
    # a third score that helps only with the wrong sign (higher = more sure, though named as an uncertainty)
    noisy = np.c_[s, 1.0 - s[:, 0] + rng.normal(scale=0.3, size=s.shape[0])]
    free3 = CombinedCalibrator(["msp", "mutual_info", "flip_rate"], guard=False).fit(noisy, ok)
    mono3 = CombinedCalibrator(["msp", "mutual_info", "flip_rate"], monotone=True, guard=False).fit(noisy, ok)
    assert free3.coef_[2] < -0.05 and mono3.coef_[2] == 0.0 and np.all(mono3.coef_ >= 0)
    # the monotone fit is the optimum of scikit-learn's objective over w >= 0
    z = (noisy * mono3.signs_ - mono3.mean_) / mono3.scale_
    best = combination_objective(np.r_[mono3.coef_, mono3.intercept_], z, ok, 1.0)[0]
    for _ in range(50):
        w = np.r_[np.clip(mono3.coef_ + rng.normal(scale=0.05, size=3), 0, None), mono3.intercept_ + rng.normal(0, 0.05)]
        assert combination_objective(w, z, ok, 1.0)[0] >= best - 1e-9
    # and the free fit (Newton's method) finds scikit-learn's optimum, at C = 1 and at a strong penalty
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-8).fit(z, ok)
    np.testing.assert_allclose(free3.coef_, ref.coef_[0], atol=1e-5)
    np.testing.assert_allclose(free3.intercept_, ref.intercept_[0], atol=1e-5)
    strong = CombinedCalibrator(["msp", "mutual_info", "flip_rate"], C=0.01, guard=False).fit(noisy, ok)
    ref = LogisticRegression(C=0.01, max_iter=10_000, tol=1e-8).fit(z, ok)
    np.testing.assert_allclose(strong.coef_, ref.coef_[0], atol=1e-5)


def _noise_scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """msp carries the errors; three more 'uncertainty scores' carry none (one correlated with msp)."""
    msp = rng.uniform(size=n)
    ok = (rng.uniform(size=n) >= 0.1 + 0.6 * msp).astype(float)
    return np.c_[msp, rng.uniform(size=n), msp + rng.normal(scale=0.3, size=n), rng.normal(size=n)], ok


@pytest.mark.parametrize("monotone", [False, True])
def test_the_guard_keeps_msp_alone_when_the_other_scores_are_noise_and_the_combination_when_they_help(
    monotone: bool,
) -> None:
    """Over 10 random draws of 300 calibration records each: noise scores are dropped in at least 9 (their
    weights exactly 0, the confidence then msp's own logistic map); where a second score carries half the
    errors (1000 records), the combination is kept in at least 9."""
    rng = np.random.default_rng(8)
    names = ["msp", "mutual_info", "mean_kl", "flip_rate"]
    dropped = 0
    for _ in range(10):
        s, ok = _noise_scores(300, rng)
        cal = CombinedCalibrator(names, monotone=monotone).fit(s, ok)
        if cal.kept == "first score":
            dropped += 1
            assert np.all(cal.coef_[1:] == 0.0) and cal.guard_["difference"] + cal.guard_["se"] >= 0
            alone = CombinedCalibrator(["msp"], monotone=monotone).fit(s[:, :1], ok)
            np.testing.assert_allclose(cal.predict(s), alone.predict(s[:, :1]), atol=1e-9)
    assert dropped >= 9, dropped
    kept = 0
    for _ in range(10):
        s = rng.uniform(size=(1000, 2))
        ok = (rng.uniform(size=1000) >= 0.05 + 0.35 * s[:, 0] + 0.35 * s[:, 1]).astype(float)
        cal = CombinedCalibrator(["msp", "mutual_info"], monotone=monotone).fit(s, ok)
        kept += cal.kept == "combination"
        if cal.kept == "combination":
            assert cal.guard_["difference"] + cal.guard_["se"] < 0 and np.all(cal.coef_ > 0)
    assert kept >= 9, kept


def test_groups_stay_in_one_fold_and_their_standard_error_counts_groups_not_records() -> None:
    """Four copies of every record (one question asked about four countries): grouped, the guard's
    folds never split a question, and its standard error is about that of the records without copies;
    ungrouped, the copies halve it, as if there were four times the evidence."""
    rng = np.random.default_rng(10)
    s, ok = _noise_scores(300, rng)
    names = ["msp", "mutual_info", "mean_kl", "flip_rate"]
    once = CombinedCalibrator(names).fit(s, ok).guard_
    copies, ok4, groups = np.repeat(s, 4, axis=0), np.repeat(ok, 4), np.repeat([f"q{i}" for i in range(300)], 4)
    grouped = CombinedCalibrator(names).fit(copies, ok4, groups=list(groups)).guard_
    ungrouped = CombinedCalibrator(names).fit(copies, ok4).guard_
    assert grouped["groups"] == 300 and "each of the 300 groups kept in one fold" in grouped["rule"]
    assert 0.7 < grouped["se"] / once["se"] < 1.4, (grouped["se"], once["se"])
    assert 0.35 < ungrouped["se"] / once["se"] < 0.65, (ungrouped["se"], once["se"])
    codes = np.unique(groups, return_inverse=True)[1]
    folds = list(CombinedCalibrator._folds(copies, ok4, codes))
    assert len(folds) == 25
    for train, test in folds:
        assert not set(codes[train]) & set(codes[test])
    few = CombinedCalibrator(names).fit(copies[:32], ok4[:32], groups=list(groups[:32]))
    assert few.kept == "first score" and "too few groups to cross-validate: 8" in few.guard_["reason"]
    with pytest.raises(ValueError, match="groups has 3 values"):
        CombinedCalibrator(names).fit(s, ok, groups=["a", "b", "c"])


def test_the_guard_keeps_msp_when_there_are_too_few_errors_to_cross_validate_and_can_be_turned_off() -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=(60, 2))
    ok = np.ones(60)
    ok[np.argsort(-s[:, 0])[:4]] = 0.0  # 4 errors, on the least sure records: fewer than the 5 folds
    cal = CombinedCalibrator(["msp", "mutual_info"]).fit(s, ok)
    assert cal.kept == "first score" and "56 correct and 4 incorrect" in cal.guard_["reason"]
    assert cal.coef_[1] == 0.0 and "guard: first score kept" in cal.fitter_
    free = CombinedCalibrator(["msp", "mutual_info"], guard=False).fit(s, ok)
    assert free.kept == "unguarded" and free.coef_[1] != 0.0 and free.to_dict()["state"]["guard"] is None


def test_json_round_trip_sklearn_contract_and_raw_score() -> None:
    from sklearn.base import clone

    rng = np.random.default_rng(5)
    s, ok = _draw(400, rng)
    for monotone in (False, True):
        cal = make_calibrator("monotone" if monotone else "logistic", scores=["msp", "fused_confidence"]).fit(s, ok)
        again = load_calibrator(json.loads(json.dumps(cal.to_dict())))
        assert isinstance(again, CombinedCalibrator) and again.label == cal.label
        assert again.guard is True and again.guard_ == cal.guard_ and again.kept == cal.kept
        np.testing.assert_array_equal(again.predict(s), cal.predict(s))
        old = cal.to_dict()  # a file saved before the guard existed: no params.guard, no state.guard
        del old["params"]["guard"], old["state"]["guard"]
        unguarded = load_calibrator(old)
        assert isinstance(unguarded, CombinedCalibrator) and unguarded.guard is False and unguarded.kept == "unguarded"
        assert cal.orientations_ == ["uncertain", "confident"]  # a pseudo-score is read the other way
        assert clone(cal).get_params() == cal.get_params()
        records = [(i, {"scores": {"msp": float(a)}, "probs": {"A": float(b), "B": 1 - float(b)}}) for i, (a, b) in
                   enumerate(np.c_[s[:5, 0], np.clip(s[:5, 1], 0.5, 1)])]
        raw = raw_certainty(cal, records)
        assert np.all(np.argsort(raw) == np.argsort(cal.predict(np.c_[s[:5, 0], np.clip(s[:5, 1], 0.5, 1)])))
    with pytest.raises(ValueError, match="several scores combine with method 'logistic' or 'monotone'"):
        make_calibrator("isotonic", scores=["msp", "entropy"])
    assert make_calibrator("logistic", scores=["msp"]).method == "platt"  # one score: Platt scaling


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["state"].update(coef=[1.0]), "one number per score"),
        (lambda d: d["state"].update(coef=[-1.0, 0.5]), "monotone combination must hold numbers >= 0"),
        (lambda d: d["state"].update(scale=[0.0, 1.0]), "positive"),
        (lambda d: d["params"].update(scores=[]), "params"),
        (lambda d: d["state"].update(orientations=["up", "down"]), "orientations"),
        (lambda d: d["state"].update(guard={"kept": "first score"}), "says the first score was kept"),
        (lambda d: d["state"].update(guard={"kept": "both"}), "state.guard"),
        (lambda d: d["state"].update(guard=[1]), "state.guard"),
        (lambda d: d["params"].update(guard=False), "'params.guard' is false"),
        (lambda d: d["params"].update(guard="yes"), "guard must be true or false"),
    ],
)
def test_malformed_combined_calibrators_are_refused(change: Any, message: str) -> None:
    rng = np.random.default_rng(6)
    s, ok = _draw(2000, rng)
    data = CombinedCalibrator(["msp", "mutual_info"], monotone=True).fit(s, ok).to_dict()
    assert data["state"]["guard"]["kept"] == "combination"
    change(data)
    with pytest.raises(InputError, match=message):
        load_calibrator(data)


# -- the command line ----------------------------------------------------------------------------


def test_calibrate_scores_evaluate_and_triage(tmp_path: Path) -> None:
    cal, test = write_scored(tmp_path / "cal.jsonl", 600, seed=0), write_scored(tmp_path / "test.jsonl", 300, seed=1)
    scores = "msp,mutual_info,mean_kl,flip_rate"
    fitted = run("calibrate", cal, "--scores", scores, "-o", tmp_path / "comb.json")  # logistic by default
    assert fitted.exit_code == 0, fitted.stderr
    data = json.loads((tmp_path / "comb.json").read_text())
    assert data["method"] == "combined" and data["params"]["scores"] == scores.split(",")
    assert data["params"]["monotone"] is False and len(data["provenance"]["fitted_on"]["keys"]) == 600
    assert f"{scores.replace(',', '+')}@logistic" in fitted.stderr and "Weights per standard deviation" in fitted.stderr
    kept = data["state"]["guard"]["kept"]
    assert kept in ("combination", "first score") and "held-out log loss" in fitted.stderr
    assert ("Guard: the combination is kept" in fitted.stderr) == (kept == "combination")
    unguarded = run("calibrate", cal, "--scores", scores, "--no-guard")
    assert unguarded.exit_code == 0 and "Guard off (--no-guard)" in unguarded.stderr
    saved = json.loads(unguarded.stdout)
    assert saved["params"]["guard"] is False and saved["state"]["guard"] is None
    noise = make_records(200, seed=4)
    for i, record in enumerate(noise):  # mean_kl made pure noise: the guard drops it and keeps msp alone
        record["scores"]["mean_kl"] = float(np.random.default_rng(i).uniform())
    dropped = run("calibrate", write_jsonl(tmp_path / "noise.jsonl", noise), "--scores", "msp,mean_kl")
    assert dropped.exit_code == 0 and "Guard: msp alone is used" in dropped.stderr, dropped.stderr
    assert json.loads(dropped.stdout)["state"]["coef"][1] == 0.0
    for i, record in enumerate(noise):  # 'group' on the records: each group stays in one fold
        if i % 2 == 0:
            record["group"] = f"q{i // 4}"
    grouped = run("calibrate", write_jsonl(tmp_path / "grouped.jsonl", noise), "--scores", "msp,mean_kl")
    assert grouped.exit_code == 0 and json.loads(grouped.stdout)["state"]["guard"]["groups"] == 150
    mono = run("calibrate", cal, "--scores", scores, "-m", "monotone", "-o", tmp_path / "mono.json")
    assert mono.exit_code == 0, mono.stderr
    assert all(w >= 0 for w in json.loads((tmp_path / "mono.json").read_text())["state"]["coef"])
    report = run("evaluate", test, "-c", tmp_path / "comb.json", "-c", tmp_path / "mono.json", "--json",
                 "--bootstrap", "0", "--no-smooth")
    assert report.exit_code == 0, report.stderr
    rows = json.loads(report.stdout)["scores"]
    for variant in ("logistic", "monotone"):
        row = rows[f"msp+mutual_info+mean_kl+flip_rate@{variant}"]
        assert row["ece"] < rows["fused_confidence"]["ece"] and row["judged_against"] == "fused"
    accept, review = tmp_path / "a.jsonl", tmp_path / "r.jsonl"
    routed = run("triage", test, "-c", tmp_path / "mono.json", "--budget", "0.3", "--accept-out", accept,
                 "--review-out", review, "--policy-out", tmp_path / "policy.json")
    assert routed.exit_code == 0, routed.stderr
    assert len(review.read_text().splitlines()) == 90 and "@monotone" in routed.stderr
    router = Router.from_policy(str(tmp_path / "policy.json"))
    kept = {json.loads(line)["id"] for line in accept.read_text().splitlines()}
    assert {r["id"] for r in make_records(300, seed=1) if router.route(r).accepted} == kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scores", "msp,mutual_info", "-m", "isotonic"], "--method logistic or monotone, not isotonic"),
        (["--scores", "msp,,flip_rate"], "distinct score names"),
        (["--scores", "msp,msp"], "distinct score names"),
        (["--scores", "msp,flip_rate", "--score", "msp"], "not both"),
        (["--scores", "msp,flip_rate", "--higher-means", "confident"], "--higher-means is for one score"),
    ],
)
def test_calibrate_scores_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    cal = write_scored(tmp_path / "cal.jsonl", 60, seed=0)
    result = run("calibrate", cal, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_one_score_in_scores_is_the_same_as_score_and_a_missing_one_names_the_line(tmp_path: Path) -> None:
    cal = write_scored(tmp_path / "cal.jsonl", 200, seed=0)
    one = run("calibrate", cal, "--scores", "msp", "-m", "logistic")
    same = run("calibrate", cal, "--score", "msp", "-m", "logistic")
    assert one.exit_code == same.exit_code == 0
    a, b = json.loads(one.stdout), json.loads(same.stdout)
    assert a["method"] == b["method"] == "platt" and a["state"] == b["state"]
    missing = run("calibrate", cal, "--scores", "msp,magic")
    assert missing.exit_code == 2 and f"{cal}:1: no score 'magic'" in missing.stderr
    records = make_records(40, seed=9)
    del records[3]["scores"]["flip_rate"]
    path = write_jsonl(tmp_path / "gap.jsonl", records)
    gap = run("calibrate", path, "--scores", "msp,flip_rate")
    assert gap.exit_code == 1 and f"{path}:4: no score 'flip_rate'" in gap.stderr


@pytest.mark.parametrize(
    "module",
    ["steerunc.judging.calibration", "steerunc.judging.calibration_combined", "steerunc.judging.option_prior", "steerunc.judging.provenance",
     "steerunc.scored"],
)
def test_the_examples_in_the_docstrings_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
