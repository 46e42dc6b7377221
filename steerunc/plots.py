"""Reliability diagrams and risk-coverage curves, as PNG and SVG.

matplotlib is imported only inside these functions, and figures are drawn on
``matplotlib.figure.Figure`` directly (never pyplot), so nothing depends on a
display or on the global backend: it works headless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc.io import atomic_write
from steerunc.metrics import aurc, ece, reliability_bins, risk_coverage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["reliability_diagram", "risk_coverage_plot", "save_figure"]


def reliability_diagram(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    name: str = "confidence",
) -> Figure:
    """Accuracy per confidence bin against the diagonal, the gap shaded, counts below, ECE in the title."""
    from matplotlib.figure import Figure

    bins = reliability_bins(confidence, correct, n_bins, strategy)
    value = ece(confidence, correct, n_bins, strategy)
    filled = bins.counts > 0
    left, width = bins.edges[:-1], np.diff(bins.edges)
    centers = left + width / 2

    fig = Figure(figsize=(5.2, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1, label="perfect calibration")
    top.bar(
        left[filled],
        bins.accuracy[filled],
        width=width[filled],
        align="edge",
        color="#4C72B0",
        edgecolor="white",
        label="accuracy",
    )
    gap_low = np.minimum(bins.accuracy, bins.confidence)[filled]
    gap_height = bins.gaps[filled]
    top.bar(
        left[filled],
        gap_height,
        bottom=gap_low,
        width=width[filled],
        align="edge",
        color="#DD8452",
        alpha=0.55,
        edgecolor="#C44E52",
        hatch="//",
        label="gap to mean confidence",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    kind = "equal-width" if strategy == "uniform" else "equal-mass"
    n = int(bins.counts.sum())
    top.set_title(f"{name}\nECE {value:.3f} ({n_bins} {kind} bins, n = {n})", fontsize=10)
    top.legend(loc="upper left", fontsize=8)

    bottom.bar(left, bins.counts, width=width, align="edge", color="0.6", edgecolor="white")
    for x, count in zip(centers[filled], bins.counts[filled]):
        bottom.text(x, count, str(int(count)), ha="center", va="bottom", fontsize=6)
    bottom.set(xlabel="confidence", ylabel="records", xlim=(0, 1))
    bottom.set_ylim(0, max(1, int(bins.counts.max())) * 1.25)
    return fig


def risk_coverage_plot(
    curves: Mapping[str, ArrayLike],
    correct: ArrayLike | Mapping[str, ArrayLike],
    *,
    title: str | None = None,
    judged_against: Mapping[str, str] | None = None,
) -> Figure:
    """Selective risk against coverage for each uncertainty (higher = less sure), with oracle and random.

    ``correct`` is one 0/1 array for every curve, or one per curve (keyed by
    curve name) where curves are judged against different predictions; then
    the random and oracle references are drawn once for each distinct
    correctness, named by ``judged_against`` (curve name -> prediction) where
    given.
    """
    from matplotlib.figure import Figure

    if isinstance(correct, Mapping):
        missing = [name for name in curves if name not in correct]
        if missing:
            raise ValueError(f"no correctness given for the curves {missing}")
        per_curve = {name: np.asarray(correct[name], dtype=np.float64) for name in curves}
        shared = None
    else:
        shared = np.asarray(correct, dtype=np.float64)
        per_curve = {name: shared for name in curves}
    against = dict(judged_against or {})
    references: list[tuple[str, NDArray[np.float64]]] = [] if shared is None else [("", shared)]
    for name, y in per_curve.items():  # one random and one oracle line per distinct correctness
        if not any(np.array_equal(ref, y) for _, ref in references):
            references.append((against.get(name, f"#{len(references) + 1}"), y))
    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for i, (ref_name, y) in enumerate(references):
        of = f", {ref_name}" if len(references) > 1 else ""
        error_rate = 1.0 - float(y.mean())
        dotted, dashed = (":", "--") if i == 0 else ((0, (1, 1 + 2 * i)), (0, (4, 2 + 2 * i)))
        ax.axhline(error_rate, color="0.5", linestyle=dotted, linewidth=1, label=f"random{of} (AURC {error_rate:.3f})")
        oracle = np.where(y == 1, 0.0, 1.0)  # errors ranked last
        cov, risk = risk_coverage(oracle, y)
        label = f"oracle{of} (AURC {aurc(oracle, y):.3f})"
        ax.plot(cov, risk, color="0.3", linestyle=dashed, linewidth=1, label=label)
        top = max(top, error_rate)
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for i, (name, uncertainty) in enumerate(curves.items()):
        y = per_curve[name]
        cov, risk = risk_coverage(uncertainty, y)
        vs = f" vs {against[name]}" if name in against and len(references) > 1 else ""
        label = f"{name}{vs} (AURC {aurc(uncertainty, y):.3f})"
        ax.plot(cov, risk, linewidth=1.5, color=palette(i % palette.N), label=label)
        top = max(top, float(risk[cov >= 0.05].max()))
    ax.set(
        xlim=(0, 1),
        ylim=(0, min(1.0, max(0.05, top * 1.3))),
        xlabel="coverage (share accepted)",
        ylabel="risk (error rate of accepted)",
    )
    ax.set_title(title or "Risk-coverage (lower is better)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


def save_figure(fig: Figure, stem: str, formats: tuple[str, ...] = ("png", "svg")) -> list[str]:
    """Save ``stem.png`` and ``stem.svg`` atomically; returns the paths written."""
    paths = []
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    for fmt in formats:
        path = f"{stem}.{fmt}"
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths
