"""Reliability diagrams and risk-coverage curves, as PNG and SVG.

Display objects in the style of scikit-learn's ``CalibrationDisplay``: a pure
function computes the curve (:func:`steerunc.judging.metrics.reliability_bins`,
:func:`steerunc.judging.metrics.risk_coverage`), ``from_predictions`` computes and
draws it, and ``plot(ax=...)`` draws it again on axes of one's own (the
figure is ``figure_``, the axes ``ax_``). ``reliability_diagram`` and
``risk_coverage_plot`` return the figure, as before.

matplotlib is imported only when drawing, and figures are drawn on
``matplotlib.figure.Figure`` directly (never pyplot), so nothing depends on a
display or on the global backend: it works headless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from steerunc.io import atomic_write
from steerunc.judging.metrics import ReliabilityBins, aurc, ece, reliability_bins, risk_coverage

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ReliabilityDisplay",
    "RiskCoverageDisplay",
    "evaluation_figures",
    "reliability_diagram",
    "risk_coverage_plot",
    "save_figure",
]

Array = NDArray[np.float64]
_IN_SAMPLE = " (in-sample)"


def _titled(title: str, in_sample: bool) -> str:
    """``title`` with "(in-sample)" after its first line: the records drawn are those fitted on."""
    if not in_sample:
        return title
    first, _, rest = title.partition("\n")
    return first + _IN_SAMPLE + ("\n" + rest if rest else "")


class ReliabilityDisplay:
    """A reliability diagram: accuracy per confidence bin against the diagonal, each bin's mean
    confidence marked and its gap to the accuracy outlined (never filled over the bar), the
    records per bin below and the ECE in the title.

    >>> d = ReliabilityDisplay.from_predictions([0.2, 0.6, 0.9, 0.95], [0, 1, 1, 0], n_bins=5, name="msp")
    >>> d.ax_.get_title().splitlines()[0], d.figure_ is d.ax_.figure
    ('msp', True)
    """

    def __init__(
        self, bins: ReliabilityBins, ece: float, *, name: str = "confidence", in_sample: bool = False
    ) -> None:
        self.bins = bins
        self.ece = ece
        self.name = name
        self.in_sample = in_sample

    @classmethod
    def from_predictions(
        cls,
        confidence: ArrayLike,
        correct: ArrayLike,
        *,
        n_bins: int = 15,
        strategy: str = "uniform",
        name: str = "confidence",
        in_sample: bool = False,
        ax: Axes | None = None,
        count_ax: Axes | None = None,
    ) -> ReliabilityDisplay:
        """Bin ``confidence`` (in [0, 1]) against 0/1 ``correct`` and draw the diagram (see :meth:`plot`).
        ``in_sample``: the confidences come from a calibrator fitted on these very records."""
        bins = reliability_bins(confidence, correct, n_bins, strategy)
        value = ece(confidence, correct, n_bins, strategy)
        return cls(bins, value, name=name, in_sample=in_sample).plot(ax=ax, count_ax=count_ax)

    def plot(
        self,
        ax: Axes | None = None,
        *,
        count_ax: Axes | None = None,
        counts: bool = True,
        bar_color: str = "#4C72B0",
        gap_color: str = "#C44E52",
    ) -> ReliabilityDisplay:
        """Draw on ``ax`` (and the counts on ``count_ax``, if given), or on a new figure of two
        panels (one without ``counts``). Sets ``figure_``, ``ax_`` and ``count_ax_``; returns self."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(5.2, 6.0 if counts else 4.6), layout="constrained")
            if counts:
                ax, count_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
            else:
                ax = fig.subplots()
        bins = self.bins
        filled = bins.counts > 0
        left, width = bins.edges[:-1][filled], np.diff(bins.edges)[filled]
        accuracy, confidence = bins.accuracy[filled], bins.confidence[filled]
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1, label="perfect calibration", zorder=1)
        ax.bar(left, accuracy, width=width, align="edge", color=bar_color, edgecolor="white", label="accuracy", zorder=2)
        # the gap: an outline with hatching and no fill, over the bar, so the bar's height stays readable
        low = np.minimum(accuracy, confidence)
        ax.bar(
            left, np.abs(accuracy - confidence), bottom=low, width=width, align="edge", fill=False,
            edgecolor=gap_color, hatch="///", linewidth=0.8, label="gap to mean confidence", zorder=3,
        )
        ax.hlines(confidence, left, left + width, colors="black", linewidth=1.6, label="mean confidence", zorder=4)
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
        kind = "equal-width" if bins.strategy == "uniform" else "equal-mass"
        n_bins, n = len(bins.counts), int(bins.counts.sum())
        title = f"{self.name}\nECE {self.ece:.3f} ({n_bins} {kind} bins, n = {n})"
        ax.set_title(_titled(title, self.in_sample), fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
        if count_ax is not None:
            all_left, all_width = bins.edges[:-1], np.diff(bins.edges)
            count_ax.bar(all_left, bins.counts, width=all_width, align="edge", color="0.6", edgecolor="white")
            for x, count in zip(left + width / 2, bins.counts[filled]):
                count_ax.text(x, count, str(int(count)), ha="center", va="bottom", fontsize=6)
            count_ax.set(xlabel="confidence", ylabel="records", xlim=(0, 1))
            count_ax.set_ylim(0, max(1, int(bins.counts.max())) * 1.25)
        else:
            ax.set_xlabel("confidence")
        self.figure_: Figure = ax.figure  # type: ignore[assignment]
        self.ax_: Axes = ax
        self.count_ax_: Axes | None = count_ax
        return self


class RiskCoverageDisplay:
    """Selective risk against coverage for each uncertainty (higher = less sure), with the oracle
    and random references. Curves that are the same line (same correctness, same risk at every
    coverage, e.g. ``msp`` and ``base_confidence``) are drawn once, with one legend entry naming
    them all.

    >>> d = RiskCoverageDisplay.from_predictions({"a": [0.1, 0.9, 0.5], "b": [1, 9, 5]}, [1, 0, 1])
    >>> [t.get_text() for t in d.ax_.get_legend().get_texts()][-1]
    'a = b (AURC 0.111)'
    """

    def __init__(
        self,
        curves: Mapping[str, tuple[Array, Array]],
        correct: Mapping[str, Array],
        *,
        judged_against: Mapping[str, str] | None = None,
        title: str | None = None,
        in_sample: bool = False,
    ) -> None:
        self.curves = dict(curves)
        self.correct = dict(correct)
        self.judged_against = dict(judged_against or {})
        self.title = title
        self.in_sample = in_sample

    @classmethod
    def from_predictions(
        cls,
        uncertainty: ArrayLike | Mapping[str, ArrayLike],
        correct: ArrayLike | Mapping[str, ArrayLike],
        *,
        name: str = "uncertainty",
        judged_against: Mapping[str, str] | None = None,
        title: str | None = None,
        in_sample: bool = False,
        ax: Axes | None = None,
    ) -> RiskCoverageDisplay:
        """``uncertainty``: one array (called ``name``) or several by name. ``correct``: one 0/1
        array for every curve, or one per curve (keyed by name) where curves are judged against
        different predictions; the references are then drawn once for each distinct correctness,
        named by ``judged_against`` (curve name -> prediction) where given."""
        curves = dict(uncertainty) if isinstance(uncertainty, Mapping) else {name: uncertainty}
        if isinstance(correct, Mapping):
            missing = [key for key in curves if key not in correct]
            if missing:
                raise ValueError(f"no correctness given for the curves {missing}")
            per_curve = {key: np.asarray(correct[key], dtype=np.float64) for key in curves}
        else:
            shared = np.asarray(correct, dtype=np.float64)
            per_curve = {key: shared for key in curves}
        computed = {key: risk_coverage(u, per_curve[key]) for key, u in curves.items()}
        display = cls(computed, per_curve, judged_against=judged_against, title=title, in_sample=in_sample)
        return display.plot(ax=ax)

    def groups(self) -> list[list[str]]:
        """The curves' names, those drawn as one line together, in order of first appearance."""
        groups: list[list[str]] = []
        for name, (cov, risk) in self.curves.items():
            for group in groups:
                other = group[0]
                if np.array_equal(self.correct[other], self.correct[name]) and np.allclose(
                    self.curves[other][1], risk, rtol=0, atol=1e-9
                ):
                    group.append(name)
                    break
            else:
                groups.append([name])
        return groups

    def _references(self) -> list[tuple[str, Array]]:
        references: list[tuple[str, Array]] = []
        for name, y in self.correct.items():  # one random and one oracle line per distinct correctness
            if not any(np.array_equal(ref, y) for _, ref in references):
                references.append((self.judged_against.get(name, f"#{len(references) + 1}"), y))
        if len(references) == 1:
            references = [("", references[0][1])]
        return references

    def plot(self, ax: Axes | None = None, *, legend: bool = True) -> RiskCoverageDisplay:
        """Draw on ``ax``, or on a new figure. Sets ``figure_``, ``ax_`` and ``lines_`` (name of
        each curve -> its line; merged curves share one); returns self."""
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        if ax is None:
            ax = Figure(figsize=(8.0, 4.5), layout="constrained").subplots()
        references = self._references()
        top = 0.0
        for i, (ref_name, y) in enumerate(references):
            of = f", {ref_name}" if len(references) > 1 else ""
            error_rate = 1.0 - float(y.mean())
            dotted, dashed = (":", "--") if i == 0 else ((0, (1, 1 + 2 * i)), (0, (4, 2 + 2 * i)))
            ax.axhline(error_rate, color="0.5", linestyle=dotted, linewidth=1, label=f"random{of} (AURC {error_rate:.3f})")
            oracle = np.where(y == 1, 0.0, 1.0)  # errors ranked last
            cov, risk = risk_coverage(oracle, y)
            ax.plot(cov, risk, color="0.3", linestyle=dashed, linewidth=1, label=f"oracle{of} (AURC {aurc(oracle, y):.3f})")
            top = max(top, error_rate)
        groups = self.groups()
        palette = colormaps["tab10" if len(groups) <= 10 else "tab20"]
        self.lines_: dict[str, Any] = {}
        for i, group in enumerate(groups):
            cov, risk = self.curves[group[0]]
            against = self.judged_against.get(group[0])
            vs = f" vs {against}" if against is not None and len(references) > 1 else ""
            label = f"{' = '.join(group)}{vs} (AURC {float(np.mean(risk)):.3f})"
            (line,) = ax.plot(cov, risk, linewidth=1.5, color=palette(i % palette.N), label=label)
            self.lines_.update({name: line for name in group})
            top = max(top, float(risk[cov >= 0.05].max()))
        ax.set(
            xlim=(0, 1),
            ylim=(0, min(1.0, max(0.05, top * 1.3))),
            xlabel="coverage (share accepted)",
            ylabel="risk (error rate of accepted)",
        )
        ax.set_title(_titled(self.title or "Risk-coverage (lower is better)", self.in_sample), fontsize=10)
        if legend:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        self.figure_: Figure = ax.figure  # type: ignore[assignment]
        self.ax_: Axes = ax
        return self


def reliability_diagram(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    name: str = "confidence",
    in_sample: bool = False,
) -> Figure:
    """The figure of :meth:`ReliabilityDisplay.from_predictions`."""
    display = ReliabilityDisplay.from_predictions(
        confidence, correct, n_bins=n_bins, strategy=strategy, name=name, in_sample=in_sample
    )
    return display.figure_


def risk_coverage_plot(
    curves: Mapping[str, ArrayLike],
    correct: ArrayLike | Mapping[str, ArrayLike],
    *,
    title: str | None = None,
    judged_against: Mapping[str, str] | None = None,
    in_sample: bool = False,
) -> Figure:
    """The figure of :meth:`RiskCoverageDisplay.from_predictions`."""
    display = RiskCoverageDisplay.from_predictions(
        curves, correct, judged_against=judged_against, title=title, in_sample=in_sample
    )
    return display.figure_


class _Row(Protocol):
    """What :func:`evaluation_figures` reads of a row (:class:`steerunc.judging.evaluation.Row`)."""

    name: str
    uncertainty: Any
    confidence: Any
    judged_against: str
    correct: Any


def _own_confidence(row: _Row) -> bool:
    """Whether the row's confidence is its score itself (uncertainty = -confidence), not derived."""
    return bool(np.allclose(-np.asarray(row.uncertainty, dtype=np.float64), row.confidence, rtol=0, atol=1e-9))


def evaluation_figures(rows: Sequence[_Row], *, n_bins: int = 15, in_sample: bool = False) -> dict[str, Figure]:
    """The figures of an evaluation, by file stem: one reliability diagram per distinct confidence
    and the risk-coverage curves of every row.

    Rows whose confidences are the same numbers against the same correctness (``msp``'s
    1 - msp is ``base_confidence``) get one diagram, under the name of the row whose score the
    confidence is (``base_confidence``), its title naming the others.
    """
    with_confidence = [row for row in rows if row.confidence is not None]
    ordered = sorted(with_confidence, key=lambda row: not _own_confidence(row))  # stable: own confidences first
    kept: list[tuple[_Row, list[str]]] = []
    for row in ordered:
        for first, same in kept:
            if np.array_equal(first.correct, row.correct) and np.allclose(first.confidence, row.confidence, rtol=0, atol=1e-9):
                same.append(row.name)
                break
        else:
            kept.append((row, []))
    order = {row.name: i for i, row in enumerate(rows)}
    figures: dict[str, Figure] = {}
    for row, same in sorted(kept, key=lambda pair: order[pair[0].name]):
        name = f"{row.name} (judged against the {row.judged_against} prediction)"
        if same:
            name += f"\nthe same confidence as {', '.join(same)}"
        stem = "reliability_" + row.name.replace("@", "_").replace(os.sep, "_")
        figures[stem] = reliability_diagram(row.confidence, row.correct, n_bins=n_bins, name=name, in_sample=in_sample)
    curves = {row.name: row.uncertainty for row in rows}
    correct = {row.name: row.correct for row in rows}
    against = {row.name: row.judged_against for row in rows}
    figures["risk_coverage"] = risk_coverage_plot(curves, correct, judged_against=against, in_sample=in_sample)
    return figures


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
