"""Render the results tables of docs/results.md from bench_quality.py's JSON files.

    python benchmarks/quality_report.py benchmarks/results/*-n300-k6.json [--sweep SWEEP.json ...]

Prints Markdown to stdout: the error-detection table, the prediction table
(accuracy and distance to people's label distributions), the cost table with
each run's command; for runs that measured them, what steering adds (the
combined calibrator against calibrated msp, per method and prediction), the
option prior's effect on accuracy and the fused-vs-base table of every method;
and, for each ``--sweep`` file, the sweep summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from typing import Any

ORDER = ["sst2", "hatexplain", "chaosnli", "chaosnli-mnli", "liar", "truthfulqa", "globalopinionqa"]
STEER_SCORES = ("mutual_info", "mean_kl", "flip_rate", "fused_entropy")
METHOD_NAMES = {"steer": "steering (perspectives)", "prompt": "prompt ensemble", "random": "random vectors"}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ci(value: float | None, ci: list[float] | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if not ci:
        return _num(value, digits)
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    results = report["results"]
    base = results["steer"]["base"]["scores"]
    out = [("base view (free)", "msp", base["msp"]), ("base view (free)", "entropy", base["entropy"])]
    for method in ("steer", "prompt", "random"):
        if method in results:
            scores = results[method]["base"]["scores"]
            out += [(METHOD_NAMES[method], s, scores[s]) for s in STEER_SCORES]
    return out


def detection_table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| data set | n | views from | score | AUROC [95% CI] | PRR [95% CI] | ECE after calibration [95% CI] |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        n = report["results"]["steer"]["base"]["n"]
        best = max(
            (row for row in _rows(report) if row[2]["auroc"] is not None), key=lambda row: row[2]["auroc"]
        )
        for source, score, m in _rows(report):
            mark = "**" if (source, score) == best[:2] else ""
            lines.append(
                f"| {report['dataset']} | {n} | {source} | {mark}{score}{mark} | {_ci(m['auroc'], m['auroc_ci'])} | "
                f"{_ci(m['prr'], m['prr_ci'])} | {_ci(m['ece_cal'], m['ece_cal_ci'])} |"
            )
    return "\n".join(lines)


def prediction_table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| data set | n | accuracy: base | fused: steering | fused: prompt ens. | fused: random | "
        "JS to people: base | fused: steering | fused: prompt ens. | fused: random | "
        "JS fused - base, steering (paired) | accuracy fused - base, steering (paired; answers changed) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        res = report["results"]
        accs = [_num(res[m]["fused"]["accuracy"]) if m in res else "n/a" for m in ("steer", "prompt", "random")]
        js = []
        for m in ("steer", "prompt", "random"):
            human = res.get(m, {}).get("human")
            js.append(_ci(human["fused"]["js_distance"], human["fused"]["ci"]) if human else "n/a")
        human = res["steer"].get("human")
        js_base = _ci(human["base"]["js_distance"], human["base"]["ci"]) if human else "n/a"
        diff = human["fused_minus_base"] if human else None
        js_diff = _ci(diff["js_distance"], diff["ci"]) if diff else "n/a"
        acc = res["steer"].get("accuracy_fused_minus_base")
        acc_diff = f"{_ci(acc['difference'], acc['ci'])} ({acc['changed']})" if acc else "n/a"
        lines.append(
            f"| {report['dataset']} | {res['steer']['base']['n']} | {_num(res['steer']['base']['accuracy'])} | "
            + " | ".join(accs) + f" | {js_base} | " + " | ".join(js) + f" | {js_diff} | {acc_diff} |"
        )
    return "\n".join(lines)


def cost_table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| data set | n eval / cal | K | build vectors (s) | steering: eval (s) | prompt ens.: eval (s) | "
        "random: eval (s) | whole run (s) | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for report in reports:
        t = report["timings_s"]
        lines.append(
            f"| {report['dataset']} | {report['n_eval']} / {report['n_cal']} | {report['settings']['k']} | "
            f"{_secs(t.get('build_vectors'))} | {_secs(t.get('score_steer_eval'))} | "
            f"{_secs(t.get('score_prompt_eval'))} | "
            f"{_secs(t.get('score_random_eval'))} | {_secs(t.get('total'))} | `{report['command']}` |"
        )
    return "\n".join(lines)


def perspectives_table(reports: list[dict[str, Any]]) -> str:
    lines = ["| data set | recipe | perspectives (examples each) | mean cosine between vectors | steered with | how |",
             "| --- | --- | --- | ---: | --- | --- |"]
    for report in reports:
        p = report["perspectives"]
        names = ", ".join(f"{n} ({p['examples'][n]})" for n in p["names"])
        centred = "centred vectors" if report["settings"].get("center") else "raw vectors"
        lines.append(f"| {report['dataset']} | {p['recipe']} | {names} | {_num(p.get('mean_cosine'), 2)} | "
                     f"{centred} | {p['how']} |")
    return "\n".join(lines)


def _paired(d: dict[str, Any] | None) -> str:
    return "n/a" if not d else _ci(d["difference"], d["ci"])


def adds_table(reports: list[dict[str, Any]], target: str) -> str:
    """Combined calibrator vs calibrated msp, both fitted on the calibration split, judged against the
    errors of ``target``'s prediction on the evaluated split; differences paired over records."""
    lines = [
        "| data set | scores from | n (errors) | AUROC: combined | msp | combined − msp [95% CI] | "
        "PRR: combined | msp | combined − msp [95% CI] | AUROC combined − steering's combined [95% CI] | "
        "weights: msp, mutual_info, mean_kl, flip_rate | AUROC of raw msp | guard: kept (CV log loss "
        "difference ± se) | unguarded: AUROC combined − msp [95% CI] |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- | --- | --- | ---: | --- | --- |",
    ]
    for report in reports:
        per = (report.get("steering_adds") or {}).get(target, {})
        for method in ("steer", "prompt", "random"):
            if method not in per:
                continue
            m = per[method]
            if "skipped" in m:
                lines.append(f"| {report['dataset']} | {METHOD_NAMES[method]} | n/a | n/a: {m['skipped']} |"
                             + " |" * 10)
                continue
            vs = (m.get("combined_minus_steer") or {}).get("auroc") if method != "steer" else None
            weights = ", ".join(f"{w:+.2f}" for w in m["combined"]["weights"].values())
            lines.append(
                f"| {report['dataset']} | {METHOD_NAMES[method]} | {m['n']} ({m['errors']}) | "
                f"{_num(m['combined']['auroc'])} | {_num(m['msp']['auroc'])} | "
                f"{_paired(m['auroc_combined_minus_msp'])} | "
                f"{_num(m['combined']['prr'])} | {_num(m['msp']['prr'])} | {_paired(m['prr_combined_minus_msp'])} | "
                f"{'—' if method == 'steer' else _paired(vs)} | {weights} | {_num(m['msp'].get('raw_auroc'))} | "
                f"{_guard(m['combined'].get('guard'))} | "
                f"{_paired((m.get('unguarded') or {}).get('auroc_minus_msp')) if 'unguarded' in m else '—'} |"
            )
    return "\n".join(lines)


def _guard(guard: dict[str, Any] | None) -> str:
    """What the combined calibrator's guard kept, and the cross-validated figures it decided on."""
    if guard is None:
        return "no guard"
    kept = "combination" if guard["kept"] == "combination" else "msp alone"
    if "difference" not in guard:
        return f"{kept} ({guard.get('reason', '')})"
    return f"{kept} ({guard['difference']:+.4f} ± {guard['se']:.4f})"


def _temperature(t: float) -> str:
    """T, or that it reached OptionPrior's bound e^7 (the logits then say nothing about the labels)."""
    return f"{t:.0f} (bound e⁷)" if t > 900 else f"{t:.2f}"


def prior_table(reports: list[dict[str, Any]]) -> str:
    """Accuracy before and after the option prior (fitted on the calibration split), paired."""
    lines = ["| data set | n | base | base+prior | base+prior − base [95% CI] | answers changed | "
             "majority label of cal: accuracy | T | fused | fused+prior | fused+prior − fused [95% CI] |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for report in reports:
        prior = report.get("option_prior")
        if not prior:
            continue
        b, f = prior.get("base", {}), prior.get("fused", {})
        if "skipped" in b:
            lines.append(f"| {report['dataset']} | {report['n_eval']} | n/a: {b['skipped']} |" + " |" * 8)
            continue
        fused = (["n/a", "n/a", "n/a"] if "skipped" in f or not f else
                 [_num(f["accuracy"]), _num(f["accuracy_prior"]), _ci(f["difference"], f["ci"])])
        lines.append(
            f"| {report['dataset']} | {b['n']} | {_num(b['accuracy'])} | {_num(b['accuracy_prior'])} | "
            f"{_ci(b['difference'], b['ci'])} | {b['changed']} | "
            f"{b['majority_label']}: {_num(b['majority_accuracy'])} | "
            f"{_temperature(b['temperature'])} | " + " | ".join(fused) + " |"
        )
    return "\n".join(lines)


def fused_table(reports: list[dict[str, Any]]) -> str:
    """The fused prediction against the base one, paired over the evaluated records, for every method."""
    lines = ["| data set | views from | n | accuracy: base | fused | fused − base [95% CI] (answers changed) | "
             "JS to people: base | fused | fused − base [95% CI] |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for report in reports:
        res = report["results"]
        for method in ("steer", "prompt", "random"):
            if method not in res:
                continue
            r, acc, human = res[method], res[method].get("accuracy_fused_minus_base"), res[method].get("human")
            js = ([_num(human["base"]["js_distance"]), _num(human["fused"]["js_distance"]),
                   _ci(human["fused_minus_base"]["js_distance"], human["fused_minus_base"]["ci"])]
                  if human else ["n/a"] * 3)
            lines.append(
                f"| {report['dataset']} | {METHOD_NAMES[method]} | {r['base']['n']} | {_num(r['base']['accuracy'])} | "
                f"{_num(r['fused']['accuracy'])} | "
                + (f"{_ci(acc['difference'], acc['ci'])} ({acc['changed']})" if acc else "n/a")
                + " | " + " | ".join(js) + " |"
            )
    return "\n".join(lines)


def _setting(row: dict[str, Any]) -> tuple[Any, ...]:
    """(layer, coeff, centred, signed, perspectives); sweeps before these keys were unsigned, from annotations."""
    return (row["layer"], row["coeff"], bool(row.get("center", False)), bool(row.get("signed", False)),
            row.get("perspectives", "annotations"))


def sweep_tables(sweep: dict[str, Any]) -> str:
    """Mean over data sets of the dev AUROC of each steering score, per (layer, coeff, centring, signed) at
    tau 0.4, alpha 0.2, K max; then per (tau, alpha, K) at the best of those: the highest mean over
    data sets and the four steering scores (the rule the defaults were chosen by)."""
    rows = sweep["rows"]
    k_max = max(sweep["ks"])
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        k_here = max(x["k"] for x in rows if (x["dataset"], _setting(x)[4]) == (r["dataset"], _setting(r)[4]))
        if r["tau"] == 0.4 and r["alpha"] == 0.2 and r["k"] == min(k_max, k_here):
            grouped[_setting(r)].append(r)

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    def overall(rs: list[dict[str, Any]]) -> float | None:
        return mean([mean([r["auroc"][s] for s in STEER_SCORES]) for r in rs])

    out = ["| perspectives | layer | coeff | centred | signed | mean of the four | "
           + " | ".join(f"AUROC {s}" for s in STEER_SCORES)
           + " | AUROC msp | fused acc. - base acc. | JS fused - JS base | Spearman(mutual_info, msp) | "
           + " | ".join(f"MI AUROC {d}" for d in sweep["datasets"]) + " |",
           "| --- | ---: | ---: | --- | --- | ---: | " + " | ".join("---:" for _ in STEER_SCORES)
           + " | ---: | ---: | ---: | ---: | "
           + " | ".join("---:" for _ in sweep["datasets"]) + " |"]
    # a layer is a block number, or several joined by '+' (steered at once): order by the blocks
    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return (tuple(int(x) for x in str(key[0]).split("+")), *key[1:])

    for (layer, coeff, center, signed, source), rs in sorted(grouped.items(), key=lambda item: order(item[0])):
        per = {r["dataset"]: r["auroc"]["mutual_info"] for r in rs}
        out.append(
            f"| {source} | {layer} | {coeff} | {'yes' if center else 'no'} | {'+v, -v' if signed else '+v'} | "
            f"{_num(overall(rs))} | "
            + " | ".join(_num(mean([r["auroc"][s] for r in rs])) for s in STEER_SCORES)
            + f" | {_num(mean([r['auroc']['msp'] for r in rs]))} | "
            + f"{_num(mean([r['fused_accuracy'] - r['base_accuracy'] for r in rs]))} | "
            + f"{_num(mean([r['js_fused'] - r['js_base'] for r in rs if r['js_base'] is not None]))} | "
            # sweeps before 2026-11-26 did not record it
            + f"{_num(mean([r.get('spearman_with_msp', {}).get('mutual_info') for r in rs]))} | "
            + " | ".join(_num(per.get(d)) for d in sweep["datasets"]) + " |"
        )
    best = max(grouped, key=lambda key: overall(grouped[key]) or 0)
    out += ["", f"tau, alpha and K at layer {best[0]}, coeff {best[1]}, {'centred' if best[2] else 'raw'} vectors"
            f"{', signed views' if best[3] else ''}{', shipped perspectives' if best[4] == 'shipped' else ''} "
            "(K = all: each set's largest K):", "",
            "| tau | alpha | K | " + " | ".join(f"AUROC {s}" for s in STEER_SCORES)
            + " | fused acc. - base acc. | JS fused - JS base |",
            "| ---: | ---: | ---: | " + " | ".join("---:" for _ in STEER_SCORES) + " | ---: | ---: |"]
    k_of = {d: max(x["k"] for x in rows if x["dataset"] == d and _setting(x)[4] == best[4])
            for d in sweep["datasets"]}
    for tau in sweep["taus"]:
        for alpha in sweep["alphas"]:
            for k in sweep["ks"]:
                rs = [r for r in rows if (*_setting(r), r["tau"], r["alpha"]) == (*best, tau, alpha)
                      and r["k"] == min(k, k_of[r["dataset"]])]
                js = [r["js_fused"] - r["js_base"] for r in rs if r["js_base"] is not None]
                out.append(
                    f"| {tau} | {alpha} | {k} | " + " | ".join(_num(mean([r["auroc"][s] for r in rs]))
                                                              for s in STEER_SCORES)
                    + f" | {_num(mean([r['fused_accuracy'] - r['base_accuracy'] for r in rs]))} | {_num(mean(js))} |"
                )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--sweep", action="append", default=[], help="a sweep JSON (repeatable)")
    args = parser.parse_args(argv)
    reports = [json.load(open(p)) for p in args.reports]
    reports.sort(key=lambda r: (ORDER.index(r["dataset"]) if r["dataset"] in ORDER else 99, r["run"]))
    grouped = [f"{r['dataset']} ({r['results']['steer']['base']['n_groups']} groups of records)" for r in reports
               if r["results"]["steer"]["base"].get("resampled") == "groups"]
    parts = ["Paired 95 % percentile bootstrap intervals resample records"
             + (f"; on {', '.join(grouped)}, whole groups (one question asked of several countries is not "
                "independent)." if grouped else "."),
             "### Error detection (errors of the base prediction)", detection_table(reports),
             "### Predictions: accuracy, and Jensen-Shannon distance to people's label distribution",
             prediction_table(reports), "### Perspectives", perspectives_table(reports),
             "### Cost and commands", cost_table(reports)]
    added = [r for r in reports if r.get("steering_adds")]
    if added:
        parts += ["### What steering adds: combined calibrator vs calibrated msp (errors of the base prediction)",
                  adds_table(added, "base"),
                  "### What steering adds: the same against the errors of the fused prediction",
                  adds_table(added, "fused"),
                  "### Option prior: accuracy before and after (fitted on the calibration split)", prior_table(added),
                  "### Fused vs base prediction, paired, every method", fused_table(added)]
    for path in args.sweep:
        sweep = json.load(open(path))
        parts += [f"### Sweep `{os.path.relpath(path)}` (dev parts only, {sweep['seconds']:,.0f} s)",
                  f"`{sweep['command']}`", sweep_tables(sweep)]
    sys.stdout.write("\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
