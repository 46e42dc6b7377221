"""Does steering disagreement catch the model's errors? One data set, one run, one JSON.

    python benchmarks/bench_quality.py --dataset hatexplain --n 300 [--model default] [--k 6]

Steps (docs/benchmarks.md):

1. convert the data set into steerunc records (a fixed prompt template per
   task) and annotated examples (<= 50 per perspective) from a part of the data
   disjoint from the calibration and evaluated items;
2. build the perspective vectors from the annotations and K random vectors of
   the same norms (seeded);
3. score the calibration and evaluated records three ways: steered by the
   perspectives (``steer``), steered by the random vectors (``random``), and a
   prompt ensemble with each perspective written into the prompt (``prompt``,
   K+1 plain passes); ``msp`` and ``entropy`` come free with the base view;
4. calibrate every score on the calibration split (isotonic) and evaluate on
   the evaluated split; then what steering adds (``quality_adds``): the combined
   calibrator ``msp+mutual_info+mean_kl+flip_rate@logistic`` against calibrated
   ``msp``, paired, for every method, and the option prior's effect on accuracy;
5. write ``<out>/<run>.json`` (and the intermediate files under ``<out>/<run>/``).

``--reuse-scored`` re-judges the scored files of an earlier run; when every
scored file is complete and the earlier run's JSON and vector file are there,
no model is loaded; otherwise the earlier run's vector file is used again when it
was built for this model and layer from the same annotations (only the missing
scored files are made). A scored file an interrupted run left part-way is
resumed after its whole lines, unless the vectors are built again; the run's
``started.json`` holds the model and settings to check against when it never
wrote its JSON. Such a file's time in ``timings_s`` is null, and
``timings_s.resumed`` says how many records this run scored in how many seconds
(the rules: ``quality_resume.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from quality_adds import COMBINED  # noqa: E402
from quality_data import DATASETS, PER_PERSPECTIVE, by_length, load_task  # noqa: E402
from quality_resume import (REJUDGED, earlier_run, keep_lines, same_model, same_settings, survey,  # noqa: E402
                            write_started)

from steerunc.scoring.registry import resolve_name  # noqa: E402  (imports no torch)

METHODS = ("steer", "random", "prompt")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.scorer import ScoreConfig

    steering, fusion = ScoreConfig(), FusionConfig()  # the library's defaults are the harness's
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True,
                        help=f"one of {', '.join(DATASETS)}; several, comma-separated, share one model load")
    parser.add_argument("--n", type=int, default=300, help="evaluated items (default 300)")
    parser.add_argument("--n-cal", type=int, default=200, help="calibration items (default 200)")
    parser.add_argument("--model", default="default",
                        help="a built-in model ('default' is resolved to the one it means, which names the run), "
                             "'tiny-random' or a model directory")
    parser.add_argument("--k", type=int, default=6, help="perspectives (at most; default 6)")
    parser.add_argument("--per-perspective", type=int, default=PER_PERSPECTIVE,
                        help=f"annotated examples per perspective (at most {PER_PERSPECTIVE})")
    parser.add_argument("--coeff", type=float, default=steering.coeff)
    parser.add_argument("--layer", type=int, default=None, help="default: the model's default layer")
    parser.add_argument("--center", action=argparse.BooleanOptionalAction, default=steering.center,
                        help="steer with centred vectors (default: as steerunc score, centred when K >= 2)")
    parser.add_argument("--tau", type=float, default=fusion.tau)
    parser.add_argument("--fusion", default=fusion.method, choices=["mixture", "dvd"], help="fused prediction")
    parser.add_argument("--alpha", type=float, default=fusion.alpha)
    parser.add_argument("--top-m", type=int, default=fusion.top_m)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of steer,random,prompt")
    parser.add_argument("--seed", type=int, default=0, help="splits, random vectors and bootstrap")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per steered forward pass")
    parser.add_argument("--plain-batch-size", type=int, default=32, help="rows per plain pass (prompt ensemble)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--data-dir", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data")))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--tag", default="", help="suffix of the run name")
    parser.add_argument("--reuse-scored", action="store_true",
                        help="keep scored files of an earlier run with these settings (one line per record) and only "
                             "re-judge them; their scoring timings are taken from that run's JSON (null if none); "
                             "a file an interrupted run left part-way is resumed after its whole lines")
    args = parser.parse_args(argv)
    # runs are named by the model itself: 'default' has meant more than one model over time
    args.model = resolve_name(args.model)
    args.datasets = [d.strip() for d in args.dataset.split(",") if d.strip()]
    if not args.datasets or set(args.datasets) - set(DATASETS):
        parser.error(f"--dataset must name some of {', '.join(DATASETS)}, got {args.dataset!r}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown or "steer" not in args.methods:
        parser.error(f"--methods must include steer and only name {', '.join(METHODS)}")
    return args


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _cli_commands(args: argparse.Namespace, files: dict[str, str], methods: list[str]) -> list[str]:
    """The command-line equivalents of what the run did in process."""
    def q(value: str) -> str:
        return shlex.quote(os.path.relpath(value, REPO) if os.path.isabs(value) else value)

    center = {None: "", True: " --center", False: " --no-center"}[args.center]
    common = (f"--model {q(args.model)} --coeff {args.coeff}{center} --tau {args.tau} --fusion {args.fusion} "
              f"--alpha {args.alpha} --top-m {args.top_m}")
    layer = "" if args.layer is None else f" --layer {args.layer}"
    cmds = [f"steerunc vectors build {q(files['annotations'])} --from annotations --model {q(args.model)}{layer} "
            f"-o {q(files['vectors'])}"]
    for split in ("cal", "eval"):
        cmds.append(f"steerunc score {q(files[f'records_{split}'])} --vectors {q(files['vectors'])} {common} "
                    f"-o {q(files[f'steer_{split}'])}")
        if "random" in methods:
            cmds.append(f"steerunc score {q(files[f'records_{split}'])} --vectors {q(files['random_vectors'])} "
                        f"{common} -o {q(files[f'random_{split}'])}")
    for method in methods:
        cals = []
        for target in ("base", "fused"):
            for score in ("msp", "mutual_info"):
                cal = os.path.join(files["dir"], method, f"cal-{target}-{score}.json")
                cmds.append(f"steerunc calibrate {q(files[f'{method}_cal'])} --score {score} --method isotonic "
                            f"--target {target} -o {q(cal)}")
                if target == "base":
                    cals.append(cal)
        cmds.append(f"steerunc evaluate {q(files[f'{method}_eval'])} --target base "
                    + " ".join(f"--calibrator {q(c)}" for c in cals) + " --json")
        # what steering adds (quality_adds): the combination against calibrated msp, fitted the same way
        for target in ("base", "fused"):
            pair = []
            for scores, tail in ((",".join(COMBINED), "combined"), ("msp", "msp-logistic")):
                cal = os.path.join(files["dir"], method, f"cal-{target}-{tail}.json")
                cmds.append(f"steerunc calibrate {q(files[f'{method}_cal'])} --scores {scores} --method logistic "
                            f"--target {target} -o {q(cal)}")
                pair.append(cal)
            cmds.append(f"steerunc evaluate {q(files[f'{method}_eval'])} --target {target} "
                        + " ".join(f"--calibrator {q(c)}" for c in pair) + " --json")
    for target in ("base", "fused"):
        prior = os.path.join(files["dir"], "prior", f"prior-{target}.json")
        cmds.append(f"steerunc calibrate-prior {q(files['steer_cal'])} --target {target} -o {q(prior)}")
        cmds.append(f"steerunc evaluate {q(files['steer_eval'])} --target {target} --prior {q(prior)} --json")
    return cmds


class _Model:
    """The model, loaded on first use and then shared by every data set of the run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.seconds = args, 0.0
        self.model: Any = None

    def get(self) -> Any:
        if self.model is None:
            from steerunc.scoring.model import load_model

            tick = time.perf_counter()
            self.model = load_model(self.args.model, device=self.args.device)
            self.seconds = time.perf_counter() - tick
        return self.model


def run(args: argparse.Namespace, dataset: str, models: _Model | None = None) -> dict[str, Any]:
    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.scoring.vectors import load_vectors

    from quality_adds import prior_effect, record_groups_by_id, steering_adds
    from quality_eval import judge
    from quality_scoring import (build_perspective_vectors, prompt_ensemble, random_vectors, read_records,
                                 reusable_vectors, score_records)

    models = models or _Model(args)
    started = time.perf_counter()
    task = load_task(dataset, args.data_dir, args.n, args.n_cal, args.k, args.seed, args.per_perspective)
    name = f"{dataset}-{args.model if os.sep not in args.model else os.path.basename(args.model)}-n{args.n}"
    name += f"-k{args.k}" + (f"-{args.tag}" if args.tag else "")
    work = os.path.join(args.out, name)
    os.makedirs(work, exist_ok=True)
    files = {"dir": work, "annotations": os.path.join(work, "annotations.jsonl"),
             "vectors": os.path.join(work, "vectors.safetensors"),
             "random_vectors": os.path.join(work, "random.safetensors")}
    _write_jsonl(files["annotations"], task.annotations)
    for split in ("cal", "eval"):
        files[f"records_{split}"] = os.path.join(work, f"records-{split}.jsonl")
        _write_jsonl(files[f"records_{split}"], by_length(getattr(task, split)))
        for method in args.methods:
            files[f"{method}_{split}"] = os.path.join(work, f"scored-{method}-{split}.jsonl")
    records = {split: read_records(files[f"records_{split}"]) for split in ("cal", "eval")}
    earlier = earlier_run(args.out, name, args.reuse_scored)  # --reuse-scored: the run that wrote the scored files
    # --reuse-scored: complete scored files are kept; an interrupted run's are resumed after their whole lines
    reuse, partial = survey(files, {s: [r.id for r in records[s]] for s in records}, args.methods, args.reuse_scored)
    # every scored file already there, with the vectors and the earlier JSON: judge without the model
    no_model = all(reuse.values()) and bool(earlier.get("model")) and os.path.exists(files["vectors"])
    timings: dict[str, Any] = {}
    if any(reuse.values()) or any(partial.values()):
        same_model(args, earlier.get("model", {}), name)
        same_settings(args, earlier.get("settings", {}), name)
    if no_model:
        vectors = load_vectors(files["vectors"])
        model_info, centred = earlier["model"], earlier["settings"]["center"]
        before = earlier.get("timings_s", {})
        timings.update({k: v for k, v in before.items() if k not in ("evaluate", "rejudge_total", "note")})
        timings["note"] = REJUDGED
        if before.get("note") not in (None, REJUDGED):
            timings["note_earlier"] = before["note"]
        print(f"[{name}] every scored file is complete: re-judging them, no model loaded", file=sys.stderr)
    else:
        model = models.get()
        timings["load_model"] = models.seconds
        tick = time.perf_counter()
        kept = (reusable_vectors(model, files["annotations"], args.layer, files["vectors"])
                if args.reuse_scored else None)
        if kept is not None:
            vectors = kept
            timings["build_vectors"] = earlier.get("timings_s", {}).get("build_vectors")
            print(f"[{name}] reusing {files['vectors']}", file=sys.stderr)
        else:
            vectors = build_perspective_vectors(model, files["annotations"], args.layer, files["vectors"])
            timings["build_vectors"] = time.perf_counter() - tick
            if any(partial.values()):  # lines steered with other vectors are not continued with these
                print(f"[{name}] vectors built again: part-way scored files are scored from the start",
                      file=sys.stderr)
                partial = {}
        model_info = {"name": args.model, "id": model.model_id, "fingerprint": model.fingerprint,
                      "n_layers": model.n_layers, "device": str(model.device), "dtype": str(model.dtype)}
        fusion = FusionConfig(tau=args.tau, alpha=args.alpha, top_m=args.top_m, method=args.fusion)
        config = ScoreConfig(coeff=args.coeff, layer=args.layer, center=args.center, fusion=fusion,
                             batch_size=args.batch_size)
        scorers = {"steer": Scorer(model, vectors, config)}
        centred = scorers["steer"].centred
        if "random" in args.methods:
            scorers["random"] = Scorer(model, random_vectors(vectors, args.seed, files["random_vectors"]), config)
        write_started(work, model_info, {"coeff": args.coeff, "layer": vectors.layer, "center": centred,
                                         "tau": args.tau, "fusion": args.fusion, "alpha": args.alpha,
                                         "top_m": args.top_m, "seed": args.seed})
        for method in args.methods:
            for split in ("cal", "eval"):
                out, todo = files[f"{method}_{split}"], records[split]
                key = f"score_{method}_{split}"
                if reuse[f"{method}_{split}"]:
                    timings[key] = earlier.get("timings_s", {}).get(key)
                    print(f"[{name}] {method}/{split}: reusing {out}", file=sys.stderr)
                    continue
                done = partial.get(f"{method}_{split}", 0)
                if done:  # an interrupted run's whole lines are kept; the rest is scored after them
                    keep_lines(out, done)
                    todo = todo[done:]
                    print(f"[{name}] {method}/{split}: resuming after {done} of {len(records[split])} records",
                          file=sys.stderr)
                label = f"[{name}] {method}/{split}"
                if method == "prompt":
                    seconds = prompt_ensemble(model, todo, task.perspectives, fusion, out,
                                              args.plain_batch_size, label=label, append=bool(done))
                else:
                    seconds = score_records(scorers[method], todo, out, label=label, append=bool(done))
                # a resumed file's time covers only this run's part: stated as such, not as the whole
                timings[key] = None if done else seconds
                if done:
                    timings.setdefault("resumed", {})[key] = {"records_before": done, "records_scored": len(todo),
                                                              "seconds": seconds}
                print(f"[{name}] {method}/{split}: {len(todo)} records in {seconds:.1f}s", file=sys.stderr)

    results: dict[str, Any] = {}
    tick = time.perf_counter()
    eval_groups = record_groups_by_id(files["records_eval"])  # GlobalOpinionQA: the question; resampled whole
    for method in args.methods:
        results[method] = judge(files[f"{method}_cal"], files[f"{method}_eval"], os.path.join(work, method),
                                n_boot=args.bootstrap, seed=args.seed, groups=eval_groups)
    adds = steering_adds(files, args.methods, work, n_boot=args.bootstrap, seed=args.seed)
    prior = prior_effect(files["steer_cal"], files["steer_eval"], os.path.join(work, "prior"),
                         n_boot=args.bootstrap, seed=args.seed, groups=eval_groups)
    timings["evaluate"] = time.perf_counter() - tick
    timings["rejudge_total" if no_model else "total"] = time.perf_counter() - started

    argv = ["python", "benchmarks/bench_quality.py", "--dataset", dataset, "--n", str(args.n),
            "--model", args.model, "--k", str(args.k)]
    defaults = _parse(["--dataset", dataset])
    for key in ("n_cal", "per_perspective", "coeff", "layer", "tau", "fusion", "alpha", "top_m", "seed", "bootstrap",
                "batch_size", "plain_batch_size", "device", "data_dir", "out", "tag"):
        if getattr(args, key) != getattr(defaults, key):
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.center is not None:
        argv.append("--center" if args.center else "--no-center")
    if args.methods != list(METHODS):
        argv += ["--methods", ",".join(args.methods)]
    if args.reuse_scored:  # the scored files (or some) may be an earlier run's: timings_s says which
        argv.append("--reuse-scored")
    from steerunc import __version__

    report = {
        "run": name,
        "command": " ".join(shlex.quote(a) for a in argv),
        "dataset": dataset,
        "template": task.template,
        "perspectives": {"names": list(task.perspectives), "as_text": task.perspectives, "recipe": task.recipe,
                         "how": task.how, "examples": {n: sum(a["perspective"] == n for a in task.annotations)
                                                       for n in task.perspectives},
                         "max_per_perspective": args.per_perspective, "vector_norms": vectors.norms,
                         "mean_cosine": vectors.mean_cosine()},
        "sources": [os.path.relpath(p, args.data_dir) for p in task.sources],
        "n_eval": len(task.eval), "n_cal": len(task.cal),
        "model": model_info,
        "settings": {"k": len(vectors.names), "coeff": args.coeff, "layer": vectors.layer, "center": centred,
                     "tau": args.tau, "fusion": args.fusion,
                     "alpha": args.alpha, "top_m": args.top_m, "seed": args.seed, "bootstrap": args.bootstrap,
                     "calibration": "isotonic, fitted on the calibration split", "batch_size": args.batch_size},
        "timings_s": timings,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "steerunc_version": __version__,
        "results": results,
        "steering_adds": adds,
        "option_prior": prior,
        "cli_equivalents": _cli_commands(args, files, args.methods),
    }
    path = os.path.join(args.out, f"{name}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"[{name}] wrote {path} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    models = _Model(args)  # loaded once, on first use, for every data set
    for dataset in args.datasets:
        run(args, dataset, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
