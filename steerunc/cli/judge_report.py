"""What ``evaluate`` and ``triage`` show on stderr: rich tables and a summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from steerunc.judging.confidence import raw_name
from steerunc.scored import TARGETS, ScoredFile, correctness
from steerunc.judging.triage import Decision, Router

__all__ = ["evaluation_tables", "triage_summary"]


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(interval: Any) -> str:
    return "—" if not interval else f"{interval[0]:.2f}–{interval[1]:.2f}"


def _table(title: str, caption: str | None) -> Table:
    return Table(
        title=title,
        caption=caption,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )


def evaluation_tables(report: dict[str, Any]) -> list[Any]:
    """A header line, tables of error detection, selective accuracy and calibration, and one of
    agreement with annotators when records carry ``human_probs``."""
    rec = report["records"]
    skipped = ", ".join(f"{rec[k]} {k}" for k in ("errors", "continuation", "unlabelled") if rec[k]) or "none"
    accuracies = ", ".join(
        f"{name} {_f(value)}" for name, value in report.get("accuracy_by_prediction", {}).items() if value is not None
    )
    caption = (
        f"[bold]{rec['evaluated']}[/] labelled records of {report['file']} (skipped: {skipped}); "
        f"accuracy of the {report['target']} prediction {report['accuracy']:.3f}"
        + (f" (accuracy by prediction: {accuracies})" if accuracies else "")
        + "; every metric of a row uses the correctness of the prediction it is judged against"
    )
    left_out = [f"left out {name}: {why}" for name, why in report.get("left_out", {}).items()]
    prior = report.get("prior")
    if prior:
        left_out.insert(0, (
            f"option prior {prior['file']}: the {prior['target']} prediction corrected ({prior['corrected']}), "
            f"accuracy {_f(prior['accuracy_before'])} -> {_f(prior['accuracy_after'])} on {prior['records']} "
            f"records, {prior['changed_predictions']} predictions changed"
        ))
    in_sample = report.get("in_sample")
    tag = "[bold]In-sample[/] (optimistic): " if in_sample else ""
    if in_sample:
        shared = "; ".join(
            f"{v['records_fitted_on']} of {v['records_evaluated']} records were fitted on by the {v['fitted']} {path}"
            for path, v in in_sample.items()
        )
        caption = "[bold]IN-SAMPLE[/]: " + shared + ". " + caption
    coverages = report["settings"]["coverages"]
    level = round(report["settings"]["level"] * 100)
    grouped = report["settings"].get("resampled") == "groups"
    ranking = _table(tag + "Does the score single out the errors?", None if not grouped else
                     f"Intervals resample whole groups ({report['settings']['n_groups']} of them): records "
                     "sharing a 'group' are not independent.")
    ranking.add_column("score", no_wrap=True)
    ranking.add_column("judged against", no_wrap=True)
    for header in ("AUROC", f"{level}% CI", "AUPRC", "AURC↓", "PRR"):
        ranking.add_column(header, justify="right", no_wrap=True)
    selective = _table(tag + "Selective accuracy (keeping the most confident)", None)
    selective.add_column("score", no_wrap=True)
    selective.add_column("judged against", no_wrap=True)
    for c in coverages:
        selective.add_column(f"{c:.0%} kept", justify="right", no_wrap=True)
    for name, m in report["scores"].items():
        against = m.get("judged_against", report["target"])
        ranking.add_row(name, against, _f(m["auroc"]), _ci(m["auroc_ci"]), _f(m["auprc"]), _f(m["aurc"]), _f(m["prr"]))
        selective.add_row(name, against, *[_f(m["selective_accuracy"][f"{c:g}"]) for c in coverages])

    n_bins = report["settings"]["n_bins"]
    calib = _table(
        tag + "Is the confidence calibrated?",
        f"ECE and MCE over {n_bins} equal-width bins, ECE= over {n_bins} equal-mass bins. "
        "Raw confidence: 1 - msp, max of probs / base_probs; other scores need --calibrator.",
    )
    calib.add_column("score", no_wrap=True)
    calib.add_column("judged against", no_wrap=True)
    for header in ("ECE", f"{level}% CI", "ECE=", "smECE", "MCE", "Brier", "NLL"):
        calib.add_column(header, justify="right", no_wrap=True)
    for name, m in report["scores"].items():
        if m["ece"] is None:
            continue
        calib.add_row(
            name,
            m.get("judged_against", report["target"]),
            _f(m["ece"]),
            _ci(m["ece_ci"]),
            _f(m["ece_equal_mass"]),
            _f(m["smooth_ece"]),
            _f(m["mce"]),
            _f(m["brier"]),
            _f(m["nll"]),
        )
    tables: list[Any] = [caption, *left_out, ranking, selective, calib]
    if report.get("human"):
        human = _table(tag + "Agreement with the annotators' label distribution", None)
        for header in ("prediction", "records", "JS distance ↓", "KL(human‖pred) ↓"):
            human.add_column(header, justify="left" if header == "prediction" else "right")
        for target, h in report["human"].items():
            human.add_row(target, str(h["n"]), _f(h["js_distance"]), _f(h["kl_human_to_pred"]))
        tables.append(human)
    return tables


def triage_summary(
    scored: ScoredFile,
    router: Router,
    decisions: Sequence[Decision],
    accept_out: str,
    review_out: str,
    policy_out: str | None,
    policy_in: str | None = None,
) -> dict[str, Any]:
    """Counts, threshold, expected and (where labelled) realised risk, and the guarantee."""
    n = len(decisions)
    accepted = [d for d in decisions if d.accepted]
    unscorable = sum(1 for d in decisions if d.confidence is None)
    expected = float(np.mean([1.0 - (d.confidence or 0.0) for d in accepted])) if accepted else None
    target = TARGETS[router.calibrator.target]
    labels = [
        correctness(ln.data, target, scored.path, ln.number)
        for ln, d in zip(scored.lines, decisions)
        if d.accepted and ln.data is not None
    ]
    known = [ok for ok in labels if ok is not None]
    realised = (1.0 - float(np.mean(known))) if known else None
    data: dict[str, Any] = {
        "records": n,
        "accepted": len(accepted),
        "review": n - len(accepted),
        "unscorable_to_review": unscorable,
        "threshold": router.threshold,
        "tie_threshold": router.tie_threshold,
        "mode": router.mode,
        "budget": router.budget,
        "expected_risk_accepted": expected,
        "realised_risk_accepted": realised,
        "labelled_accepted": len(known),
        "guarantee": router.guarantee,
        "calibrator": {"score": router.calibrator.score, "method": router.calibrator.method,
                       "label": router.calibrator.label},
        "prior": None if router.prior is None else router.prior.reference(),
        "accept_out": accept_out,
        "review_out": review_out,
        "policy_out": policy_out,
        "policy_in": policy_in,
    }
    share = (lambda k: f"{k} ({k / n:.1%})") if n else str
    threshold = "none (everything to review)" if router.threshold is None else f"{router.threshold:.4f}"
    if router.tie_threshold is not None:
        threshold += f", ties broken by raw score {raw_name(router.calibrator)} >= {router.tie_threshold:.6g}"
    how = f"{router.mode}{'' if router.budget is None else f' {router.budget:g}'}"
    if policy_in:
        how = f"policy {policy_in}, chosen by {how} on {router.source or 'its data'}; a fixed threshold here"
    lines = [
        f"Triage of {n} records by {router.calibrator.label} ({how}), threshold {threshold}"
        + ("" if router.prior is None else f", predictions corrected by the option prior ({router.prior.name})"),
        f"  accepted: {share(len(accepted))} -> {accept_out}",
        (
            f"  review:   {share(n - len(accepted))} -> {review_out}"
            + (f" (of which {unscorable} error/unscorable records)" if unscorable else "")
        ),
    ]
    if expected is not None:
        lines.append(f"  expected error rate of accepted records (from calibrated confidence): {expected:.2%}")
    if realised is not None:
        lines.append(f"  realised error rate of the {len(known)} labelled accepted records: {realised:.2%}")
    g = router.guarantee
    sample = f" ({g['sample']})" if g and g.get("sample") else ""
    if g and g.get("risk_upper_bound") is None:
        lines.append(
            f"  no threshold certifies an error rate <= {g['max_risk']:.2%} with probability >= {1 - g['delta']:.0%} "
            f"on {g['n_calibration']} labelled records{sample}: everything goes to review (more calibration data, "
            "a looser --max-risk or a larger --delta would help)"
        )
    elif g:
        lines.append(
            f"  guarantee: error rate of accepted records <= {g['max_risk']:.2%} with probability >= "
            f"{1 - g['delta']:.0%} (chosen on {g['n_calibration']} labelled records: {g['n_accepted']} accepted, "
            f"{g['errors_accepted']} errors, Clopper-Pearson upper bound {g['risk_upper_bound']:.2%})"
            + (f"; {g['sample']}, so each group weighs the same" if sample else "")
        )
    if policy_out:
        lines.append(f"  policy saved to {policy_out}")
    return {"text": "\n".join(lines), "json": data}
