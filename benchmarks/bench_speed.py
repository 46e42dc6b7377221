"""Speed and memory: K+1 steered views in one pass vs. the seed's K+1 separate passes.

    python benchmarks/bench_speed.py --model default --n 24 --k 6
    python benchmarks/bench_speed.py --model tiny-random
    python benchmarks/bench_speed.py --model default --device cuda

On the same generated inputs (moderation prompts of 30-80 tokens, options Yes / No)
one run times, after a warm-up, ``--repeats`` rounds of (c), (b), (a) in turn:

(a) sequential: the seed-style reference, K+1 separate batch-of-one passes per item
    with full-vocabulary logits at every position (``views.sequential_view_logits``);
(b) steerunc:   ``Scorer.score`` (batched, prefix shared, option rows of the head only);
(c) plain:      one unsteered pass per batch of the same records (same batches, right
    padding), full-vocabulary logits at the last position only.

Medians are reported. ``max_abs_diff`` is the largest |(b) − (a)| over items and views
(base + K) of the option log-probabilities renormalised over the options
(log_softmax of the option logits, temperature 1). ``peak_rss_mb`` is the peak
resident memory of a separate process that loads the model and runs (b) once; the
per-token row scores a 512-token continuation in another process of its own, so each
peak is that work's alone. The last line is::

    speedup_vs_sequential=<a/b> overhead_vs_single_pass=<b/c> max_abs_diff=<x> peak_rss_mb=<m>

Progress goes to stderr; the table and the last line to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from steerunc.scoring.model import LoadedModel, load_model
from steerunc.records import ScoredRecord
from steerunc.scoring.scorer import ScoreConfig, Scorer
from steerunc.scoring.vectors import SteeringVectors
from steerunc.scoring.vectors_default import default_vectors
from steerunc.scoring.views import Unembedding, collate, sequential_view_logits

OPTIONS = ["Yes", "No"]
TEMPLATE = 'Comment: "{}"\nIs this comment offensive? Answer Yes or No.\nAnswer:'
CLAUSES = [
    "you clearly have no idea what you are talking about",
    "thanks for sharing this, it really helped me understand the problem",
    "people like you are the reason this forum is falling apart",
    "I disagree with the argument but I respect the effort you put into it",
    "nobody asked for your opinion and nobody wants it",
    "what a lovely photo of the harbour at sunset",
    "go back to where you came from",
    "this is the dumbest thing I have read all week",
    "the referee made a terrible call in the second half",
    "could you post the recipe, it looks delicious",
    "shut up and stop wasting everyone's time",
    "the update broke my settings again, please fix it",
    "you people never learn anything, do you",
    "great job on the release, the new features are fantastic",
    "typical of your kind to whine about everything",
    "I think the mayor's plan will raise taxes for families",
]
JOINERS = [", and ", ". ", ", but ", "; ", " because "]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over fork and exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB; macOS: bytes


def sync(model: LoadedModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def n_tokens(model: LoadedModel, text: str) -> int:
    return len(model.tokenizer(text)["input_ids"])


def make_inputs(model: LoadedModel, n: int, seed: int, lo: int = 30, hi: int = 80) -> list[str]:
    """Moderation prompts like examples/moderation.jsonl, grown clause by clause towards a
    random length in [lo, hi] tokens (never past hi once the prompt has lo tokens)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target = rng.randint(lo, hi)
        comment = rng.choice(CLAUSES).capitalize()
        while n_tokens(model, TEMPLATE.format(comment)) < target:
            longer = comment + rng.choice(JOINERS) + rng.choice(CLAUSES)
            if n_tokens(model, TEMPLATE.format(longer)) > hi and n_tokens(model, TEMPLATE.format(comment)) >= lo:
                break
            comment = longer
        texts.append(TEMPLATE.format(comment + rng.choice([".", "!", "?"])))
    return texts


def make_continuation(model: LoadedModel, length: int, seed: int) -> str:
    """A continuation of exactly ``length`` tokens (as encoded after the prompt)."""
    rng = random.Random(seed)
    text = ""
    while len(model.tokenizer(text, add_special_tokens=False)["input_ids"]) < length + 8:
        text += " " + rng.choice(CLAUSES).capitalize() + rng.choice([".", "!", "?"])
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    for cut in range(length, length + 8):  # decoding and re-encoding can merge a token or two
        candidate = model.tokenizer.decode(ids[:cut])
        if len(model.tokenizer(candidate, add_special_tokens=False)["input_ids"]) == length:
            return candidate
    return model.tokenizer.decode(ids[:length])


def make_vectors(model: LoadedModel, k: int, seed: int) -> SteeringVectors:
    """The first k default perspectives; past the shipped ones, random directions of the same
    mean norm (seeded). ``Scorer`` uses unit directions times ``coeff``, so only directions matter."""
    base = default_vectors(model)
    if k <= len(base.names):
        return replace(base, names=base.names[:k], vectors=base.vectors[:k], n_pairs=base.n_pairs[:k])
    gen = torch.Generator().manual_seed(seed)
    extra = torch.randn((k - len(base.names), base.d_model), generator=gen)
    extra = extra / extra.norm(dim=1, keepdim=True) * base.vectors.norm(dim=1).mean()
    names = base.names + [f"random-{i + 1}" for i in range(extra.shape[0])]
    return replace(base, names=names, vectors=torch.cat([base.vectors, extra]), n_pairs=base.n_pairs + [0] * len(extra))


def option_ids(model: LoadedModel) -> list[int]:
    ids = [model.tokenizer(" " + option, add_special_tokens=False)["input_ids"] for option in OPTIONS]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"the benchmark needs single-token options; {OPTIONS} encode as {ids}")
    return [i[0] for i in ids]


def scorer_logprobs(record: ScoredRecord, names: list[str]) -> torch.Tensor:
    """[K+1, C] option log-probs at temperature 1 from a record's view probabilities (which
    steerunc outputs at temperature 1; renormalised over the options)."""
    rows = [record.base_probs or {}] + [record.views[name]["probs"] for name in names]
    table = torch.tensor([[row[o] for o in OPTIONS] for row in rows], dtype=torch.float64)
    return torch.log_softmax(table.log(), dim=-1)


def timed(model: LoadedModel, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    sync(model)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(model)
    return time.perf_counter() - wall, time.process_time() - cpu, out


# --------------------------------------------------------------- the three ways
def run_sequential(model: LoadedModel, rows: list[list[int]], scorer: Scorer, opts: list[int]) -> torch.Tensor:
    out = []
    for row in rows:
        logits = sequential_view_logits(model, row, scorer.steer, scorer.layer, scorer.start)  # [K+1, T, V]
        out.append(torch.log_softmax(logits[:, -1, opts].double(), dim=-1))
    return torch.stack(out).cpu()


def run_plain(model: LoadedModel, rows: list[list[int]], batch_size: int, unembed: Unembedding) -> torch.Tensor:
    decoder = model.hf_model.get_decoder()
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            batch = collate(chunk, [[len(r) - 1] for r in chunk], model.pad_id, model.device)
            hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)[0]
            last = hidden[torch.arange(len(chunk), device=model.device), batch.positions[:, 0]]
            out.append(unembed(last))  # [B, V]: full vocabulary, last position only
    return torch.cat(out)


# ------------------------------------------------------------- child processes
def child(args: argparse.Namespace) -> None:
    """Load, run one kind of scoring once, report time and peak RSS as one JSON line."""
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    loaded = peak_rss_mb()
    scorer = Scorer(model, make_vectors(model, args.k, args.seed), ScoreConfig(batch_size=args.batch_size))
    result: dict[str, Any] = {"rss_after_load_mb": loaded}
    if args.child == "options":
        texts = make_inputs(model, args.n, args.seed)
        scorer.score(texts, options=OPTIONS)
    else:
        prompt = "A reader wrote in the comment thread:"
        length = min(args.cont_tokens, model.n_ctx - n_tokens(model, prompt) - 1)  # tiny-random: 256 positions
        continuation = make_continuation(model, length, args.seed)
        ids = model.tokenizer(prompt + continuation)["input_ids"]
        unembed = Unembedding(model)
        run_plain(model, [ids], 1, unembed)  # every weight touched once: the floor of any full-vocabulary work
        result["rss_model_resident_mb"] = peak_rss_mb()
        scorer.score_text(prompt, continuation=continuation[:200])  # warm-up, short
        times = []
        for _ in range(args.cont_repeats):
            wall, _, out = timed(model, lambda: scorer.score_text(prompt, continuation=continuation))
            times.append(wall)
        plain = statistics.median(timed(model, lambda: run_plain(model, [ids], 1, unembed))[0] for _ in range(3))
        result.update(seconds=statistics.median(times), tokens=len(out.tokens or []),
                      plain_seconds=plain, chunk=scorer._chunk_positions())
    result["peak_rss_mb"] = peak_rss_mb()
    if model.device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(model.device) / 2**20
    print(json.dumps(result), flush=True)


def in_child(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, "--model", args.model,
               "--device", args.device, "--dtype", args.dtype, "--n", str(args.n), "--k", str(args.k),
               "--seed", str(args.seed), "--batch-size", str(args.batch_size),
               "--cont-tokens", str(args.cont_tokens), "--cont-repeats", str(args.cont_repeats)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="'default', 'tiny-random' or a model directory")
    parser.add_argument("--n", type=int, default=24, help="records (default 24)")
    parser.add_argument("--k", type=int, default=6, help="steering vectors (default 6)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, float16, bfloat16")
    parser.add_argument("--batch-size", type=int, default=8, help="records per steered pass (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--cont-tokens", type=int, default=512, help="continuation length of the per-token row")
    parser.add_argument("--cont-repeats", type=int, default=1, help="timed runs of the per-token row")
    parser.add_argument("--skip-per-token", action="store_true", help="leave out the per-token row")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["options", "continuation"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    load_start = os.getloadavg()[0]
    log(f"loading {args.model} ...")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    vectors = make_vectors(model, args.k, args.seed)
    config = ScoreConfig(batch_size=args.batch_size)
    scorer = Scorer(model, vectors, config)
    unembed = Unembedding(model)
    texts = make_inputs(model, args.n, args.seed)
    rows = [model.tokenizer(t)["input_ids"] for t in texts]
    lengths = [len(r) for r in rows]
    opts = option_ids(model)

    ways: dict[str, Callable[[], Any]] = {
        "plain": lambda: run_plain(model, rows, args.batch_size, unembed),
        "steerunc": lambda: scorer.score(texts, options=OPTIONS),
        "sequential": lambda: run_sequential(model, rows, scorer, opts),
    }
    log("warm-up ...")
    run_sequential(model, rows[:1], scorer, opts)
    ways["plain"]()
    ways["steerunc"]()
    wall: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, Any] = {}
    for r in range(args.repeats):
        for name, fn in ways.items():
            seconds, cpu_seconds, outputs[name] = timed(model, fn)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            log(f"round {r + 1}/{args.repeats}: {name} {seconds:.2f} s")
    a, b, c = (statistics.median(wall[n]) for n in ("sequential", "steerunc", "plain"))

    reference = outputs["sequential"]  # [n, K+1, C]
    ours = torch.stack([scorer_logprobs(rec, scorer.names) for rec in outputs["steerunc"]])
    max_abs_diff = float((ours - reference).abs().max())
    plain_lp = torch.log_softmax(outputs["plain"][:, opts].double().cpu(), dim=-1)
    plain_diff = float((plain_lp - reference[:, 0]).abs().max())
    main_peak = peak_rss_mb()

    log("memory: options scoring in a process of its own ...")
    mem = in_child(args, "options")
    per_token = None
    if not args.skip_per_token:
        log(f"per-token row: a {args.cont_tokens}-token continuation in a process of its own ...")
        per_token = in_child(args, "continuation")

    p = print
    p(f"# bench_speed: model={args.model} ({model.model_id}, {model.n_layers} blocks, d_model {model.d_model}, "
      f"vocab {unembed.vocab_size}) device={model.device} dtype={str(model.dtype).replace('torch.', '')}")
    p(f"# machine: {cpu_name()}, nproc={os.cpu_count()}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
      f"load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")
    p(f"# inputs: n={args.n} moderation prompts, {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.1f}), "
      f"options {OPTIONS}; K={len(scorer.names)}, layer={scorer.layer}, coeff={config.coeff}, batch_size={args.batch_size}; "
      f"median of {args.repeats} after a warm-up")
    p(f"{'way':<44} {'wall s':>9} {'cpu s':>9} {'per item ms':>12} {'vs (b)':>8}")
    labels = {"sequential": "(a) sequential: K+1 batch-1 passes, full logits",
              "steerunc": "(b) steerunc Scorer (one pass, K+1 views)",
              "plain": "(c) plain pass, last-position logits"}
    for name in ("sequential", "steerunc", "plain"):
        w = statistics.median(wall[name])
        p(f"{labels[name]:<44} {w:>9.3f} {statistics.median(cpu[name]):>9.3f} {1000 * w / args.n:>12.1f} {w / b:>8.2f}")
    p(f"# max |option log-prob (b) - (a)| over {args.n} items x {len(scorer.names) + 1} views: {max_abs_diff:.2e}; "
      f"(c) vs (a) base view: {plain_diff:.2e}")
    extra = f", CUDA peak {mem['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in mem else ""
    p(f"# memory: (b) alone peak RSS {mem['peak_rss_mb']:.0f} MB (after loading the model {mem['rss_after_load_mb']:.0f} MB){extra}; "
      f"this process, with (a), {main_peak:.0f} MB")
    if per_token is not None:
        extra = f", CUDA peak {per_token['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in per_token else ""
        p(f"per-token mode, {per_token['tokens']}-token continuation: {per_token['seconds']:.2f} s "
          f"({1000 * per_token['seconds'] / max(per_token['tokens'], 1):.1f} ms/token, chunks of {per_token['chunk']} positions), "
          f"peak RSS {per_token['peak_rss_mb']:.0f} MB (after load {per_token['rss_after_load_mb']:.0f} MB, after one "
          f"plain pass with all weights resident {per_token['rss_model_resident_mb']:.0f} MB){extra}; "
          f"plain pass over the same text {per_token['plain_seconds']:.2f} s")
    p(f"speedup_vs_sequential={a / b:.2f} overhead_vs_single_pass={b / c:.2f} "
      f"max_abs_diff={max_abs_diff:.2e} peak_rss_mb={mem['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
