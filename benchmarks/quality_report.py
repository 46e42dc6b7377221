"""Render the results tables of docs/results.md from bench_quality.py's JSON files.

    python benchmarks/quality_report.py benchmarks/results/*-n300-k6.json [--sweep SWEEP.json ...]

Prints Markdown to stdout: the error-detection table, the prediction table
(accuracy and distance to people's label distributions), the cost table with
each run's command, and, for each ``--sweep`` file, the sweep summary.
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
            f"{t['build_vectors']:.0f} | {_secs(t.get('score_steer_eval'))} | {_secs(t.get('score_prompt_eval'))} | "
            f"{_secs(t.get('score_random_eval'))} | {t['total']:.0f} | `{report['command']}` |"
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


def sweep_tables(sweep: dict[str, Any]) -> str:
    """Mean over data sets of the dev AUROC of each steering score, per (layer, coeff, centring) at
    tau 0.4, alpha 0.2, K max; then per (tau, alpha, K) at the best of those: the highest mean over
    data sets and the four steering scores (the rule the defaults were chosen by)."""
    rows = sweep["rows"]
    k_max = max(sweep["ks"])
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        k_here = max(x["k"] for x in rows if x["dataset"] == r["dataset"])
        if r["tau"] == 0.4 and r["alpha"] == 0.2 and r["k"] == min(k_max, k_here):
            grouped[(r["layer"], r["coeff"], bool(r.get("center", False)))].append(r)

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    def overall(rs: list[dict[str, Any]]) -> float | None:
        return mean([mean([r["auroc"][s] for s in STEER_SCORES]) for r in rs])

    out = ["| layer | coeff | centred | mean of the four | " + " | ".join(f"AUROC {s}" for s in STEER_SCORES)
           + " | AUROC msp | fused acc. - base acc. | "
           + " | ".join(f"MI AUROC {d}" for d in sweep["datasets"]) + " |",
           "| ---: | ---: | --- | ---: | " + " | ".join("---:" for _ in STEER_SCORES) + " | ---: | ---: | "
           + " | ".join("---:" for _ in sweep["datasets"]) + " |"]
    for (layer, coeff, center), rs in sorted(grouped.items()):
        per = {r["dataset"]: r["auroc"]["mutual_info"] for r in rs}
        out.append(
            f"| {layer} | {coeff} | {'yes' if center else 'no'} | {_num(overall(rs))} | "
            + " | ".join(_num(mean([r["auroc"][s] for r in rs])) for s in STEER_SCORES)
            + f" | {_num(mean([r['auroc']['msp'] for r in rs]))} | "
            + f"{_num(mean([r['fused_accuracy'] - r['base_accuracy'] for r in rs]))} | "
            + " | ".join(_num(per.get(d)) for d in sweep["datasets"]) + " |"
        )
    best = max(grouped, key=lambda key: overall(grouped[key]) or 0)
    out += ["", f"tau, alpha and K at layer {best[0]}, coeff {best[1]}, {'centred' if best[2] else 'raw'} vectors "
            "(K = all: each set's largest K):", "",
            "| tau | alpha | K | " + " | ".join(f"AUROC {s}" for s in STEER_SCORES)
            + " | fused acc. - base acc. | JS fused - JS base |",
            "| ---: | ---: | ---: | " + " | ".join("---:" for _ in STEER_SCORES) + " | ---: | ---: |"]
    k_of = {d: max(x["k"] for x in rows if x["dataset"] == d) for d in sweep["datasets"]}
    for tau in sweep["taus"]:
        for alpha in sweep["alphas"]:
            for k in sweep["ks"]:
                rs = [r for r in rows if (r["layer"], r["coeff"], bool(r.get("center", False)), r["tau"],
                                          r["alpha"]) == (*best, tau, alpha)
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
    parts = ["### Error detection (errors of the base prediction)", detection_table(reports),
             "### Predictions: accuracy, and Jensen-Shannon distance to people's label distribution",
             prediction_table(reports), "### Perspectives", perspectives_table(reports),
             "### Cost and commands", cost_table(reports)]
    for path in args.sweep:
        sweep = json.load(open(path))
        parts += [f"### Sweep `{os.path.relpath(path)}` (dev parts only, {sweep['seconds']:,.0f} s)",
                  f"`{sweep['command']}`", sweep_tables(sweep)]
    sys.stdout.write("\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
