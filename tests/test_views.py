"""The one-pass K+1 views: equal to separate passes, batch-invariant, hooks cleaned up."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steerunc.records import Record
from steerunc.scoring.scorer import ScoreConfig, Scorer
from steerunc.scoring.views import Unembedding, collate, sequential_view_logits, steered_hidden

from conftest import MODERATION, load_tiny, tiny_qwen2

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
    block = model.bridge.blocks[model.n_layers - 1]  # the final block's read-rows forwards are undone too
    inner = block.attn.original_component
    swapped = "forward" in block.__dict__ or "forward" in block.attn.__dict__
    swapped = swapped or "_steerunc_read" in inner.__dict__ or "_config" in vars(inner.config)
    return not points and not blocks and not swapped


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
    fp32 = load_tiny("float32")
    bf16 = load_tiny("bfloat16")
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
        (item,) = scorer._prepare([record])
        plan = scorer.readouts["options"].plan([item])
        batch = collate(plan.rows, plan.read, bf16.pad_id, bf16.device)
        hidden = steered_hidden(bf16, batch, scorer.steer, scorer.layer, scorer.start)
        body_only = torch.stack(
            [
                (torch.log_softmax(head32(hidden[row, :, : len(ids)]), -1)
                 .gather(-1, torch.tensor(ids, device=hidden.device).expand(hidden.shape[1], -1).unsqueeze(-1))[..., 0]
                 ).sum(-1)
                for row, ids in enumerate(item.option_ids or [])
            ],
            dim=-1,
        )
        from steerunc.scoring.fusion import fuse

        expected = fuse(body_only, config.fusion)
        for name in out.scores:
            assert out.scores[name] == pytest.approx(float(expected.scores[name]), rel=1e-4, abs=1e-6), name
        # and the float32 model is no further away than the bfloat16 body puts it
        for name in ("mutual_info", "mean_kl"):
            assert abs(out.scores[name] - ref.scores[name]) <= abs(float(expected.scores[name]) - ref.scores[name]) + 1e-6


def test_unembedding_is_float32_arithmetic_on_bfloat16_weights() -> None:
    bf16 = load_tiny("bfloat16")
    head = Unembedding(bf16)
    hidden = torch.randn(3, bf16.d_model, generator=torch.Generator().manual_seed(0)).to(bf16.device, torch.bfloat16) * 4
    exact = hidden.float() @ head.weight.float().T
    assert head(hidden).dtype == torch.float32
    assert torch.allclose(head(hidden), exact, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([5, 7, 11], device=bf16.device)
    assert torch.allclose(head(hidden, ids), exact[:, ids], rtol=1e-5, atol=1e-5)
    per_item = torch.tensor([[5, 7], [11, 5], [7, 7]], device=bf16.device)  # other tokens for each row
    assert torch.allclose(head(hidden, per_item), exact.gather(1, per_item), rtol=1e-5, atol=1e-5)


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


class _Heads(torch.nn.Module):
    """What the read-rows attention reads from a transformers attention module."""

    def __init__(self) -> None:
        super().__init__()
        self.head_dim = 8


def _eager(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Every query row against every key: the reference ([rows, heads, T, D] -> [rows, T, heads, D])."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = (query @ key.transpose(2, 3)) * query.shape[-1] ** -0.5
    scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
    return (torch.softmax(scores, -1) @ value).transpose(1, 2)


@pytest.mark.parametrize("mask_kind", ["float-4d", "bool-4d", "none", "padding-2d"])
def test_read_rows_attention_equals_every_row_at_the_read_rows(mask_kind: str) -> None:
    """Grouped-query heads, a sliding window, padded rows, several read positions (one repeated)."""
    from steerunc.scoring.final_block import rows_attention as _rows_attention

    gen = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, width, dim, window = 3, 4, 2, 9, 8, 4
    query, key, value = (torch.randn(rows, h, width, dim, generator=gen) for h in (heads, kv_heads, kv_heads))
    lengths = torch.tensor([9, 6, 4])
    positions = torch.arange(width)
    real = positions[None, :] < lengths[:, None]  # right padding
    allowed = (positions[None, None, :] <= positions[None, :, None]) & real[:, None, :]
    if mask_kind == "none":
        real = torch.ones_like(real)
        allowed = positions[None, None, :] <= positions[None, :, None]
        allowed = (allowed & (positions[None, None, :] > positions[None, :, None] - window)).expand(rows, -1, -1)
    reference = _eager(query, key, value, allowed)
    mask: torch.Tensor | None = {
        "float-4d": torch.zeros(rows, 1, width, width).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min),
        "bool-4d": allowed[:, None],
        "none": None,
        "padding-2d": real.long(),
    }[mask_kind]
    module = _Heads()
    module.__dict__["_steerunc_read"] = torch.tensor([[8, 2, 2], [5, 0, 3], [3, 3, 3]])
    out, _ = _rows_attention(module, query, key, value, mask, sliding_window=window if mask_kind == "none" else None)
    for r, read in enumerate(module.__dict__["_steerunc_read"].tolist()):
        for p in read:
            assert torch.allclose(out[r, p], reference[r, p], atol=1e-5)
        unread = [p for p in range(width) if p not in read]
        assert float(out[r, unread].abs().max()) == 0.0


def test_the_final_block_scores_only_the_read_rows(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steering before the final block: the first batch scores its read rows through the model's own
    attention forward (dispatched to the read-rows function), which checks the lean attention once;
    later batches use the lean one. The bridge's own all-rows attention never runs for that block."""
    import weakref

    import steerunc.scoring.final_block as final_module

    seen: list[tuple[int, ...]] = []
    original = final_module.rows_attention

    def spy(module: Any, query: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(tuple(module.__dict__["_steerunc_read"].shape))
        return original(module, query, *args, **kwargs)

    monkeypatch.setitem(final_module.AttentionInterface._global_mapping, final_module.ROWS, spy)
    monkeypatch.setattr(final_module, "_LEAN_OK", weakref.WeakKeyDictionary())
    final = tiny.bridge.blocks[tiny.n_layers - 1].attn
    bridge_calls: list[int] = []
    handle = final.hook_attn_scores.register_forward_hook(lambda *a: bridge_calls.append(1))
    steer = tiny_vectors.scaled(0.5)
    rows = [tiny.tokenizer(MODERATION.format(t))["input_ids"] for t in TEXTS]
    read = [[len(r) - 1] for r in rows]
    batch = collate(rows, read, tiny.pad_id, tiny.device)
    try:
        first = steered_hidden(tiny, batch, steer, tiny.n_layers - 2, start=1)
        assert seen == [(len(rows) * (len(tiny_vectors.names) + 1), 1)]
        assert final_module._LEAN_OK[final.original_component] is True
        second = steered_hidden(tiny, batch, steer, tiny.n_layers - 2, start=1)
    finally:
        handle.remove()
    assert len(seen) == 1 and not bridge_calls
    assert torch.allclose(first, second, atol=1e-5)
    logits = Unembedding(tiny)(second)[:, :, 0]
    for i, row in enumerate(rows):
        reference = sequential_view_logits(tiny, row, steer, tiny.n_layers - 2, start=1)[:, -1]
        assert float((torch.log_softmax(logits[i], -1) - torch.log_softmax(reference, -1)).abs().max()) <= 1e-4
    assert _no_hooks_left(tiny)


def test_a_lean_attention_that_disagrees_is_not_used(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import weakref

    import steerunc.scoring.final_block as final_module

    monkeypatch.setattr(final_module, "_LEAN_OK", weakref.WeakKeyDictionary())
    monkeypatch.setattr(final_module, "_lean_attention", lambda inner, hidden, index, views, kwargs: torch.zeros(
        index.shape[0], index.shape[1], hidden.shape[-1], device=hidden.device))
    steer = tiny_vectors.scaled(0.5)
    row = tiny.tokenizer(MODERATION.format("you are great"))["input_ids"]
    batch = collate([row], [[len(row) - 1]], tiny.pad_id, tiny.device)
    for _ in range(2):
        hidden = steered_hidden(tiny, batch, steer, tiny.n_layers - 2, start=1)
        reference = sequential_view_logits(tiny, row, steer, tiny.n_layers - 2, start=1)[:, -1]
        got = Unembedding(tiny)(hidden)[0, :, 0]
        assert float((torch.log_softmax(got, -1) - torch.log_softmax(reference, -1)).abs().max()) <= 1e-4
    assert final_module._LEAN_OK[tiny.bridge.blocks[tiny.n_layers - 1].attn.original_component] is False


def test_read_rows_final_block_on_a_qwen2_model(tmp_path: Any) -> None:
    """The default model's architecture (Qwen2: biased projections, no q/k norms), tiny and random:
    the lean attention passes its check and one pass equals K+1 separate passes."""
    import steerunc.scoring.final_block as final_module

    model = tiny_qwen2(tmp_path)
    tokenizer = model.tokenizer
    steer = torch.randn(3, 64, generator=torch.Generator().manual_seed(1)) * 2
    rows = [tokenizer(MODERATION.format(t))["input_ids"] for t in TEXTS]
    batch = collate(rows, [[len(r) - 1] for r in rows], model.pad_id, model.device)
    for _ in range(2):  # the first batch checks the lean attention, the second uses it
        logits = Unembedding(model)(steered_hidden(model, batch, steer, model.n_layers - 2, start=1))[:, :, 0]
        for i, row in enumerate(rows):
            reference = sequential_view_logits(model, row, steer, model.n_layers - 2, start=1)[:, -1]
            assert float((torch.log_softmax(logits[i], -1) - torch.log_softmax(reference, -1)).abs().max()) <= 1e-4
    assert final_module._LEAN_OK[model.bridge.blocks[model.n_layers - 1].attn.original_component] is True
    assert _no_hooks_left(model)
