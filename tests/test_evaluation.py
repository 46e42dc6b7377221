"""``evaluate`` judges each row against its own prediction; labels outside the options stop the judging wing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scored_fixtures import write_jsonl

from steerunc.errors import InputError
from steerunc.judging.evaluation import evaluate
from steerunc.judging.metrics import compute_metrics
from steerunc.scored import TARGETS, ScoredFile, correctness, read_scored
from steerunc.judging.triage import Router


def _entropy(p: list[float]) -> float:
    return float(-sum(x * math.log(x) for x in p if x > 0))


def opposite_records(n: int = 40) -> list[dict[str, Any]]:
    """The fused prediction is right exactly where the base one is wrong; msp singles out the base
    errors and the fused confidence the fused errors, so each points the wrong way for the other."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base_ok = i % 2 == 0
        msp = rng.uniform(0.05, 0.2) if base_ok else rng.uniform(0.3, 0.45)
        fused_ok = not base_ok
        q = rng.uniform(0.85, 0.99) if fused_ok else rng.uniform(0.55, 0.7)
        label = "A" if base_ok else "B"
        fused = "B"  # the base prediction is always A
        probs = {"A": 1 - q, "B": q}
        out.append(
            {
                "id": f"r{i}",
                "label": label,
                "prediction": fused,
                "probs": probs,
                "correct": fused == label,
                "base_prediction": "A",
                "base_probs": {"A": 1 - msp, "B": msp},
                "base_correct": base_ok,
                "scores": {
                    "msp": msp,
                    "entropy": _entropy([1 - msp, msp]),
                    "mutual_info": float(rng.uniform()),
                    "fused_entropy": _entropy([q, 1 - q]),
                },
            }
        )
        assert fused_ok == out[-1]["correct"]
    return out


@pytest.fixture()
def opposite(tmp_path: Any) -> ScoredFile:
    return read_scored(write_jsonl(tmp_path / "opposite.jsonl", opposite_records()))


@pytest.mark.parametrize("target", ["fused", "base"])
def test_every_row_is_judged_against_its_own_prediction(opposite: ScoredFile, target: str) -> None:
    result = evaluate(opposite, target=target, n_boot=0, smooth=False)
    scores = result.report["scores"]
    against = {name: m["judged_against"] for name, m in scores.items()}
    assert against == {
        "msp": "base",
        "entropy": "base",
        "base_confidence": "base",
        "fused_confidence": "fused",
        "fused_entropy": "fused",
        "mutual_info": target,
    }
    # each confidence singles out its own prediction's errors perfectly (and the other's not at all)
    for name in ("msp", "entropy", "base_confidence", "fused_confidence", "fused_entropy"):
        assert scores[name]["auroc"] == 1.0 and scores[name]["prr"] == pytest.approx(1.0), name
    base_ok = np.array([r["base_correct"] for r in opposite_records()], dtype=float)
    fused_ok = 1.0 - base_ok
    rows = {row.name: row for row in result.rows}
    assert np.array_equal(rows["msp"].correct, base_ok) and np.array_equal(rows["fused_confidence"].correct, fused_ok)
    assert np.array_equal(result.correct, fused_ok if target == "fused" else base_ok)  # the target's
    ref = compute_metrics(rows["msp"].uncertainty, base_ok, rows["msp"].confidence, n_boot=0, smooth=False)
    for key in ("ece", "brier", "nll", "aurc", "auroc"):
        assert scores["msp"][key] == pytest.approx(ref[key]), key
    assert result.report["accuracy_by_prediction"] == {"fused": 0.5, "base": 0.5}
    assert result.report["left_out"] == {}


def test_a_row_without_its_prediction_is_left_out_with_a_note(tmp_path: Any) -> None:
    records = opposite_records()
    del records[3]["base_correct"], records[3]["base_prediction"]
    scored = read_scored(write_jsonl(tmp_path / "partial.jsonl", records))
    report = evaluate(scored, target="fused", n_boot=0, smooth=False).report
    assert set(report["scores"]) == {"mutual_info", "fused_entropy", "fused_confidence"}
    assert set(report["left_out"]) == {"msp", "entropy", "base_confidence"}
    assert "line 4" in report["left_out"]["msp"] and "base prediction" in report["left_out"]["msp"]
    assert report["accuracy_by_prediction"]["base"] is None and report["records"]["evaluated"] == 40
    base = evaluate(scored, target="base", n_boot=0, smooth=False).report
    assert base["records"]["evaluated"] == 39 and base["left_out"] == {}


def test_calibrator_rows_are_judged_against_its_target(opposite: ScoredFile) -> None:
    from steerunc.judging.calibration import make_calibrator

    values = np.array([r["scores"]["msp"] for r in opposite_records()])
    fused_ok = np.array([r["correct"] for r in opposite_records()], dtype=float)
    cal = make_calibrator("isotonic", "msp", target="fused", higher_means="confident").fit(values, fused_ok)
    report = evaluate(opposite, calibrators=[("cal.json", cal)], n_boot=0, smooth=False).report
    assert report["scores"]["msp@isotonic"]["judged_against"] == "fused"
    assert report["scores"]["msp@isotonic"]["auroc"] == 1.0  # higher msp: the fused prediction is right


def test_risk_coverage_plot_takes_one_correctness_per_curve() -> None:
    from steerunc.judging.plots import risk_coverage_plot

    y = np.array([1.0, 1.0, 0.0, 0.0])
    u = np.array([0.1, 0.2, 0.8, 0.9])
    fig = risk_coverage_plot({"a": u, "b": u}, {"a": y, "b": 1 - y}, judged_against={"a": "base", "b": "fused"})
    legend = fig.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert "a vs base (AURC 0.208)" in labels and "b vs fused (AURC 0.792)" in labels
    assert sum(label.startswith("random") for label in labels) == 2 and any("oracle, fused" in t for t in labels)
    single = risk_coverage_plot({"a": u}, y).axes[0].get_legend()
    assert single is not None and single.get_texts()[0].get_text().startswith("random (AURC")
    with pytest.raises(ValueError, match="no correctness"):
        risk_coverage_plot({"a": u, "b": u}, {"a": y})


# -- labels outside the options -------------------------------------------------------------------


def test_a_label_outside_the_options_names_file_and_line() -> None:
    record = {"label": "Maybe", "prediction": "Yes", "probs": {"Yes": 0.7, "No": 0.3}}
    with pytest.raises(InputError, match="label 'Maybe' is not one of the options") as info:
        correctness(record, TARGETS["fused"], "x.jsonl", 7)
    assert str(info.value).startswith("x.jsonl:7: ")
    with pytest.raises(InputError, match="not one of the options"):  # a 'correct' does not hide it
        correctness({**record, "correct": False}, TARGETS["fused"], "x.jsonl", 7)
    for options in ("base_probs", "logits"):  # the options when 'probs' is absent
        other = {"label": "Maybe", "prediction": "Yes", options: {"Yes": 0.0, "No": 1.0}}
        with pytest.raises(InputError, match="not one of the options"):
            correctness(other, TARGETS["base"], "x.jsonl", 2)
    assert correctness({**record, "label": "No"}, TARGETS["fused"], "x.jsonl", 7) is False
    assert correctness({"correct": True, "probs": {"Yes": 1.0}}, TARGETS["fused"], "x.jsonl", 1) is True
    assert correctness({"label": "x", "prediction": "x"}, TARGETS["fused"], "x.jsonl", 1) is True  # no options known


def test_labelled_stops_at_a_label_outside_the_options(tmp_path: Any) -> None:
    records = opposite_records(10)
    records[5]["label"] = "C"
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError, match="label 'C' is not one of the options") as info:
        read_scored(path).labelled(TARGETS["fused"])
    assert info.value.path == path and info.value.line == 6


def test_router_still_routes_records_without_labels() -> None:
    from steerunc.judging.calibration import make_calibrator

    cal = make_calibrator("isotonic", "mutual_info").fit([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])
    router = Router(cal, 0.5)
    assert router.route({"scores": {"mutual_info": 0.1}, "label": "C", "probs": {"A": 1.0}}).accepted


def test_intervals_resample_the_groups_records_carry(tmp_path: Any) -> None:
    from steerunc.judging.metrics import auroc_interval

    records = opposite_records(40)
    plain = evaluate(read_scored(write_jsonl(tmp_path / "plain.jsonl", records)), target="base", n_boot=200)
    assert plain.settings["resampled"] == "records" and plain.groups is None
    for i, r in enumerate(records[:30]):
        r["group"] = f"q{i // 3}"  # 10 groups of 3; the last 10 records have none: a group each
    grouped = evaluate(read_scored(write_jsonl(tmp_path / "grouped.jsonl", records)), target="base", n_boot=200)
    assert grouped.settings["resampled"] == "groups" and grouped.settings["n_groups"] == 20
    mi = grouped.rows[[row.name for row in grouped.rows].index("mutual_info")]
    assert grouped.report["scores"]["mutual_info"]["auroc_ci"] == pytest.approx(
        auroc_interval(mi.uncertainty, mi.correct, 200, groups=grouped.groups))
    assert grouped.report["scores"]["mutual_info"]["auroc_ci"] != plain.report["scores"]["mutual_info"]["auroc_ci"]
    assert grouped.report["scores"]["mutual_info"]["auroc"] == plain.report["scores"]["mutual_info"]["auroc"]
