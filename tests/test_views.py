"""The one-pass K+1 views: equal to separate passes, batch-invariant, hooks cleaned up."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steerunc.records import Record
from steerunc.scorer import ScoreConfig, Scorer
from steerunc.views import Unembedding, collate, sequential_view_logits, steered_hidden

from conftest import MODERATION

TEXTS = [
    "you are great",
    "honestly, nobody asked for your opinion on this, and frankly it shows that you never read anything",
    "ok",
    "what a lovely idea, thanks for sharing it with the whole group today",
]


def _records(options: list[str]) -> list[Record]:
    return [Record(text=MODERATION.format(t), options=options, id=str(i)) for i, t in enumerate(TEXTS)]


def _no_hooks_left(model: Any) -> bool:
    points = [hp for hp in model.bridge.hook_dict.values() if hp._forward_hooks]
    blocks = [b for b in model.bridge.blocks if b._forward_pre_hooks]
    return not points and not blocks


def test_one_pass_equals_k_plus_1_separate_passes(tiny: Any, tiny_vectors: Any) -> None:
    steer = tiny_vectors.scaled(0.5)
    rows = [tiny.tokenizer(MODERATION.format(t))["input_ids"] for t in TEXTS]
    batch = collate(rows, [[len(r) - 1] for r in rows], tiny.pad_id, tiny.device)
    hidden = steered_hidden(tiny, batch, steer, tiny_vectors.layer, start=1)
    logits = Unembedding(tiny)(hidden)[:, :, 0]  # [rows, K+1, vocab]
    for i, row in enumerate(rows):
        reference = sequential_view_logits(tiny, row, steer, tiny_vectors.layer, start=1)[:, -1]
        diff = (torch.log_softmax(logits[i], -1) - torch.log_softmax(reference, -1)).abs().max()
        assert float(diff) <= 1e-4
    assert _no_hooks_left(tiny)


@pytest.mark.parametrize("options", [["Yes", "No"], ["Yes", "No", "Unsure"]])
def test_alone_equals_inside_a_mixed_length_batch(tiny: Any, tiny_vectors: Any, options: list[str]) -> None:
    """Single- and multi-token options; records of different lengths padded together."""
    config = ScoreConfig(coeff=0.5, batch_size=64)
    batched = Scorer(tiny, tiny_vectors, config).score(_records(options))
    alone_scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=0.5, batch_size=1))
    for record, together in zip(_records(options), batched):
        (alone,) = alone_scorer.score([record])
        for name, value in alone.scores.items():
            assert abs(value - together.scores[name]) <= 1e-5, name
        for option in options:
            assert abs(alone.probs[option] - together.probs[option]) <= 1e-5
            assert abs(alone.base_probs[option] - together.base_probs[option]) <= 1e-5


def test_hooks_are_removed_after_an_exception(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    last_block = tiny.bridge.blocks[tiny.n_layers - 1]

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom inside the forward pass")

    monkeypatch.setattr(last_block.original_component, "forward", explode)
    rows = [tiny.tokenizer("hello there")["input_ids"]]
    batch = collate(rows, [[len(rows[0]) - 1]], tiny.pad_id, tiny.device)
    with pytest.raises(RuntimeError, match="boom"):
        steered_hidden(tiny, batch, tiny_vectors.scaled(1.0), tiny_vectors.layer)
    assert _no_hooks_left(tiny)
    monkeypatch.undo()
    # and the model still works, unsteered, afterwards
    hidden = steered_hidden(tiny, batch, tiny_vectors.scaled(0.0), tiny_vectors.layer)
    assert torch.allclose(hidden[:, 0], hidden[:, 1], atol=1e-6)


def test_bad_arguments_are_rejected(tiny: Any, tiny_vectors: Any) -> None:
    rows = [tiny.tokenizer("hi")["input_ids"]]
    batch = collate(rows, [[0]], tiny.pad_id, tiny.device)
    with pytest.raises(ValueError, match="layer"):
        steered_hidden(tiny, batch, tiny_vectors.scaled(1.0), tiny.n_layers)
    with pytest.raises(ValueError, match="steer must be"):
        steered_hidden(tiny, batch, torch.zeros(2, 3), 0)
