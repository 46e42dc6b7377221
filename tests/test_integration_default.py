"""The real built-in models, end to end: the default (Qwen2.5-Coder-1.5B-Instruct) and
Gemma 3 270M. Slow: each converts once (Qwen about 5 minutes, Gemma 1-2).

Marked ``integration``; CI runs them. They use the user's cache (not the
tests' private one) so the conversions happen once per machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from click.testing import CliRunner

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def user_cache() -> Iterator[None]:
    saved = os.environ.pop("STEERUNC_CACHE_DIR", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["STEERUNC_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def qwen(user_cache: None) -> Any:
    from steerunc.scoring.model import load_model

    return load_model("default", device="cpu")


def test_default_model_is_qwen(qwen: Any) -> None:
    assert qwen.model_id == "qwen2.5-coder-1.5b-instruct-q4-k-m"
    assert (qwen.n_layers, qwen.d_model, qwen.default_layer) == (28, 1536, 20)  # the dev sweep's layer
    assert not qwen.prepends_bos  # Qwen names a BOS token it never adds: steering starts at 0
    ids = [qwen.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" Yes", " No", "Yes", "No")]
    assert ids == [[7414], [2308], [9454], [2753]]


def _score(args: list[str], lines: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    from steerunc.cli import main

    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["score", str(source), "--device", "cpu", "-q", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_score_examples_on_the_default_model(qwen: Any, tmp_path: Path) -> None:
    lines = (ROOT / "examples" / "moderation.jsonl").read_text().splitlines()[:6]
    records = _score([], lines, tmp_path)
    assert [r["id"] for r in records] == [json.loads(line)["id"] for line in lines]
    spreads = []
    for record in records:
        assert {"msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"} <= set(record["scores"])
        assert len(record["views"]) == 5  # the shipped perspectives
        assert abs(sum(record["probs"].values()) - 1) < 1e-5
        p_yes = [view["probs"]["Yes"] for view in record["views"].values()]
        spreads.append(max(p_yes) - min(p_yes))
    assert max(spreads) > 1e-3, f"perspectives do not move the answer at all: {spreads}"


def test_one_pass_equals_separate_passes_on_the_default_model(qwen: Any) -> None:
    from steerunc.scoring.vectors_default import default_vectors
    from steerunc.scoring.views import Unembedding, collate, sequential_view_logits, steered_hidden

    vectors = default_vectors(qwen)
    steer = vectors.scaled(0.25)
    texts = ["Comment: \"nice work\"\nIs this comment offensive? Answer:", "Claim: \"water boils at 50C\"\nTrue? Answer:"]
    rows = [qwen.tokenizer(t)["input_ids"] for t in texts]
    batch = collate(rows, [[len(r) - 1] for r in rows], qwen.pad_id, qwen.device)
    with torch.no_grad():
        logits = Unembedding(qwen)(steered_hidden(qwen, batch, steer, vectors.layer, start=0))[:, :, 0]
    options = torch.tensor([7414, 2308])  # " Yes", " No"
    for i, row in enumerate(rows):
        reference = sequential_view_logits(qwen, row, steer, vectors.layer, start=0)[:, -1]
        ours = torch.log_softmax(logits[i][:, options], -1)
        theirs = torch.log_softmax(reference[:, options], -1)
        assert float((ours - theirs).abs().max()) <= 1e-4


def test_gemma_still_works_by_name(user_cache: None, tmp_path: Path) -> None:
    lines = (ROOT / "examples" / "moderation.jsonl").read_text().splitlines()[:2]
    records = _score(["--model", "gemma-3-270m"], lines, tmp_path)
    assert [r["id"] for r in records] == [json.loads(line)["id"] for line in lines]
    for record in records:
        assert record["prediction"] in ("Yes", "No") and len(record["views"]) == 5
