"""Triage: the budget is respected, the risk guarantee holds over many random splits, routing is total."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from steerunc.calibration import make_calibrator
from steerunc.errors import InputError
from steerunc.triage import Router
from steerunc.triage_bounds import budget_threshold, clopper_pearson_upper, min_accepted, risk_threshold


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
        "import sys, steerunc.metrics, steerunc.evaluation, steerunc.plots, steerunc.calibration\n"
        "from steerunc import Router\n"
        f"d = Router.from_policy({str(path)!r}).route({{'scores': {{'mutual_info': 0.1}}}})\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'sklearn', 'netcal', 'relplot') if m in sys.modules]\n"
        "print(d.destination, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "accept []"
