"""Triage: the budget is respected, the risk guarantee holds over many random splits, routing is total."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from steerunc.judging.calibration import Calibrator, load_calibrator, make_calibrator, save_calibrator
from steerunc.errors import InputError
from steerunc.scored import record_keys
from steerunc.judging.triage import Router, check_disjoint, confidence_warning, raw_certainty
from steerunc.judging.triage_bounds import budget_cut, budget_threshold, clopper_pearson_upper, min_accepted, one_per_group, risk_threshold


def test_clopper_pearson_matches_scipy() -> None:
    for errors, n in [(0, 10), (3, 50), (17, 200), (50, 50)]:
        ref = (
            binomtest(errors, n).proportion_ci(confidence_level=0.8, method="exact").high
        )  # two-sided 80% = one-sided 90%
        assert float(clopper_pearson_upper(errors, n, 0.1)) == pytest.approx(ref, abs=1e-9)
    assert (1 - 0.05) ** min_accepted(0.05, 0.1) <= 0.1 < (1 - 0.05) ** (min_accepted(0.05, 0.1) - 1)


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.25, 0.5, 0.99])
def test_budget_is_never_exceeded_even_with_ties(budget: float) -> None:
    rng = np.random.default_rng(0)
    conf = np.round(rng.uniform(size=517), 1)  # heavy ties
    theta = budget_threshold(conf, budget)
    review = int(np.sum(conf < theta)) if theta is not None else conf.size
    assert review <= np.floor(budget * conf.size)
    assert budget_threshold(conf, 1.0) is None
    with pytest.raises(ValueError, match="budget"):
        budget_threshold(conf, 1.5)


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
def test_budget_cut_reviews_exactly_the_budget_even_with_ties(budget: float) -> None:
    rng = np.random.default_rng(0)
    conf = np.round(rng.uniform(size=517), 1)  # heavy ties in the confidence ...
    raw = np.round(rng.uniform(size=517), 1)  # ... and in the raw score that breaks them
    k = int(np.floor(budget * conf.size + 1e-9))
    cut = budget_cut(conf, raw, k)
    assert cut.n_review == k
    if cut.threshold is None or cut.tie_threshold is None:
        assert k == conf.size and cut.tie_threshold is None
        return
    accepted_by_rule = (conf > cut.threshold) | ((conf == cut.threshold) & (raw >= cut.tie_threshold))
    # the rule and the cut differ only on records tied with the first accepted one on both keys
    differ = accepted_by_rule & cut.review
    assert np.all((conf[differ] == cut.threshold) & (raw[differ] == cut.tie_threshold))
    assert not np.any(~accepted_by_rule & ~cut.review)
    tied = np.flatnonzero((conf == cut.threshold) & (raw == cut.tie_threshold))
    assert np.all(np.diff(cut.review[tied].astype(int)) <= 0)  # the earliest tied records go to review
    lowest = np.lexsort((raw, conf))[:k]
    assert sorted(zip(conf[lowest], raw[lowest])) == sorted(zip(conf[cut.review], raw[cut.review]))


def test_budget_router_breaks_ties_by_the_raw_score_and_saves_the_rule(tmp_path: Any) -> None:
    u = np.linspace(0.0, 1.0, 40)
    cal = make_calibrator("histogram", "mutual_info", n_bins=1).fit(u, (u < 0.5).astype(float))  # constant
    records = [{"scores": {"mutual_info": float(v)}} for v in np.linspace(0.1, 0.9, 20)]
    conf = cal.predict([r["scores"]["mutual_info"] for r in records])
    assert np.ptp(conf) == 0 and Router.for_budget(cal, conf, 0.2).threshold == conf[0]  # old rule: all accepted
    raw = raw_certainty(cal, list(enumerate(records)))
    router = Router.for_budget(cal, conf, 0.2, raw=raw)
    decisions = router.route_many(records)
    assert [d.accepted for d in decisions] == [True] * 16 + [False] * 4  # the 4 highest mutual_info
    assert "tie broken by raw score -mutual_info" in decisions[-1].reason
    path = tmp_path / "policy.json"
    router.save_policy(str(path))
    policy = json.loads(path.read_text())
    assert policy["tie_threshold"] == pytest.approx(-records[15]["scores"]["mutual_info"])
    assert Router.from_policy(str(path)).route_many(records) == decisions
    warning = confidence_warning(conf, cal)
    assert warning is not None and "(nearly) constant" in warning and "-mutual_info" in warning
    assert confidence_warning(np.linspace(0, 1, 20), cal) is None
    assert "only 2 distinct values" in (confidence_warning([0.2, 0.2, 0.8, 0.8], cal) or "")
    with pytest.raises(InputError, match="tie_threshold"):
        Router.from_policy({**policy, "tie_threshold": "high"})


def test_temperature_raw_score_is_the_max_softmax() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(size=(200, 3)) * 3
    y = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in z])
    cal = make_calibrator("temperature").fit(z, y)
    records = [(1, {"logits": {"A": 2.0, "B": 0.0}}), (2, {"logits": {"A": 0.0, "B": 0.0, "C": 0.0}})]
    assert raw_certainty(cal, records).tolist() == pytest.approx([1 / (1 + np.exp(-2.0)), 1 / 3])


def _true_risk(theta: float | None) -> float:
    """Selective risk in the population: conf ~ U(0.5, 1), P(correct | conf) = conf, so the
    error rate of {conf >= theta} is (1 - theta) / 2."""
    return 0.0 if theta is None else (1 - max(theta, 0.5)) / 2


def _population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    conf = rng.uniform(0.5, 1.0, n)
    return conf, (rng.uniform(size=n) < conf).astype(float)


def test_risk_guarantee_holds_over_random_splits() -> None:
    """P(true selective risk > epsilon) <= delta; a naive plug-in threshold breaks it."""
    rng = np.random.default_rng(1)
    epsilon, delta, splits = 0.15, 0.1, 400  # best possible: theta = 0.7, 60 % accepted
    violations = naive_violations = 0
    coverages = []
    for _ in range(splits):
        conf, ok = _population(300, rng)
        sel = risk_threshold(conf, ok, epsilon, delta)
        violations += _true_risk(sel.threshold) > epsilon
        coverages.append(sel.coverage)
        # naive: the lowest threshold whose empirical risk is <= epsilon
        order = np.argsort(-conf)
        emp = np.cumsum(1 - ok[order]) / np.arange(1, conf.size + 1)
        fine = np.flatnonzero(emp <= epsilon)
        naive_violations += _true_risk(float(conf[order][fine.max()]) if fine.size else None) > epsilon
    slack = 2.5 * np.sqrt(delta * (1 - delta) / splits)
    assert violations / splits <= delta + slack
    assert naive_violations / splits > delta + slack  # the test can tell a guarantee from none
    assert np.median(coverages) > 0.15  # and the guarantee is not bought by accepting nothing


# -- the documented workflow: fit on part A, choose the threshold on part B, apply to new records ----
#
# The population: an uncertainty score s ~ U(0, 1) (read as mutual_info, higher = less sure) and a
# known error rate per score, so the true error rate of any acceptance rule {g(s) >= theta} is an
# integral over s, taken by the midpoint rule on a fine grid. 15 % of the items are never wrong; then
# the error rate climbs to 25 % over the next tenth of the scores and stays there. Temperature
# scaling reads option logits instead: (4 (1 - s), 0), the first option predicted, its label the
# first option when right and the second when wrong.

_EPSILON, _DELTA, _N = 0.12, 0.1, 300
_GRID = (np.arange(20_000) + 0.5) / 20_000


def _error_rate(s: np.ndarray) -> np.ndarray:
    return 0.25 * np.clip((s - 0.15) / 0.1, 0.0, 1.0)


def _logits(s: np.ndarray) -> np.ndarray:
    return np.c_[4.0 * (1.0 - s), np.zeros(s.size)]


class _Part:
    """n records of the population, with ids from ``first_id`` on (so parts drawn apart share none)."""

    def __init__(self, n: int, rng: np.random.Generator, first_id: int) -> None:
        self.s = rng.uniform(size=n)
        self.ok = (rng.uniform(size=n) >= _error_rate(self.s)).astype(float)
        self.first_id = first_id

    @property
    def records(self) -> list[dict[str, Any]]:
        return [{"id": self.first_id + i} for i in range(self.s.size)]  # all that keys are made of here


def _fit_on(method: str, part: _Part, keys: bool = True) -> Calibrator:
    """What ``steerunc calibrate`` does: fit, then remember the keys of the records fitted on."""
    calibrator = make_calibrator(method, "mutual_info")
    if method == "temperature":
        calibrator.fit(_logits(part.s), (1 - part.ok).astype(int))
    else:
        calibrator.fit(part.s, part.ok)
    if keys:
        calibrator.fitted_on_ = frozenset(record_keys(part.records))
    return calibrator


def _confidence(calibrator: Calibrator, s: np.ndarray) -> np.ndarray:
    return calibrator.predict(_logits(s) if calibrator.input_kind == "logits" else s)


def _population_risk(calibrator: Calibrator, threshold: float | None) -> tuple[float, float]:
    """True error rate and share of the population accepted by confidence >= threshold."""
    accepted = np.zeros(_GRID.size, dtype=bool) if threshold is None else _confidence(calibrator, _GRID) >= threshold
    return (float(_error_rate(_GRID)[accepted].mean()) if accepted.any() else 0.0), float(accepted.mean())


def _slack(splits: int) -> float:
    return 2.5 * float(np.sqrt(_DELTA * (1 - _DELTA) / splits))


# netcal's beta and temperature fits take ~0.1 s each, so fewer splits there, with the wider slack
# that goes with them; platt, beta and temperature fit strictly monotone maps, whose threshold on
# part B accepts the same share of the scores whatever part A fitted, so they need the fewest.
@pytest.mark.parametrize(
    ("method", "splits"), [("histogram", 400), ("isotonic", 400), ("platt", 100), ("beta", 40), ("temperature", 40)]
)
def test_risk_guarantee_holds_for_the_documented_workflow(method: str, splits: int) -> None:
    """Calibrator fitted on part A, threshold on a disjoint part B, true risk over the population:
    it exceeds epsilon in at most about delta of the random splits, for every calibrator method."""
    rng = np.random.default_rng(11)
    violations, coverages = 0, []
    for split in range(splits):
        fit_part, choose_part = _Part(_N, rng, 2 * _N * split), _Part(_N, rng, 2 * _N * split + _N)
        calibrator = _fit_on(method, fit_part, keys=split < 5)  # (hashing every split's ids takes long)
        if split < 5:
            assert check_disjoint(calibrator, choose_part.records, "b.jsonl", "a.json")  # checked, and disjoint
            with pytest.raises(InputError, match=f"b.jsonl: {_N} of these {_N} .* the calibrator a.json"):
                check_disjoint(calibrator, fit_part.records, "b.jsonl", "a.json")  # part A is refused
        router = Router.for_risk(calibrator, _confidence(calibrator, choose_part.s), choose_part.ok, _EPSILON, _DELTA)
        risk, coverage = _population_risk(calibrator, router.threshold)
        violations += risk > _EPSILON
        coverages.append(coverage)
    assert violations / splits <= _DELTA + _slack(splits), (violations, splits)
    assert np.median(coverages) > 0.1  # not bought by accepting nothing (~0.2; the best rule accepts 38.5 %)


def test_choosing_the_threshold_on_the_records_fitted_on_breaks_the_guarantee() -> None:
    """The workflow the docs used to show, which check_disjoint now refuses: histogram binning fitted
    and thresholded on the same part violates epsilon far more often than delta, so the test above
    can tell a guarantee from none."""
    rng = np.random.default_rng(12)
    splits, violations = 400, 0
    for split in range(splits):
        part = _Part(_N, rng, _N * split)
        calibrator = _fit_on("histogram", part, keys=False)
        selection = risk_threshold(_confidence(calibrator, part.s), part.ok, _EPSILON, _DELTA)
        violations += _population_risk(calibrator, selection.threshold)[0] > _EPSILON
    assert violations / splits > _DELTA + 2 * _slack(splits), violations


def test_one_record_per_group_keeps_the_guarantee_that_grouped_records_break() -> None:
    """Records that come in groups err together (one question asked of several countries): choosing
    the threshold on all of them counts each group many times and breaks the guarantee; on one
    record per group (``triage --one-per-group``) it holds. The population is the one above, drawn
    by group (1 to 30 records each, every record of a group with the group's score and correctness),
    so a draw of "a group, then one of its records" has the same true error rates as a group."""
    rng = np.random.default_rng(21)
    splits, groups_per_split = 400, 300
    violations = {"all": 0, "one per group": 0}
    coverages = []
    for split in range(splits):
        s = rng.uniform(size=groups_per_split)
        ok = (rng.uniform(size=groups_per_split) >= _error_rate(s)).astype(float)
        sizes = rng.integers(1, 31, groups_per_split)
        groups = np.repeat(np.arange(groups_per_split), sizes)
        records_s, records_ok = s[groups], ok[groups]
        for name, keep in (("all", np.arange(groups.size)), ("one per group", one_per_group(groups.tolist(), split))):
            selection = risk_threshold(1.0 - records_s[keep], records_ok[keep], _EPSILON, _DELTA)
            accepted = None if selection.threshold is None else 1.0 - _GRID >= selection.threshold
            risk = float(_error_rate(_GRID)[accepted].mean()) if accepted is not None and accepted.any() else 0.0
            violations[name] += risk > _EPSILON
            if name == "one per group":
                assert selection.n_calibration == groups_per_split
                coverages.append(selection.coverage)
    assert violations["one per group"] / splits <= _DELTA + _slack(splits), violations
    assert violations["all"] / splits > _DELTA + 2 * _slack(splits), violations  # the test can tell
    assert np.median(coverages) > 0.15, np.median(coverages)  # (the best rule accepts 38.5 %)


def test_one_per_group_draws_one_record_of_each_group() -> None:
    groups = ["a", "b", "a", "c", "a", "b"]
    for seed in range(20):
        kept = one_per_group(groups, seed)
        assert sorted(groups[i] for i in kept) == ["a", "b", "c"] and list(kept) == sorted(kept)
    assert len({tuple(one_per_group(groups, seed)) for seed in range(20)}) > 1  # drawn, not always the first
    assert one_per_group(groups, 5).tolist() == one_per_group(groups, 5).tolist()  # the seed's draw


def test_record_keys_by_id_as_text_else_by_content() -> None:
    keys = record_keys(
        [
            {"id": 1, "scores": {"mutual_info": 0.1}},
            {"id": "1", "scores": {"mutual_info": 0.9}},  # the same item: ids compare as text
            {"id": "2"},
            {"id": None, "line": 3, "scores": {"mutual_info": 0.1}},  # no id: the content decides
            {"line": 8, "scores": {"mutual_info": 0.1}, "triage": {"decision": "accept"}},
            {"scores": {"mutual_info": 0.2}},
        ]
    )
    assert keys[0] == keys[1] != keys[2] and all(len(k) == 16 and int(k, 16) >= 0 for k in keys)
    assert keys[3] != keys[4]  # "id": null is content too
    assert record_keys([{"line": 8, "scores": {"mutual_info": 0.1}}]) == [keys[4]]
    assert keys[4] != keys[5] and len(set(keys)) == 5


def test_check_disjoint_and_saved_keys(tmp_path: Any) -> None:
    rng = np.random.default_rng(13)
    part = _Part(200, rng, 0)
    calibrator = _fit_on("isotonic", part)
    saved = tmp_path / "cal.json"
    save_calibrator(calibrator, str(saved))
    again = load_calibrator(str(saved))
    assert again.fitted_on_ == calibrator.fitted_on_ and len(again.fitted_on_ or ()) == 200
    assert check_disjoint(again, [{"id": 500}, {"id": 501}])
    with pytest.raises(InputError, match=r"^b.jsonl: 2 of these 3 labelled records .* among the 200 the calibrator"):
        check_disjoint(again, [{"id": 5}, {"id": "7"}, {"id": 500}], "b.jsonl")
    assert make_calibrator("isotonic").fit(part.s, part.ok).fitted_on_ is None  # fit alone knows no records
    refit = _fit_on("isotonic", part).fit(part.s, part.ok)
    assert refit.fitted_on_ is None  # a refit forgets the records of the previous fit
    old = json.loads(saved.read_text())
    del old["provenance"]["fitted_on"]  # saved before calibrators kept the keys: nothing to check against
    assert load_calibrator(old).fitted_on_ is None and not check_disjoint(load_calibrator(old), part.records)


def test_risk_threshold_reports_what_it_certified() -> None:
    rng = np.random.default_rng(2)
    conf, ok = _population(2000, rng)
    sel = risk_threshold(conf, ok, 0.1, 0.05)
    accepted = conf >= sel.threshold
    assert sel.n_accepted == accepted.sum() and sel.errors_accepted == int((1 - ok[accepted]).sum())
    assert sel.risk_upper_bound is not None and sel.risk_upper_bound <= 0.1
    assert sel.to_dict()["coverage"] == pytest.approx(accepted.mean())
    impossible = risk_threshold(conf, ok, 0.0001, 0.05)
    assert impossible.threshold is None and impossible.n_accepted == 0


# -- Router -----------------------------------------------------------------------------------


@pytest.fixture()
def router() -> Router:
    rng = np.random.default_rng(3)
    u = rng.uniform(0, 1, 1000)
    ok = (rng.uniform(size=1000) < 1 - 0.6 * u).astype(float)
    cal = make_calibrator("isotonic", "mutual_info").fit(u, ok)
    return Router.for_risk(cal, cal.predict(u), ok, max_risk=0.15, delta=0.1, source="cal.jsonl")


def test_router_routes_every_record_with_a_reason(router: Router) -> None:
    records: list[Any] = [
        {"scores": {"mutual_info": 0.01}},
        {"scores": {"mutual_info": 0.99}},
        {"error": "input too long"},
        {"mode": "continuation", "scores": {"mutual_info_mean": 0.1}},
        {"scores": {"entropy": 0.3}},
        {"scores": {"mutual_info": None}},
        {"scores": {"mutual_info": "high"}},
        None,  # an unreadable line
    ]
    decisions = router.route_many(records)
    assert len(decisions) == len(records)
    assert [d.destination for d in decisions] == ["accept"] + ["review"] * 7
    reasons = [d.reason for d in decisions]
    assert ">=" in reasons[0] and "<" in reasons[1]
    assert "error record" in reasons[2] and "continuation" in reasons[3] and "no score 'mutual_info'" in reasons[4]
    assert "null" in reasons[5] and "not a number" in reasons[6] and "unreadable" in reasons[7]
    annotated = decisions[0].annotate(records[0])
    assert annotated["triage"]["decision"] == "accept" and annotated["scores"] == records[0]["scores"]
    assert decisions[7].annotate(None, line=9) == {
        "line": 9,
        "error": "unreadable line",
        "triage": decisions[7].annotate(None)["triage"],
    }


def test_policy_round_trip(router: Router, tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    router.save_policy(str(path))
    policy = json.loads(path.read_text())
    assert policy["mode"] == "max_risk" and policy["guarantee"]["max_risk"] == 0.15
    assert policy["calibrator"]["method"] == "isotonic" and policy["threshold"] == router.threshold
    again = Router.from_policy(str(path))
    records = [{"scores": {"mutual_info": float(u)}} for u in np.linspace(0, 1, 50)]
    assert again.route_many(records) == router.route_many(records)
    assert again.route(records[0]) == router.route(records[0])


def test_no_threshold_reviews_everything(router: Router) -> None:
    nothing = Router(router.calibrator, None, mode="max_risk")
    decision = nothing.route({"scores": {"mutual_info": 0.0}})
    assert decision.destination == "review" and "certified" in decision.reason


def test_temperature_router() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(400, 3)) * 4
    y = np.array([rng.choice(3, p=np.exp(r / 3) / np.exp(r / 3).sum()) for r in z])
    cal = make_calibrator("temperature").fit(z, y)
    r = Router.for_budget(cal, cal.predict(z), 0.3)
    record = {"logits": {"A": 5.0, "B": 0.0, "C": -1.0}}
    assert r.route(record).destination == "accept"
    assert r.route({"logits": {"A": 0.1, "B": 0.0}}).destination == "review"
    assert "logits" in r.route({"scores": {}}).reason


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"kind": "steerunc.calibrator"}', "that is a calibrator"), ("[]", "not a triage policy"), ("{", "cannot read")],
)
def test_bad_policies_name_the_file(content: str, message: str, tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        Router.from_policy(str(path))
    assert str(path) in str(info.value)


def test_routing_loads_neither_torch_nor_matplotlib_nor_sklearn(router: Router, tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    router.save_policy(str(path))
    code = (
        "import sys, steerunc.judging.metrics, steerunc.judging.evaluation, steerunc.judging.plots, steerunc.judging.calibration\n"
        "from steerunc import Router\n"
        f"d = Router.from_policy({str(path)!r}).route({{'scores': {{'mutual_info': 0.1}}}})\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'sklearn', 'netcal', 'relplot') if m in sys.modules]\n"
        "print(d.destination, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "accept []"
