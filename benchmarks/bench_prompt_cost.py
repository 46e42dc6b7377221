"""What the prompt-ensemble control costs beside steering, on a data set's own records.

    python benchmarks/bench_prompt_cost.py --dataset sst2 --model qwen2.5-coder-1.5b-instruct --layer 20 --n 32
    python benchmarks/bench_prompt_cost.py --dataset chaosnli --model tiny-random --n 8 --repeats 1

``bench_quality.py --methods steer,prompt`` scores every calibration and evaluated
record twice: steered (one pass, the K perspective views branching off at the
steering layer) and as a prompt ensemble (K+1 plain passes, perspective k written
before the prompt as text). Before spending hours on the second, this measures both
on the first ``--n`` evaluated records of the same split, side by side in one
process: after a warm-up on a few records, ``--repeats`` rounds of (prompt), (steer)
in turn; medians are reported.

The steered views use K Gaussian directions named after the task's perspectives
(the cost of a pass does not depend on the vector values), so building the
annotated vectors, which only steering needs (267-372 s per set in the layer-20
runs of docs/results.md), is not in (steer): it is added from ``--vectors-seconds``
if given. The last line projects a full
``bench_quality`` part (``--n-cal`` + ``--n-full`` records) for each way.

Where a record's options run to several tokens (TruthfulQA), the prompt ensemble
runs each prompt once and its options after the prompt's cached keys and values;
``--compare-rows`` also times it the way it ran before (the prompt again for each
option, as one row per option), as a third way ``(rows)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from quality_data import DATASETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--model", default="default", help="a built-in model, 'tiny-random' or a model directory")
    parser.add_argument("--layer", type=int, default=None, help="steering layer (default: the model's)")
    parser.add_argument("--n", type=int, default=32, help="records timed (the first of the evaluated split)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--k", type=int, default=6, help="perspectives (at most; default 6)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per steered pass (as bench_quality)")
    parser.add_argument("--plain-batch-size", type=int, default=32, help="rows per plain pass (as bench_quality)")
    parser.add_argument("--n-full", type=int, default=300, help="evaluated records of the projected full run")
    parser.add_argument("--n-cal", type=int, default=200, help="calibration records of the projected full run")
    parser.add_argument("--vectors-seconds", type=float, default=None,
                        help="measured time to build the annotated vectors (from a bench_quality JSON), for the total")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--compare-rows", action="store_true",
                        help="also time the prompt ensemble with its prompt run again for each longer option "
                             "(one row per option, as before the prompt was run once per record)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.path.normpath(os.path.join(REPO, "..", "shared", "data")))
    args = parser.parse_args(argv)
    for name in ("n", "repeats", "k", "batch_size", "plain_batch_size", "n_full"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    import torch

    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.model import load_model
    from steerunc.scoring.registry import resolve_name
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.scoring.vectors import SteeringVectors

    from quality_data import by_length, load_task
    from quality_scoring import prompt_ensemble, read_records, score_records

    if args.threads:
        torch.set_num_threads(args.threads)
    model_name = resolve_name(args.model)
    try:
        task = load_task(args.dataset, args.data_dir, args.n, 0, args.k, args.seed)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"bench_prompt_cost: {err}") from None
    print(f"loading {model_name} ...", file=sys.stderr, flush=True)
    model = load_model(model_name, device=args.device)
    names = list(task.perspectives)
    generator = torch.Generator().manual_seed(args.seed)
    vectors = SteeringVectors(
        names=names, vectors=torch.randn(len(names), model.d_model, generator=generator),
        layer=model.default_layer if args.layer is None else args.layer, model_id=model.model_id,
        fingerprint=model.fingerprint, resid_norm=1.0, n_pairs=[0] * len(names),
    )
    fusion = FusionConfig()
    scorer = Scorer(model, vectors, ScoreConfig(layer=vectors.layer, batch_size=args.batch_size, fusion=fusion))

    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "records.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            for item in by_length(task.eval):  # the order bench_quality scores them in
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
        records = read_records(path)
        out = {name: os.path.join(work, f"scored-{name}.jsonl") for name in ("prompt", "steer", "rows")}
        ways = {
            "prompt": lambda rows: prompt_ensemble(model, rows, task.perspectives, fusion, out["prompt"],
                                                   args.plain_batch_size),
            "steer": lambda rows: score_records(scorer, rows, out["steer"]),
        }
        if args.compare_rows:
            ways["rows"] = lambda rows: prompt_ensemble(model, rows, task.perspectives, fusion, out["rows"],
                                                        args.plain_batch_size, shared_prefix=False)
        warm = records[: min(4, len(records))]
        for fn in ways.values():
            fn(warm)
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.repeats):
            for name, fn in ways.items():
                seconds[name].append(fn(records))
                print(f"round {r + 1}/{args.repeats}: {name} {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)
        same = _same_scores(out["prompt"], out["rows"]) if args.compare_rows else None

    tokens = [len(model.tokenizer(r.text)["input_ids"]) for r in records]
    shared = records[0].options if all(r.options == records[0].options for r in records) else None
    per = {name: statistics.median(s) / len(records) for name, s in seconds.items()}
    full = args.n_full + args.n_cal
    print(f"# bench_prompt_cost: {args.dataset}, model {model_name} ({model.n_layers} blocks), device {model.device}, "
          f"threads {torch.get_num_threads()}, steering layer {vectors.layer}, K={len(names)}")
    print(f"# {len(records)} evaluated records, {min(tokens)}-{max(tokens)} prompt tokens "
          f"(mean {statistics.mean(tokens):.1f}); options {shared if shared else 'of each record'}; "
          f"median of {args.repeats} rounds after a warm-up; load average now {os.getloadavg()[0]:.2f}")
    print(f"{'way':<48} {'median s':>9} {'per record s':>13} {'vs steer':>9}")
    labels = {"steer": "(steer) Scorer: one pass, K views from the layer",
              "prompt": "(prompt) K+1 plain passes, perspective as text",
              "rows": "(rows) the same, prompt again for each option"}
    for name in ["steer", "prompt"] + ["rows"] * ("rows" in ways):
        print(f"{labels[name]:<48} {statistics.median(seconds[name]):>9.2f} {per[name]:>13.3f} "
              f"{per[name] / per['steer']:>9.2f}")
    if same is not None:
        print(same)
    built = f" + vectors {args.vectors_seconds:.0f} s" if args.vectors_seconds is not None else ""
    print(f"projected full part ({args.n_cal} + {args.n_full} records): steer {per['steer'] * full:.0f} s{built}, "
          f"prompt {per['prompt'] * full:.0f} s; prompt/steer={per['prompt'] / per['steer']:.2f}"
          + (f"; rows {per['rows'] * full:.0f} s, rows/prompt={per['rows'] / per['prompt']:.2f}" if "rows" in per else ""))


def _same_scores(prompt: str, rows: str) -> str:
    """How far the prompt ensemble's two ways differ on the same records: the largest difference in
    any option's score (summed log-probability, base and fused logits) and the predictions that agree."""
    from steerunc.io import read_jsonl

    pairs = [(x.data or {}, y.data or {}) for x, y in zip(read_jsonl(prompt), read_jsonl(rows))]
    pairs = [(x, y) for x, y in pairs if "base_logits" in x and "base_logits" in y]  # error records: no scores
    if not pairs:
        return "# (prompt) against (rows): no record was scored both ways"
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    worst = max(abs(x[key][o] - y[key][o]) for x, y in zip(a, b) for key in ("base_logits", "logits") for o in x[key])
    agree = sum(x["prediction"] == y["prediction"] and x["base_prediction"] == y["base_prediction"] for x, y in zip(a, b))
    return (f"# (prompt) against (rows) on the {len(a)} records: option scores differ by at most {worst:.1e}; "
            f"predictions the same on {agree} of {len(a)}")


if __name__ == "__main__":
    main()
