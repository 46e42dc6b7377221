"""The quality benchmark harness end to end on tiny-random: convert, build vectors, score three
ways, calibrate, evaluate, write one JSON per run.

CI has no copy of the real data sets (several are research-only), so the run
reads small synthetic files in the real formats, written here. Where the real
data sit beside the checkout (../shared/data), every converter is checked on
them too (no model needed).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))

WORDS = ["good", "bad", "fine", "dull", "great", "awful", "warm", "cold", "fun", "slow"]


def _synthetic(root: Path) -> Path:
    """sst2 (GLUE TSV) and chaosnli (JSONL) files in their real formats, with made-up text."""
    rng = random.Random(0)
    (root / "sst2").mkdir(parents=True)
    rows = [f"a {rng.choice(WORDS)} film {i} .\t{rng.randint(0, 1)}" for i in range(400)]
    (root / "sst2" / "test.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "chaosnli").mkdir()
    with open(root / "chaosnli" / "chaosNLI_snli.jsonl", "w") as handle:
        for i in range(820):
            counts = [rng.randint(0, 60) for _ in range(3)]
            total = sum(counts) or 1
            dist = [c / total for c in counts]
            major = "enc"[max(range(3), key=dist.__getitem__)]
            example = {"premise": f"A {rng.choice(WORDS)} dog {i}.", "hypothesis": f"A {rng.choice(WORDS)} cat."}
            handle.write(json.dumps({"uid": f"u{i}", "label_dist": dist, "majority_label": major,
                                     "example": example}) + "\n")
    return root


def test_harness_smoke_on_tiny_random(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "data")
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_quality.py"), "--dataset", "sst2,chaosnli",
           "--model", "tiny-random", "--n", "6", "--n-cal", "6", "--k", "2", "--per-perspective", "3",
           "--bootstrap", "20", "--data-dir", str(data), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("sst2", "chaosnli"):
        report = json.loads((out / f"{name}-tiny-random-n6-k2.json").read_text())
        assert report["n_eval"] == 6 and report["settings"]["k"] == 2
        assert report["command"].startswith(f"python benchmarks/bench_quality.py --dataset {name} --n 6")
        for method in ("steer", "random", "prompt"):
            result = report["results"][method]
            assert result["base"]["n"] == 6 and set(result["base"]["scores"]) >= {"msp", "mutual_info"}
        # the free baselines are the same plain pass whichever way the views were made
        msp = {m: report["results"][m]["base"]["scores"]["msp"]["auroc"] for m in ("steer", "random", "prompt")}
        assert len({None if v is None else round(v, 6) for v in msp.values()}) == 1
        assert any(c.startswith("steerunc evaluate") for c in report["cli_equivalents"])
    human = json.loads((out / "chaosnli-tiny-random-n6-k2.json").read_text())["results"]["steer"]["human"]
    assert human["n"] == 6 and 0.0 <= human["base"]["js_distance"] <= 1.0
    # the scored files are what `steerunc evaluate` reads: the CLI agrees with the harness
    scored = out / "sst2-tiny-random-n6-k2" / "scored-steer-eval.jsonl"
    cli = subprocess.run([sys.executable, "-c", "from steerunc.cli import main; main()", "evaluate", str(scored),
                          "--target", "base", "--bootstrap", "0", "--no-smooth", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    via_cli = json.loads(cli.stdout)["scores"]["mutual_info"]["auroc"]
    report = json.loads((out / "sst2-tiny-random-n6-k2.json").read_text())
    assert via_cli == pytest.approx(report["results"]["steer"]["base"]["scores"]["mutual_info"]["auroc"])
    # the tables of docs/results.md render from these files: one row per score, the centring stated
    rendered = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality_report.py"),
                               *map(str, sorted(out.glob("*-tiny-random-n6-k2.json")))],
                              capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    # 2 free + 3 x 4 steering-score rows of error detection, 1 row of predictions
    assert rendered.stdout.count("| sst2 | 6 | ") == 15 and "centred vectors" in rendered.stdout


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="the real data sets are not beside this checkout")
@pytest.mark.parametrize("name", ["sst2", "hatexplain", "chaosnli", "liar", "truthfulqa", "globalopinionqa"])
def test_converters_on_the_real_data(name: str) -> None:
    from quality_data import load_task

    task = load_task(name, str(REAL_DATA), n=300, n_cal=200)
    assert len(task.eval) == 300 and len(task.cal) == 200
    per: dict[str, int] = {}
    for line in task.annotations:
        per[line["perspective"]] = per.get(line["perspective"], 0) + 1
    assert set(per) == set(task.perspectives) and max(per.values()) <= 50 and min(per.values()) >= 10
    records: list[dict[str, Any]] = task.cal + task.eval
    assert all(r["label"] in r["options"] for r in records)
    assert len({r["id"] for r in records}) == len(records)


def test_prompt_ensemble_plain_pass_equals_a_zero_vector_scorer(tiny: Any) -> None:
    """The ensemble's plain scorer applies the head to view 0 only; a zero-vector view is that view again."""
    import torch
    from quality_scoring import _PlainScorer

    from steerunc.records import Record
    from steerunc.scorer import ScoreConfig, Scorer
    from steerunc.vectors import SteeringVectors

    zero = SteeringVectors(names=["none"], vectors=torch.zeros(1, tiny.d_model), layer=tiny.n_layers - 1,
                           model_id=tiny.model_id, fingerprint=tiny.fingerprint, resid_norm=1.0, n_pairs=[0])
    full = Scorer(tiny, zero, ScoreConfig(coeff=0.0, center=False))
    records = [Record(text="Q: why?\nA:", options=["because of the rain", "no", "it is so, yes"], id="multi"),
               Record(text="Is it ok? Answer:", options=["Yes", "No"], id="single")]
    for ours, theirs in zip(_PlainScorer(tiny, 8).score(records), full.score(records)):
        assert ours.base_logits == pytest.approx(theirs.base_logits, abs=1e-5)  # type: ignore[union-attr]
        assert ours.scores["mutual_info"] == theirs.scores["mutual_info"] == 0.0  # type: ignore[union-attr]
