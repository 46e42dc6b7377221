"""Pictures people read correctly: bars not hidden, no duplicate diagrams under another name, identical
curves named together, in-sample said, and a Display API to restyle them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from steerunc.judging.evaluation import Row
from steerunc.judging.metrics import aurc, reliability_bins
from steerunc.judging.plots import (
    ReliabilityDisplay,
    RiskCoverageDisplay,
    evaluation_figures,
    reliability_diagram,
    risk_coverage_plot,
)


def data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    correct = (rng.uniform(size=n) < confidence ** 2).astype(float)  # over-confident: gaps everywhere
    return confidence, correct


def bars(ax: Any) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_the_gap_never_covers_the_accuracy_bar() -> None:
    confidence, correct = data()
    display = ReliabilityDisplay.from_predictions(confidence, correct, n_bins=10)
    bins = reliability_bins(confidence, correct, 10)
    accuracy_bars = [p for p in bars(display.ax_) if p.get_facecolor()[3] > 0 and p.get_height() > 0]
    filled = bins.counts > 0
    assert sorted(round(p.get_height(), 9) for p in accuracy_bars) == sorted(np.round(bins.accuracy[filled], 9))
    drawn = bars(display.ax_)
    last = max(drawn.index(p) for p in accuracy_bars)
    top = max(p.get_zorder() for p in accuracy_bars)
    above = [p for i, p in enumerate(drawn) if p.get_zorder() > top or (p.get_zorder() == top and i > last)]
    assert above, "the gap is drawn"
    assert all(p.get_facecolor()[3] == 0 for p in above)  # outlined, never filled over the bar


def test_display_objects_draw_on_given_axes_and_restyle() -> None:
    confidence, correct = data()
    fig = Figure()
    ax, count_ax = fig.subplots(1, 2)
    display = ReliabilityDisplay.from_predictions(confidence, correct, n_bins=5, name="fused", ax=ax, count_ax=count_ax)
    assert display.ax_ is ax and display.figure_ is fig and display.count_ax_ is count_ax
    assert display.ece == pytest.approx(__import__("steerunc.judging.metrics", fromlist=["ece"]).ece(confidence, correct, 5))
    again = display.plot(counts=False, bar_color="green")
    assert again is display and display.ax_ is not ax and display.count_ax_ is None
    assert any(p.get_facecolor() == to_rgba("green") for p in bars(display.ax_))

    u = 1 - confidence
    rc = RiskCoverageDisplay.from_predictions(u, correct, name="msp")
    assert isinstance(rc.figure_, Figure) and rc.ax_.figure is rc.figure_
    assert rc.lines_["msp"].get_label() == f"msp (AURC {aurc(u, correct):.3f})"
    own = Figure().subplots()
    assert rc.plot(ax=own, legend=False).ax_ is own and own.get_legend() is None


def test_old_functions_still_return_figures() -> None:
    confidence, correct = data()
    assert isinstance(reliability_diagram(confidence, correct, name="x"), Figure)
    assert isinstance(risk_coverage_plot({"a": 1 - confidence}, correct), Figure)


def test_in_sample_is_said_in_the_title() -> None:
    confidence, correct = data()
    fig = reliability_diagram(confidence, correct, name="mutual_info@isotonic", in_sample=True)
    assert fig.axes[0].get_title().splitlines()[0] == "mutual_info@isotonic (in-sample)"
    assert "in-sample" not in reliability_diagram(confidence, correct, name="x").axes[0].get_title()
    rc = risk_coverage_plot({"a": 1 - confidence}, correct, in_sample=True)
    assert rc.axes[0].get_title() == "Risk-coverage (lower is better) (in-sample)"


def test_identical_curves_share_one_line_and_one_legend_entry() -> None:
    confidence, correct = data()
    other = np.random.default_rng(5).uniform(size=confidence.size)
    curves = {"msp": 1 - confidence, "base_confidence": -confidence, "mutual_info": other}
    fig = risk_coverage_plot(curves, correct)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"msp = base_confidence (AURC {aurc(1 - confidence, correct):.3f})" in labels
    assert sum("msp" in label for label in labels) == 1
    assert f"mutual_info (AURC {aurc(other, correct):.3f})" in labels
    different = risk_coverage_plot({"a": 1 - confidence, "b": 1 - confidence}, {"a": correct, "b": 1 - correct})
    assert len([t for t in different.axes[0].get_legend().get_texts() if t.get_text()[:2] in ("a ", "b ")]) == 2


def test_msp_is_not_drawn_again_under_its_own_name() -> None:
    confidence, correct = data()
    fused_correct = correct.copy()
    fused_correct[:20] = 1 - fused_correct[:20]
    rows = [
        Row("msp", 1 - confidence, np.clip(1 - (1 - confidence), 0, 1), "1 - msp", "base", correct),
        Row("entropy", -confidence * 2, None, None, "base", correct),
        Row("base_confidence", -confidence, confidence, "max of base_probs", "base", correct),
        Row("fused_confidence", -confidence, confidence, "max of probs", "fused", fused_correct),
    ]
    figures = evaluation_figures(rows, n_bins=10, in_sample=True)
    assert set(figures) == {"reliability_base_confidence", "reliability_fused_confidence", "risk_coverage"}
    title = figures["reliability_base_confidence"].axes[0].get_title()
    assert title.startswith("base_confidence (judged against the base prediction) (in-sample)")
    assert "the same confidence as msp" in title
    labels = [t.get_text() for t in figures["risk_coverage"].axes[0].get_legend().get_texts()]
    assert any(label.startswith("msp = entropy = base_confidence vs base") for label in labels)
    assert any(label.startswith("fused_confidence vs fused") for label in labels)
