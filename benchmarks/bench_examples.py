"""Seconds per record and P(Yes) on examples/moderation.jsonl: ``python benchmarks/bench_examples.py MODEL [THREADS]``.

Loads MODEL on the CPU, builds (or reads the cached) default vectors, scores the
24 examples twice after a 2-record warm-up and reports the faster pass, then the
plain (base) and fused P(Yes) of each record beside its label.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from steerunc.scoring.model import load_model
from steerunc.records import ScoredRecord, record_from_json
from steerunc.scoring.scorer import Scorer, ScoreConfig
from steerunc.scoring.vectors_default import default_vectors

name = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
if threads:
    torch.set_num_threads(threads)
lines = [json.loads(l) for l in open("examples/moderation.jsonl")]
records = [record_from_json(d, i + 1) for i, d in enumerate(lines)]
t = time.perf_counter(); model = load_model(name, device="cpu"); t_load = time.perf_counter() - t
t = time.perf_counter(); vectors = default_vectors(model); t_vec = time.perf_counter() - t
scorer = Scorer(model, vectors, ScoreConfig())
scorer.score(records[:2])  # warm-up
t = time.perf_counter(); results = scorer.score(records); t_score = time.perf_counter() - t
t = time.perf_counter(); results = scorer.score(records); t_score2 = time.perf_counter() - t
rows = []
for number, (d, r) in enumerate(zip(lines, results), start=1):
    if not isinstance(r, ScoredRecord) or r.probs is None or r.base_probs is None:
        sys.exit(f"examples/moderation.jsonl:{number}: no option probabilities: {r}")
    rows.append((d["id"], d["label"], r.base_probs["Yes"], r.probs["Yes"]))
print(json.dumps({"model": name, "threads": torch.get_num_threads(), "layer": vectors.layer, "n_layers": model.n_layers,
                  "load_s": round(t_load, 1), "vectors_s": round(t_vec, 1), "score_s": [round(t_score, 2), round(t_score2, 2)],
                  "s_per_record": round(min(t_score, t_score2) / len(records), 3), "load_avg": os.getloadavg()}))
for row in rows:
    print("%s label=%-3s base P(Yes)=%.3f fused P(Yes)=%.3f" % row)
