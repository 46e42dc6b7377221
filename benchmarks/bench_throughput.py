"""Throughput: items per second of a plain pass and of steerunc, by batch size and layer.

    python benchmarks/bench_throughput.py --threads 1                      # tiny-random, CPU
    python benchmarks/bench_throughput.py --model default --device cuda    # on a GPU

On the same moderation-style prompts of varied length (comments from
``examples/moderation.jsonl`` joined one to four at a time, options Yes / No),
one run times, for each batch size (``--batch-sizes``, default 8, 64, 256) and
each steering layer (the default, and 3/4 depth: block ``ceil(0.75 n) - 1``;
the two coincide on a 4-block model), ``--repeats`` rounds of, in turn:

plain:     the records in batches of B: the tokenizer called on the batch's texts,
           right-padded, one unsteered pass of the decoder, the option rows of the
           head at the last position, softmax, one copy to the host, a dict of
           option probabilities per item;
steerunc:  ``Scorer.score`` on the same records with ``batch_size=B`` (K+1 views,
           fusion, scores, output records).

Both run after one warm-up round; medians are reported. Beside each ratio the
table gives the arithmetic floor at that layer (docs/performance.md, "Why the
overhead is about 1"): in units of one block over a record's tokens, a plain
pass costs n and steerunc at least L + 1 + (n - L - 2)(K + 1) + (K + 1) f, where
f is the final block's share in q/k/v (the rest of it runs at the read
positions only); "x floor" is steerunc's measured cost over that. ``--profile
FILE`` writes a cProfile of one steerunc run (largest batch, default layer).

The last line is::

    throughput_ratio_bs256=<steerunc items/s / plain items/s at batch 256, default layer>

Progress goes to stderr; the table and the last line to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from steerunc.scoring.model import LoadedModel, load_model
from steerunc.records import Record, ScoredRecord
from steerunc.scoring.scorer import ScoreConfig, Scorer
from steerunc.scoring.vectors_default import default_vectors
from steerunc.scoring.views import Unembedding, collate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import cpu_name, timed  # noqa: E402  (shared timing helpers)

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["Yes", "No"]
TEMPLATE = 'Comment: "{}"\nIs this comment offensive? Answer Yes or No.\nAnswer:'


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def comments() -> list[str]:
    """The quoted comments of examples/moderation.jsonl."""
    found = []
    with open(ROOT / "examples" / "moderation.jsonl", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            found.append(text.split('"', 1)[1].rsplit('"', 1)[0])
    return found


def make_records(model: LoadedModel, n: int, seed: int) -> list[Record]:
    """``n`` prompts, each one to four example comments joined (so lengths vary about four-fold),
    fewer when the prompt would not fit the model's context (tiny-random: 256 positions)."""
    rng = random.Random(seed)
    pool = comments()
    records = []
    for i in range(n):
        picked = rng.sample(pool, rng.randint(1, 4))
        while len(picked) > 1 and len(model.tokenizer(TEMPLATE.format(" ".join(picked)))["input_ids"]) > model.n_ctx:
            picked.pop()
        records.append(Record(text=TEMPLATE.format(" ".join(picked)), options=list(OPTIONS), id=f"t{i}"))
    return records


def final_block_path() -> str:
    """Which attention the final block ran at the read rows: the lean one (checked on the first
    batch against the module's own), the module's own, or none (the block ran whole)."""
    from steerunc.scoring.final_block import _LEAN_OK  # a benchmark may look inside

    if not _LEAN_OK:
        return "not used"
    return ", ".join(sorted({"lean attention" if ok else "the module's own attention" for ok in _LEAN_OK.values()}))


def three_quarter_layer(model: LoadedModel) -> int:
    """The block after which 3/4 of the model has run: 13 of 18 for Gemma 3 270M, 2 of 4 for tiny-random."""
    return max(0, math.ceil(0.75 * model.n_layers) - 1)


class Plain:
    """A plain classifier over the same records: one unsteered pass per batch, option rows at the end."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.unembed = Unembedding(model)
        sep_ids = [model.tokenizer([" " + o], add_special_tokens=False)["input_ids"][0] for o in OPTIONS]
        if any(len(ids) != 1 for ids in sep_ids):
            raise SystemExit(f"the plain pass needs single-token options; {OPTIONS} encode as {sep_ids}")
        self.option_ids = torch.tensor([ids[0] for ids in sep_ids], device=model.device)

    @torch.inference_mode()
    def __call__(self, records: list[Record], batch_size: int) -> list[dict[str, float]]:
        model = self.model
        out: list[dict[str, float]] = []
        decoder = model.hf_model.get_decoder()
        for lo in range(0, len(records), batch_size):
            chunk = records[lo : lo + batch_size]
            rows = model.tokenizer([r.text for r in chunk])["input_ids"]
            batch = collate(rows, [[len(r) - 1] for r in rows], model.pad_id, model.device)
            hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)[0]
            last = hidden[torch.arange(len(rows), device=model.device), batch.positions[:, 0]]
            probs = torch.softmax(self.unembed(last, self.option_ids), dim=-1).cpu().tolist()
            out.extend(dict(zip(OPTIONS, p)) for p in probs)
        return out


def qkv_share(model: LoadedModel) -> float:
    """The share of one block's multiply-adds per token spent in q/k/v (the rest: output projection, MLP)."""
    config = model.hf_model.config
    config = getattr(config, "text_config", config)
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = getattr(config, "num_key_value_heads", heads)
    qkv = d * head_dim * (heads + 2 * kv)
    rest = heads * head_dim * d + 3 * d * config.intermediate_size
    return qkv / (qkv + rest)


def floor_cost(n: int, layer: int, views: int, share: float) -> float:
    """steerunc's arithmetic cost over a plain pass's, steering after block ``layer`` of ``n`` with ``views`` = K+1."""
    if layer >= n - 1:
        return 1.0
    return (layer + 1 + (n - layer - 2) * views + views * share) / n


def profile_once(fn: Callable[[], Any], path: str) -> None:
    """cProfile one call of ``fn``; the top functions by own and by cumulative time go to ``path``."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    Path(path).write_text(text.getvalue(), encoding="utf-8")
    log(f"profile written to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random", help="'tiny-random' (default), 'default' or a model directory")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16")
    parser.add_argument("--batch-sizes", default="8,64,256", help="comma-separated (default 8,64,256)")
    parser.add_argument("--n", type=int, default=256, help="records per timed run (default 256; >= every batch size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one steerunc run (largest batch, default layer)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.n < max(sizes) or args.repeats < 1:
        raise SystemExit("--batch-sizes must be positive, --n at least the largest of them, --repeats >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    load_start = os.getloadavg()[0]
    log(f"loading {args.model} ...")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    records = make_records(model, args.n, args.seed)
    lengths = [len(ids) for ids in model.tokenizer([r.text for r in records])["input_ids"]]
    plain = Plain(model)
    layers = {"default": model.default_layer, "3/4 depth": three_quarter_layer(model)}
    share = qkv_share(model)
    rows: list[tuple[str, int, int, float, float, float, float, float]] = []
    ratio_256: float | None = None
    for where, layer in layers.items():
        vectors = default_vectors(model, layer)
        for size in sizes:
            scorer = Scorer(model, vectors, ScoreConfig(batch_size=size))
            ways: dict[str, Callable[[], Any]] = {
                "plain": lambda: plain(records, size),
                "steerunc": lambda: scorer.score(records),
            }
            for fn in ways.values():  # warm-up
                fn()
            seconds: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[float]] = {name: [] for name in ways}
            outputs: dict[str, Any] = {}
            for r in range(args.repeats):
                for name, fn in ways.items():
                    wall, cpu_seconds, outputs[name] = timed(model, fn)
                    seconds[name].append(wall)
                    cpu[name].append(cpu_seconds)
                log(f"layer {layer} ({where}) B={size} round {r + 1}/{args.repeats}: "
                    f"plain {seconds['plain'][-1]:.3f} s, steerunc {seconds['steerunc'][-1]:.3f} s")
            scored = [o for o in outputs["steerunc"] if isinstance(o, ScoredRecord)]
            if len(scored) != len(records):
                raise SystemExit("steerunc returned error records on the benchmark inputs")
            diff = max(abs(s.base_probs[o] - p[o]) for s, p in zip(scored, outputs["plain"]) for o in OPTIONS)  # type: ignore[index]
            plain_rate = args.n / statistics.median(seconds["plain"])
            ours_rate = args.n / statistics.median(seconds["steerunc"])
            cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu["steerunc"])
            floor = floor_cost(model.n_layers, layer, len(scorer.names) + 1, share)
            rows.append((where, layer, size, plain_rate, ours_rate, cpu_ratio, diff, floor))
            if where == "default" and size == 256:
                ratio_256 = ours_rate / plain_rate
            if args.profile and where == "default" and size == max(sizes):
                profile_once(ways["steerunc"], args.profile)

    p = print
    p(f"# bench_throughput: model={args.model} ({model.model_id}, {model.n_layers} blocks, d_model {model.d_model}) "
      f"device={model.device} dtype={str(model.dtype).replace('torch.', '')}")
    p(f"# machine: {cpu_name()}, nproc={os.cpu_count()}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
      f"load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")
    p(f"# inputs: n={args.n} moderation prompts, {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.1f}), "
      f"options {OPTIONS}; K={len(scorer.names)}, coeff={ScoreConfig().coeff}; median of {args.repeats} after a warm-up")
    p(f"# final block at the read rows: {final_block_path()}; q/k/v share of a block f={share:.3f}")
    p("# ratio = steerunc items/s / plain items/s (wall clock); cpu ratio: the same from this process's CPU seconds;")
    p("# floor = arithmetic cost of steerunc over plain at that layer; x floor = measured cost (1/ratio) / floor")
    p(f"{'layer':<16} {'batch':>6} {'plain items/s':>14} {'steerunc items/s':>17} {'ratio':>7} {'cpu ratio':>10} "
      f"{'floor':>6} {'x floor':>8} {'max |P_base - P_plain|':>23}")
    for where, layer, size, plain_rate, ours_rate, cpu_ratio, diff, floor in rows:
        p(f"{f'{layer} ({where})':<16} {size:>6} {plain_rate:>14.1f} {ours_rate:>17.1f} {ours_rate / plain_rate:>7.3f} "
          f"{cpu_ratio:>10.3f} {floor:>6.3f} {plain_rate / ours_rate / floor:>8.3f} {diff:>23.2e}")
    p(f"throughput_ratio_bs256={ratio_256:.3f}" if ratio_256 is not None else "throughput_ratio_bs256=nan")


if __name__ == "__main__":
    main()
