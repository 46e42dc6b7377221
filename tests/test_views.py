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


def test_head_runs_in_float32_for_a_bfloat16_model(tiny_vectors: Any) -> None:
    """A bfloat16 model's scores differ from the float32 model's only by what its bfloat16 body
    explains: the output head (and everything after it) runs in float32."""
    from steerunc.model import load_model

    fp32 = load_model("tiny-random", device="cpu", dtype="float32")
    bf16 = load_model("tiny-random", device="cpu", dtype="bfloat16")
    config = ScoreConfig(coeff=0.5)
    records = _records(["Yes", "No", "Unsure"])
    reference = Scorer(fp32, tiny_vectors, config).score(records)
    scorer = Scorer(bf16, tiny_vectors, config)
    got = scorer.score(records)
    # what the bfloat16 body alone gives: its hidden states through a float32 copy of the head
    weight = bf16.hf_model.get_output_embeddings().weight.detach().float()  # the bf16 head's own values
    softcap = getattr(bf16.hf_model.config, "final_logit_softcapping", None)

    def head32(h: torch.Tensor) -> torch.Tensor:
        logits = h.float() @ weight.T
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    for record, out, ref in zip(records, got, reference):
        (prepared,) = [scorer._prepare(record)]
        batch = collate(prepared.rows, prepared.read, bf16.pad_id, bf16.device)
        hidden = steered_hidden(bf16, batch, scorer.steer, scorer.layer, scorer.start)
        body_only = torch.stack(
            [
                (torch.log_softmax(head32(hidden[row, :, : len(ids)]), -1)
                 .gather(-1, torch.tensor(ids).expand(hidden.shape[1], -1).unsqueeze(-1))[..., 0]).sum(-1)
                for row, ids in enumerate(prepared.option_ids or [])
            ],
            dim=-1,
        )
        from steerunc.fusion import fuse

        expected = fuse(body_only, config.fusion)
        for name in out.scores:
            assert out.scores[name] == pytest.approx(float(expected.scores[name]), rel=1e-4, abs=1e-6), name
        # and the float32 model is no further away than the bfloat16 body puts it
        for name in ("mutual_info", "mean_kl"):
            assert abs(out.scores[name] - ref.scores[name]) <= abs(float(expected.scores[name]) - ref.scores[name]) + 1e-6


def test_unembedding_is_float32_arithmetic_on_bfloat16_weights() -> None:
    from steerunc.model import load_model

    bf16 = load_model("tiny-random", device="cpu", dtype="bfloat16")
    head = Unembedding(bf16)
    hidden = torch.randn(3, bf16.d_model, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 4
    exact = hidden.float() @ head.weight.float().T
    assert head(hidden).dtype == torch.float32
    assert torch.allclose(head(hidden), exact, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([5, 7, 11])
    assert torch.allclose(head(hidden, ids), exact[:, ids], rtol=1e-5, atol=1e-5)


def test_steering_starts_at_0_when_the_tokenizer_does_not_prepend_bos(tiny: Any, tiny_vectors: Any) -> None:
    """A tokenizer may name a BOS token and never add it (Qwen's does): then position 0 is text
    and is steered too."""
    import copy
    import dataclasses

    from tokenizers import processors

    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    model = dataclasses.replace(tiny, tokenizer=tokenizer)
    assert model.bos_id is not None and not model.prepends_bos and tiny.prepends_bos
    scorer = Scorer(model, tiny_vectors, ScoreConfig(coeff=0.5))
    assert scorer.start == 0 and Scorer(tiny, tiny_vectors, ScoreConfig(coeff=0.5)).start == 1
    text = MODERATION.format("you are great")
    out = scorer.score_text(text, options=["Yes", "No"])
    ids = tokenizer(text)["input_ids"]
    assert ids[0] != tiny.bos_id
    reference = sequential_view_logits(model, ids, scorer.steer, scorer.layer, start=0)[:, -1]
    yes, no = (tokenizer(" " + o, add_special_tokens=False)["input_ids"][0] for o in ("Yes", "No"))
    p_yes = torch.softmax(reference[:, [yes, no]], -1)[:, 0]
    assert out.base_probs["Yes"] == pytest.approx(float(p_yes[0]), abs=1e-5)
    for k, name in enumerate(scorer.names):
        assert out.views[name]["probs"]["Yes"] == pytest.approx(float(p_yes[k + 1]), abs=1e-5)
