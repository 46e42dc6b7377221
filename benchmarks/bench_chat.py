"""Raw prompt vs the model's chat template, on calibration/dev parts only (issue #10 item 3).

For each data set, the first ``--n`` items of the *calibration* part
(benchmarks/quality_data.py; never the evaluated part) are read twice by the
plain model, no steering:

- ``raw``: the record's text as it is, each option read after a space;
- ``chat``: the text as the user turn of the tokenizer's chat template, the
  answer read at the start of the assistant turn (options without a space).

Each option is scored by its full log-probability (every token of it), so
options of several tokens are compared fairly in both forms. Printed per set
and form: accuracy, the majority-class accuracy, mean NLL of the label, how
often the most frequent prediction is made, and the AUROC with which the
max-probability separates errors; and the paired accuracy difference chat - raw
with a bootstrap 95 % interval.

    python benchmarks/bench_chat.py --model qwen2.5-coder-1.5b-instruct --n 40 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_data import load_task  # noqa: E402

from steerunc.judging.metrics import error_auroc  # noqa: E402
from steerunc.scoring.model import load_model  # noqa: E402
from steerunc.scoring.prompting import chat_text  # noqa: E402

DEFAULT_SETS = "moderation,sst2,hatexplain,liar"
#: ``moderation``: HateXplain's calibration posts asked as examples/moderation.jsonl asks (Yes = the
#: majority of annotators called the post hateful or offensive)
MODERATION = 'Comment: "{post}"\nIs this comment offensive? Answer Yes or No.\nAnswer:'


def _items(name: str, data_dir: str, n: int) -> list[dict[str, Any]]:
    if name != "moderation":
        return load_task(name, data_dir, n=1, n_cal=n).cal[:n]
    items = load_task("hatexplain", data_dir, n=1, n_cal=n).cal[:n]
    out = []
    for x in items:
        post = x["text"].split('"', 1)[1].rsplit('"', 1)[0]
        label = "No" if x["label"] == "normal" else "Yes"
        out.append({"id": x["id"], "text": MODERATION.format(post=post), "options": ["Yes", "No"], "label": label})
    return out


def _option_logprobs(model: Any, prompt_ids: list[int], options: list[list[int]]) -> list[float]:
    """Full log-probability of each option after the prompt. One row when every option is one
    token; otherwise one row per option. Only the positions read go through the output head."""
    single = all(len(ids) == 1 for ids in options)
    rows = [prompt_ids] if single else [prompt_ids + ids for ids in options]
    width = max(len(r) for r in rows)
    pad = model.pad_id
    batch = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    start = len(prompt_ids) - 1
    with torch.inference_mode():
        hidden = model.hf_model.model(input_ids=batch, attention_mask=mask).last_hidden_state
        if single:
            logp = torch.log_softmax(model.hf_model.lm_head(hidden[:, start]).float(), -1)[0]
            return [float(logp[ids[0]]) for ids in options]
        out = []
        for i, ids in enumerate(options):
            logp = torch.log_softmax(model.hf_model.lm_head(hidden[i, start : start + len(ids)]).float(), -1)
            out.append(float(sum(logp[j, t] for j, t in enumerate(ids))))
    return out


def _score(model: Any, item: dict[str, Any], chat: bool) -> dict[str, Any]:
    tok = model.tokenizer
    if chat:
        text, sep = chat_text(tok, item["text"]), ""
    else:
        text, sep = item["text"], " "
    prompt = list(tok(text, add_special_tokens=not chat)["input_ids"])
    options = [list(tok(sep + o, add_special_tokens=False)["input_ids"]) for o in item["options"]]
    lp = np.array(_option_logprobs(model, prompt, options))
    p = np.exp(lp - lp.max())
    p /= p.sum()
    pred = item["options"][int(p.argmax())]
    label = item["label"]
    return {"pred": pred, "correct": pred == label, "msp": float(p.max()),
            "nll": -math.log(max(float(p[item["options"].index(label)]), 1e-12))}


def _summary(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    correct = np.array([r["correct"] for r in rows], dtype=float)
    msp = np.array([r["msp"] for r in rows])
    top = Counter(r["pred"] for r in rows).most_common(1)[0]
    auroc = error_auroc(1 - msp, correct)  # None when every answer is right, or every one wrong
    return {
        "accuracy": float(correct.mean()),
        "majority": Counter(labels).most_common(1)[0][1] / len(labels),
        "nll": float(np.mean([r["nll"] for r in rows])),
        "top_prediction": f"{top[0]} {top[1] / len(rows):.2f}",
        "auroc_msp": float("nan") if auroc is None else auroc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--sets", default=DEFAULT_SETS)
    ap.add_argument("--n", type=int, default=80, help="calibration items per set (never evaluated ones)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the per-set figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    if getattr(model.tokenizer, "chat_template", None) is None:
        sys.exit(f"{args.model}: the tokenizer has no chat template")
    rng = np.random.default_rng(args.seed)
    results: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        items = _items(name, args.data_dir, args.n)
        labels = [x["label"] for x in items]
        t0 = time.perf_counter()
        raw = [_score(model, x, chat=False) for x in items]
        chat = [_score(model, x, chat=True) for x in items]
        seconds = time.perf_counter() - t0
        diff = np.array([c["correct"] for c in chat], float) - np.array([r["correct"] for r in raw], float)
        boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        results[name] = {"n": len(items), "raw": _summary(raw, labels), "chat": _summary(chat, labels),
                         "chat_minus_raw_accuracy": [float(diff.mean()), float(lo), float(hi)], "seconds": seconds}
        r, c = results[name]["raw"], results[name]["chat"]
        print(f"{name} (n={len(items)}, majority {r['majority']:.2f}, {seconds:.0f} s)")
        for form, s in (("raw", r), ("chat", c)):
            print(f"  {form:5s} accuracy {s['accuracy']:.3f}  nll {s['nll']:.3f}  auroc_msp {s['auroc_msp']:.3f}  "
                  f"most frequent prediction {s['top_prediction']}")
        print(f"  chat - raw accuracy {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model.model_id, "args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
