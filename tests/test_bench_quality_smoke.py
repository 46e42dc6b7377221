"""The quality benchmark harness end to end on tiny-random: convert, build vectors, score three
ways, calibrate, evaluate, write one JSON per run.

CI has no copy of the real data sets (several are research-only), so the run
reads small synthetic files in the real formats, written here. Where the real
data sit beside the checkout (../shared/data), every converter is checked on
them too (no model needed).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


def test_harness_smoke_on_tiny_random(tmp_path: Path, tiny: Any) -> None:
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
    # 2 free + 3 x 4 steering-score rows of error detection, 1 row of predictions, 1 row of the option prior
    assert rendered.stdout.count("| sst2 | 6 | ") == 16 and "centred vectors" in rendered.stdout
    assert "### What steering adds" in rendered.stdout and "### Fused vs base prediction" in rendered.stdout
    # what steering adds: the combination and calibrated msp, fitted on cal, as `steerunc evaluate` judges them
    adds = report["steering_adds"]
    assert set(adds["base"]) == set(adds["fused"]) == {"steer", "random", "prompt"}
    assert set(report["option_prior"]) == {"base", "fused"}
    steer = adds["base"]["steer"]
    if "skipped" not in steer:  # the tiny model's calibration split has errors and correct answers
        folder = out / "sst2-tiny-random-n6-k2" / "steer"
        cli = subprocess.run([sys.executable, "-c", "from steerunc.cli import main; main()", "evaluate", str(scored),
                              "--target", "base", "--calibrator", str(folder / "cal-base-combined.json"),
                              "--calibrator", str(folder / "cal-base-msp-logistic.json"),
                              "--bootstrap", "0", "--no-smooth", "--json"], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-2000:]
        rows = json.loads(cli.stdout)["scores"]
        assert rows["msp+mutual_info+mean_kl+flip_rate@logistic"]["auroc"] == pytest.approx(steer["combined"]["auroc"])
        assert rows["msp@platt"]["auroc"] == pytest.approx(steer["msp"]["auroc"])
    # --reuse-scored re-judges the complete scored files without loading the model, to the same numbers
    again = subprocess.run(cmd + ["--reuse-scored"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("no model loaded") == 2
    rejudged = json.loads((out / "sst2-tiny-random-n6-k2.json").read_text())
    for key in ("results", "steering_adds", "option_prior", "model", "settings"):
        assert rejudged[key] == report[key], key
    assert rejudged["command"] == report["command"] + " --reuse-scored"  # says its scored files are kept
    assert rejudged["timings_s"]["total"] == report["timings_s"]["total"] and "rejudge_total" in rejudged["timings_s"]
    # one scored file missing: the model loads and scores only that one, with the earlier run's vectors
    vectors = out / "sst2-tiny-random-n6-k2" / "vectors.safetensors"
    built = vectors.stat().st_mtime_ns
    (out / "sst2-tiny-random-n6-k2" / "scored-random-eval.jsonl").unlink()
    third = subprocess.run(cmd + ["--reuse-scored"], capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"reusing {vectors}" in third.stderr and "random/eval: 6 records" in third.stderr
    assert vectors.stat().st_mtime_ns == built
    rescored = json.loads((out / "sst2-tiny-random-n6-k2.json").read_text())
    assert rescored["results"] == report["results"]
    # a run interrupted part-way (no JSON written, a line cut short) is resumed after its whole lines
    part = out / "sst2-tiny-random-n6-k2" / "scored-random-eval.jsonl"
    whole = part.read_text().splitlines(keepends=True)
    part.write_text("".join(whole[:3]) + whole[3][:20])
    plain = out / "sst2-tiny-random-n6-k2" / "scored-prompt-cal.jsonl"
    plain_lines = plain.read_text().splitlines(keepends=True)
    plain.write_text("".join(plain_lines[:2]))
    (out / "sst2-tiny-random-n6-k2.json").unlink()
    refused = subprocess.run(cmd + ["--reuse-scored", "--layer", "0"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "made with layer 2, not 0" in refused.stderr  # started.json, no JSON
    resumed = subprocess.run(cmd + ["--reuse-scored"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "random/eval: resuming after 3 of 6 records" in resumed.stderr and "random/eval: 3 records" in resumed.stderr
    assert [json.loads(line)["id"] for line in part.read_text().splitlines()] == [
        json.loads(line)["id"] for line in whole]
    assert "prompt/cal: resuming after 2 of 6 records" in resumed.stderr
    for again_line, first_line in zip(plain.read_text().splitlines(), plain_lines):  # the same records, rescored
        again_scores, first_scores = json.loads(again_line)["scores"], json.loads(first_line)["scores"]
        assert again_scores == pytest.approx(first_scores, abs=1e-5)
    finished = json.loads((out / "sst2-tiny-random-n6-k2.json").read_text())
    assert finished["timings_s"]["score_random_eval"] is None
    assert finished["timings_s"]["resumed"]["score_random_eval"]["records_before"] == 3
    for score in ("msp", "mutual_info", "mean_kl"):
        assert finished["results"]["random"]["base"]["scores"][score]["auroc"] == pytest.approx(
            report["results"]["random"]["base"]["scores"][score]["auroc"], abs=1e-6)
    # part-way lines are not continued with vectors built again
    part.write_text("".join(whole[:3]))
    (out / "sst2-tiny-random-n6-k2" / "vectors.safetensors").unlink()
    rebuilt = subprocess.run(cmd + ["--reuse-scored"], capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "scored from the start" in rebuilt.stderr and "random/eval: 6 records" in rebuilt.stderr
    assert "resuming" not in rebuilt.stderr
    # scored files made at another layer are not mixed with new ones
    (out / "sst2-tiny-random-n6-k2" / "scored-random-eval.jsonl").unlink()
    fourth = subprocess.run(cmd + ["--reuse-scored", "--layer", "0"], capture_output=True, text=True, timeout=600)
    assert fourth.returncode != 0 and "made with layer 2, not 0" in fourth.stderr
    # vectors built from other annotations are built again
    from quality_scoring import reusable_vectors

    annotations = out / "sst2-tiny-random-n6-k2" / "annotations.jsonl"
    assert reusable_vectors(tiny, str(annotations), None, str(vectors)) is not None
    assert reusable_vectors(tiny, str(annotations), 0, str(vectors)) is None
    annotations.write_text(annotations.read_text() + "\n")
    assert reusable_vectors(tiny, str(annotations), None, str(vectors)) is None


def test_prompt_cost_times_both_ways_on_the_tasks_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench_prompt_cost: both ways timed on the split bench_quality evaluates, the projection
    of a full part is the per-record median times the records of that part."""
    import bench_prompt_cost

    data = _synthetic(tmp_path / "data")
    bench_prompt_cost.main(["--dataset", "chaosnli", "--model", "tiny-random", "--n", "3", "--repeats", "1",
                            "--k", "2", "--n-full", "30", "--n-cal", "20", "--data-dir", str(data)])
    out = capsys.readouterr().out.splitlines()
    assert "chaosnli, model tiny-random" in out[0] and "K=2" in out[0]
    assert out[1].startswith("# 3 evaluated records") and "['yes', 'maybe', 'no']" in out[1]
    rows = {line.split()[0]: line.split() for line in out[3:5]}
    steer, prompt = float(rows["(steer)"][-2]), float(rows["(prompt)"][-2])  # seconds per record
    assert steer > 0 and prompt > 0 and float(rows["(steer)"][-1]) == 1.0
    projected = out[5]  # "projected full part (20 + 30 records): steer S s, prompt P s; prompt/steer=R"
    assert projected.startswith("projected full part (20 + 30 records)")
    full_steer = float(projected.split("steer ")[1].split(" s")[0])
    full_prompt = float(projected.split("prompt ")[1].split(" s")[0])
    assert abs(full_steer - 50 * steer) <= 1 and abs(full_prompt - 50 * prompt) <= 1  # per record rounded to ms
    assert projected.endswith(f"prompt/steer={rows['(prompt)'][-1]}")
    # --compare-rows: the prompt ensemble timed a third way, its prompt run again for each option
    bench_prompt_cost.main(["--dataset", "chaosnli", "--model", "tiny-random", "--n", "3", "--repeats", "1",
                            "--k", "2", "--n-full", "30", "--n-cal", "20", "--data-dir", str(data), "--compare-rows"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[3:6]}
    assert set(rows) == {"(steer)", "(prompt)", "(rows)"} and float(rows["(rows)"][-2]) > 0
    same = out[6]  # "# (prompt) against (rows) on the 3 records: option scores differ by at most D; predictions ..."
    assert same.startswith("# (prompt) against (rows) on the 3 records") and same.endswith("the same on 3 of 3")
    assert float(same.split("at most ")[1].split(";")[0]) < 1e-4
    assert "; rows " in out[7] and "rows/prompt=" in out[7]
    with pytest.raises(SystemExit):
        bench_prompt_cost.main(["--dataset", "chaosnli", "--n", "0", "--data-dir", str(data)])
    with pytest.raises(SystemExit, match="only .* items can be evaluated"):  # said plainly, before the model loads
        bench_prompt_cost.main(["--dataset", "chaosnli", "--n", "100000", "--data-dir", str(data)])


def test_runs_are_named_by_the_model_default_means() -> None:
    """'default' has meant Gemma and then Qwen: a run is named by the model itself, and
    --reuse-scored refuses scored files another built-in model made."""
    import bench_quality
    from quality_resume import same_model

    from steerunc.scoring.registry import DEFAULT_TARGET, builtin

    assert bench_quality._parse(["--dataset", "sst2"]).model == DEFAULT_TARGET
    gemma = bench_quality._parse(["--dataset", "sst2", "--model", "gemma-3-270m"])
    same_model(gemma, {"id": builtin("gemma-3-270m").model_id}, "run")  # the same model: fine
    same_model(gemma, {}, "run")  # an earlier JSON without the model: nothing to compare
    with pytest.raises(SystemExit, match="made by .*, not by gemma-3-270m"):
        same_model(gemma, {"id": builtin(DEFAULT_TARGET).model_id}, "run")


def test_long_scoring_reports_progress(capsys: pytest.CaptureFixture[str]) -> None:
    """A part that scores for an hour says how far it is; never at 0 (no rate yet) nor at the end."""
    from quality_scoring import _Progress

    progress = _Progress("[run] steer/cal", total=4, every=0.0)
    for n in range(5):
        progress.done(n)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"[run] steer/cal: {n}/4 records" for n in (1, 2, 3)]
    assert all(line.endswith(" s left") for line in lines)
    quiet = _Progress("[run] steer/cal", total=4)  # the default: at most a line a minute
    for n in range(5):
        quiet.done(n)
    assert capsys.readouterr().err == ""


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


@pytest.mark.parametrize("architecture", ["gemma3", "qwen2"])
def test_prompt_ensemble_plain_pass_equals_a_zero_vector_scorer(
    architecture: str, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ensemble's plain scorer applies the head to view 0 only; a zero-vector view is that view
    again. Records with longer options run their prompt once, its keys and values kept for the
    options (``shared_prefix``): the same option scores as one full row per option, in a batch that
    mixes one-token and longer options, options of one token beside longer ones, and ragged lengths."""
    import quality_scoring
    import torch
    from conftest import tiny_qwen2
    from quality_scoring import _PlainScorer

    from steerunc.records import Record
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.scoring.vectors import SteeringVectors

    model = tiny if architecture == "gemma3" else tiny_qwen2(tmp_path)
    zero = SteeringVectors(names=["none"], vectors=torch.zeros(1, model.d_model), layer=model.n_layers - 1,
                           model_id=model.model_id, fingerprint=model.fingerprint, resid_norm=1.0, n_pairs=[0])
    full = Scorer(model, zero, ScoreConfig(coeff=0.0, center=False))
    records = [Record(text="Q: why?\nA:", options=["because of the rain", "no", "it is so, yes"], id="multi"),
               Record(text="Is it ok? Answer:", options=["Yes", "No"], id="single"),
               Record(text="Pick one letter, then more: ", options=["a", "bcd", "efghij"], id="one-token-option"),
               Record(text="Q: a much longer question, to make the prompts ragged?\nA:",
                      options=["yes", "no, not at all"], id="longer")]
    reference = full.score(records)
    calls: list[str] = []
    once = quality_scoring._prefix_once
    monkeypatch.setattr(quality_scoring, "_prefix_once", lambda m, item: calls.append(item.record.id) or once(m, item))
    for shared in (True, False):
        calls.clear()
        for ours, theirs in zip(_PlainScorer(model, 8, shared_prefix=shared).score(records), reference):
            assert ours.id == theirs.id
            assert ours.base_logits == pytest.approx(theirs.base_logits, abs=1e-4)  # type: ignore[union-attr]
            assert ours.scores["mutual_info"] == theirs.scores["mutual_info"] == 0.0  # type: ignore[union-attr]
        assert calls == ([r.id for r in records] if shared else [])  # the prompt-once path ran, or did not


def _scored_file(path: Path, seed: int, informative: bool, n: int = 400, options: list[str] | None = None) -> None:
    """Scored records (ids ``<seed>-<i>``) whose base logits lean towards "Yes" by 3 nats and whose
    errors ``mutual_info`` tells apart (``informative``) far better than msp does; otherwise it is noise.
    The same seed gives the same records, labels and predictions either way."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for i in range(n):
            truth = rng.normal(0.0, 2.0)
            label = "Yes" if rng.uniform() < 1 / (1 + np.exp(-truth)) else "No"
            logits = {"Yes": truth + 3.0, "No": 0.0}
            top = max(logits.values())
            total = sum(np.exp(u - top) for u in logits.values())
            probs = {k: float(np.exp(v - top) / total) for k, v in logits.items()}
            prediction = max(probs, key=probs.__getitem__)
            wrong = float(prediction != label)
            scores = {"msp": 1 - max(probs.values()), "entropy": 0.5, "fused_entropy": 0.5,
                      "mutual_info": (2.0 * wrong if informative else 0.0) + rng.normal(0.0, 0.7),
                      "mean_kl": rng.normal(), "flip_rate": float(rng.integers(0, 7)) / 6}
            record = {"id": f"{seed}-{i}", "mode": "options", "prediction": prediction, "probs": probs,
                      "base_prediction": prediction, "base_probs": probs, "logits": logits, "base_logits": logits,
                      "scores": scores, "label": label}
            if options is not None and i % 2:  # another option list on every other record
                record["base_logits"] = record["logits"] = {**logits, options[0]: -5.0}
            handle.write(json.dumps(record) + "\n")


def test_steering_adds_and_prior_on_synthetic_scored_files(tmp_path: Path) -> None:
    """quality_adds on files with a known answer: the combination beats calibrated msp (paired interval
    above 0) when mutual_info carries the errors, a control whose mutual_info is noise does worse than
    it, and the option prior undoes a 3-nat lean towards "Yes"."""
    from quality_adds import prior_effect, steering_adds

    files = {}
    for method, informative in (("steer", True), ("random", False)):
        for split, seed in (("cal", 1), ("eval", 2)):
            files[f"{method}_{split}"] = str(tmp_path / f"scored-{method}-{split}.jsonl")
            _scored_file(Path(files[f"{method}_{split}"]), seed, informative)
    adds = steering_adds(files, ["steer", "random"], str(tmp_path), n_boot=200, seed=0)
    steer, control = adds["base"]["steer"], adds["base"]["random"]
    diff = steer["auroc_combined_minus_msp"]
    assert diff["difference"] == pytest.approx(steer["combined"]["auroc"] - steer["msp"]["auroc"])
    # weights are per standard deviation of the oriented score (+ = the expected sign: more MI, less sure)
    assert diff["ci"][0] > 0.05 and steer["combined"]["weights"]["mutual_info"] > 1
    assert steer["msp"]["auroc"] == pytest.approx(steer["msp"]["raw_auroc"]) and steer["msp"]["slope"] > 0
    assert control["combined_minus_steer"]["auroc"]["ci"][1] < 0
    # the saved calibrators give the same AUROC through `steerunc evaluate`
    cli = subprocess.run([sys.executable, "-c", "from steerunc.cli import main; main()", "evaluate",
                          files["steer_eval"], "--target", "base", "--calibrator", str(tmp_path / "steer" /
                          "cal-base-combined.json"), "--bootstrap", "0", "--no-smooth", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]
    auroc = json.loads(cli.stdout)["scores"]["msp+mutual_info+mean_kl+flip_rate@logistic"]["auroc"]
    assert auroc == pytest.approx(steer["combined"]["auroc"])

    # evaluated records in pairs that share a group (GlobalOpinionQA's question): same figures,
    # intervals from resampled pairs
    ids = [json.loads(line)["id"] for line in Path(files["steer_eval"]).read_text().splitlines() if line.strip()]
    files["records_eval"] = str(tmp_path / "records-eval.jsonl")
    Path(files["records_eval"]).write_text("".join(json.dumps({"id": i, "group": f"q{n // 2}"}) + "\n"
                                                   for n, i in enumerate(ids)))
    grouped = steering_adds(files, ["steer", "random"], str(tmp_path), n_boot=200, seed=0)["base"]["steer"]
    assert grouped["auroc_combined_minus_msp"]["difference"] == diff["difference"]
    assert grouped["auroc_combined_minus_msp"]["ci"] != diff["ci"]
    prior = prior_effect(files["steer_cal"], files["steer_eval"], str(tmp_path / "prior"), n_boot=200)["base"]
    assert prior["accuracy_prior"] > prior["accuracy"] + 0.1 and prior["ci"][0] > 0 and prior["changed"] > 0
    assert prior["accuracy_prior"] >= prior["majority_accuracy"] and (tmp_path / "prior" / "prior-base.json").exists()
    mixed = tmp_path / "mixed.jsonl"
    _scored_file(mixed, 3, True, n=20, options=["Maybe"])
    assert prior_effect(str(mixed), str(mixed), str(tmp_path / "p2"))["base"]["skipped"] == (
        "records offer different option lists")


def test_sweep_signed_views_and_vector_reuse(tmp_path: Path, tiny: Any, tiny_vectors: Any) -> None:
    """A signed pass's +v views are the unsigned views; the sweep runs end to end, and a second
    run reuses the first's vectors only while the annotations are the same."""
    import sweep_quality
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.records import Record

    records = [Record(id=str(i), text=t, options=["Yes", "No"]) for i, t in enumerate(["a fine day", "so bad"])]
    config = ScoreConfig(coeff=0.5, center=True)
    plain, _ = sweep_quality._views(list(Scorer(tiny, tiny_vectors, config).score_iter(records)))
    signed_vectors = sweep_quality._signed(tiny_vectors, center=True)
    k = len(tiny_vectors.names)
    assert signed_vectors.names[:2] == [tiny_vectors.names[0] + "+", tiny_vectors.names[0] + "-"]
    both, _ = sweep_quality._views(list(Scorer(tiny, signed_vectors, ScoreConfig(coeff=0.5, center=False))
                                        .score_iter(records)))
    for z, z_plain in zip(sweep_quality._pick(both, True, False, k), plain):
        np.testing.assert_allclose(z, z_plain, atol=1e-5)
    assert all(z.shape[0] == 2 * k + 1 for z in sweep_quality._pick(both, True, True, k))
    # -v moves the other way: the two views differ from each other and from base
    z = both[0]
    assert not np.allclose(z[1], z[2], atol=1e-4)

    data = _synthetic(tmp_path / "data")
    out = tmp_path / "results" / "sweep.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sweep_quality.py"), "--dataset", "sst2", "--model",
           "tiny-random", "--n-dev", "6", "--k", "2", "--per-perspective", "3", "--layers", "1",
           "--coeffs", "0.5,0.25", "--signed-coeffs", "0.5", "--centers", "1", "--signed", "0,1", "--taus", "0.4", "--alphas", "0.2", "--ks", "2",
           "--data-dir", str(data), "--out", str(out)]
    for reuse in (False, True):
        done = subprocess.run(cmd + (["--reuse-vectors"] if reuse else []), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        sweep = json.loads(out.read_text())
        assert sweep["complete"] and sweep["vectors_reused"] == {"sst2": reuse}
        assert sorted((r["coeff"], r["signed"]) for r in sweep["rows"]) == [(0.25, False), (0.5, False), (0.5, True)]
        assert all(r["n_dev"] == 6 for r in sweep["rows"])
    # other annotations (more examples per perspective) at another layer: the first run's layer-1 file
    # is still A's while the annotations file the sweep writes is now B's; it must not be taken for B's
    other = [*cmd, "--per-perspective", "4"]
    for layers in ("2", "1"):
        done = subprocess.run([*other, "--layers", layers, "--reuse-vectors"], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(out.read_text())["vectors_reused"] == {"sst2": False}
    from quality_report import sweep_tables

    assert "| +v, -v |" in sweep_tables(json.loads(out.read_text()))
    # the shipped perspectives instead of the set's annotations: K is theirs, whatever --ks asks
    done = subprocess.run([*cmd, "--perspectives", "shipped", "--ks", "9"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = json.loads(out.read_text())
    assert {(r["perspectives"], r["k"]) for r in shipped["rows"]} == {("shipped", len(tiny_vectors.names))}
    assert "| shipped |" in sweep_tables(shipped)


def test_sweep_several_layers_at_once(tmp_path: Path, tiny: Any, tiny_vectors: Any) -> None:
    """Steering a set of layers: a later layer's vectors land on the views (not the base view), from
    the first steered position on, exactly as if that layer were steered alone; the sweep runs it."""
    from dataclasses import replace

    import torch

    import sweep_quality
    from steerunc.scoring.scorer import ScoreConfig, Scorer
    from steerunc.records import Record

    records = [Record(id=str(i), text=t, options=["Yes", "No"]) for i, t in enumerate(["a fine day", "so bad"])]
    config = ScoreConfig(coeff=0.5, center=False)
    later = tiny_vectors.layer  # 2 of 4 blocks
    alone, _ = sweep_quality._views(list(Scorer(tiny, tiny_vectors, config).score_iter(records)))
    zero = replace(tiny_vectors, vectors=torch.zeros_like(tiny_vectors.vectors), layer=later - 1)
    scorer = Scorer(tiny, zero, config)
    with sweep_quality._also_steering(tiny, scorer, {later: tiny_vectors.scaled(0.5)}):
        via_hook, _ = sweep_quality._views(list(scorer.score_iter(records)))
    for z, z_alone in zip(via_hook, alone):
        np.testing.assert_allclose(z, z_alone, atol=1e-5)
        assert not np.allclose(z[1:], z[0], atol=1e-4)  # the views moved
    earlier = replace(tiny_vectors, vectors=torch.flip(tiny_vectors.vectors, dims=[1]), layer=later - 1)
    scorer = Scorer(tiny, earlier, config)
    with sweep_quality._also_steering(tiny, scorer, {later: tiny_vectors.scaled(0.5)}):
        both, _ = sweep_quality._views(list(scorer.score_iter(records)))
    first_only, _ = sweep_quality._views(list(Scorer(tiny, earlier, config).score_iter(records)))
    for z, z_first, z_alone in zip(both, first_only, alone):
        np.testing.assert_allclose(z[0], z_alone[0], atol=1e-5)  # the base view is never steered
        assert not np.allclose(z[1:], z_first[1:], atol=1e-4) and not np.allclose(z[1:], z_alone[1:], atol=1e-4)
    with pytest.raises(ValueError, match="must come after"):
        sweep_quality._also_steering(tiny, scorer, {later - 1: tiny_vectors.scaled(0.5)})

    data = _synthetic(tmp_path / "data")
    out = tmp_path / "results" / "sweep.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep_quality.py"), "--dataset", "sst2", "--model", "tiny-random",
         "--n-dev", "6", "--k", "2", "--per-perspective", "3", "--layer-sets", "1+2", "--coeffs", "0.5",
         "--centers", "1", "--taus", "0.4", "--alphas", "0.2", "--ks", "2", "--data-dir", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads(out.read_text())
    assert sweep["layers"] == [] and sweep["layer_sets"] == ["1+2"]
    assert [(r["layer"], r["n_dev"]) for r in sweep["rows"]] == [("1+2", 6)]
    from quality_report import sweep_tables

    assert "| annotations | 1+2 | 0.5 |" in sweep_tables(sweep)


def test_layer_sets_are_refused_before_the_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --layer-sets stops the sweep when its arguments are read, not after minutes of loading."""
    import sweep_quality

    for bad in ("1+2,3", "20+x", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="two or more"):
            sweep_quality._layer_sets(bad)
        with pytest.raises(SystemExit):
            sweep_quality._parse(["--layer-sets", bad])
        assert "two or more layers joined by '+'" in capsys.readouterr().err
    assert sweep_quality._layer_sets("2+1,1+2+2") == [(1, 2), (1, 2)]
    assert sweep_quality._parse([]).layer_sets == []
    assert sweep_quality._parse(["--layer-sets", "20+26"]).layer_sets == [(20, 26)]


def test_refusing_a_runs_scored_files_with_the_same_fuse_moves_nothing(
    tmp_path: Path, tiny: Any, tiny_vectors: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/refuse_scored.py fuses stored view probabilities again: on files the current code
    scored, that must give back the stored scores (so what it reports for older runs is the fix)."""
    import refuse_scored

    from steerunc.records import Record
    from steerunc.scoring.fusion import FusionConfig
    from steerunc.scoring.scorer import ScoreConfig, Scorer

    fusion = FusionConfig(tau=0.5)
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=4.0, fusion=fusion))
    # multi-token options (summed log-probabilities: nearly certain, scores near 1e-40) and single-token ones
    choices = [["a long first answer", "No", "maybe so"], ["Yes", "No"]]
    records = []
    for i, word in enumerate(WORDS):
        options = choices[i % 2]
        records.append(Record(text=f"comment {word} {i}", options=options, label=options[i % 3 % len(options)], line=i + 1))
    run = tmp_path / "run"
    run.mkdir()
    rows = [r.to_json() for r in scorer.score_iter(records)]
    with open(run / "scored-steer-eval.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    settings = {"tau": fusion.tau, "alpha": fusion.alpha, "top_m": fusion.top_m, "fusion": fusion.method}
    (tmp_path / "run.json").write_text(json.dumps({"run": "run", "settings": settings}))
    for row in rows:
        again, clamped = refuse_scored.refuse(row, refuse_scored.fusion_of({"settings": settings}))
        assert not clamped and again["prediction"] == row["prediction"]
        for name, value in row["scores"].items():
            assert again["scores"][name] == pytest.approx(value, rel=1e-9, abs=0.0), name
    assert refuse_scored.main([str(tmp_path / "run.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("AUROC") == 6 and "largest relative change" in printed
    assert all(("(+0.0000)" in line or "(-0.0000)" in line) for line in printed.splitlines() if "AUROC" in line)
