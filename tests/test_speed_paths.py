"""The fast paths give the straightforward answers: shared prefix == K+1 separate passes,
chunked == unchunked, and the output head is never run over all positions for options."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steerunc.scoring.readouts as readouts_module
from steerunc.scoring.fusion import FusionConfig
from steerunc.records import Record, ScoredRecord
from steerunc.scoring.scorer import ScoreConfig, Scorer
from steerunc.scoring.views import Unembedding, collate, sequential_view_logits, steered_hidden

from conftest import MODERATION

TEXTS = [
    "ok",
    "honestly, nobody asked for your opinion on this, and it shows that you never read anything",
    "what a lovely idea, thanks for sharing",
]
COEFF = 0.5


def _hooks(model: Any) -> dict[str, tuple[int, int]]:
    """Hooks on every module (the bridge adds some of its own on a first forward pass)."""
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.bridge.named_modules()}


def _renormalised(record: ScoredRecord, names: list[str], options: list[str]) -> torch.Tensor:
    """[K+1, C] option log-probs renormalised over the options (the views' probabilities at tau = 1)."""
    rows = [record.base_probs or {}] + [record.views[n]["probs"] for n in names]
    table = torch.tensor([[row[o] for o in options] for row in rows], dtype=torch.float64)
    return torch.log_softmax(table.log(), dim=-1)


def _reference(tiny: Any, scorer: Scorer, text: str, options: list[str]) -> torch.Tensor:
    """[K+1, C] full option log-probabilities from K+1 separate batch-of-one passes."""
    ids = tiny.tokenizer(text)["input_ids"]
    columns = []
    for option in options:
        option_ids = tiny.tokenizer(" " + option, add_special_tokens=False)["input_ids"]
        logits = sequential_view_logits(tiny, ids + option_ids, scorer.steer, scorer.layer, scorer.start).cpu()
        logp = torch.log_softmax(logits[:, len(ids) - 1 : len(ids) - 1 + len(option_ids)].double(), dim=-1)
        target = torch.tensor(option_ids)[None, :, None].expand(logp.shape[0], -1, 1)
        columns.append(logp.gather(-1, target).sum((-1, -2)))
    return torch.stack(columns, dim=-1)


@pytest.mark.parametrize("options", [["Yes", "No"], ["Yes", "No", "Unsure"]], ids=["single-token", "multi-token"])
def test_shared_prefix_equals_k_plus_1_passes(tiny: Any, tiny_vectors: Any, options: list[str]) -> None:
    """Mixed-length records in one right-padded batch; option log-probs within 1e-4.
    (Temperature 1, so that the reported view probabilities of unlikely options do not underflow.)"""
    config = ScoreConfig(coeff=COEFF, batch_size=64, fusion=FusionConfig(tau=1.0))
    scorer = Scorer(tiny, tiny_vectors, config)
    records = [Record(text=MODERATION.format(t), options=options) for t in TEXTS]
    scorer.score(records[:1])
    before = _hooks(tiny)
    scored = scorer.score(records)
    assert _hooks(tiny) == before
    for record, out in zip(records, scored):
        assert isinstance(out, ScoredRecord)
        reference = _reference(tiny, scorer, record.text, options)
        ours = _renormalised(out, scorer.names, options)
        assert float((ours - torch.log_softmax(reference, -1)).abs().max()) <= 1e-4
        if len(options) == 3:  # multi-token: the base logits are the full log-probabilities
            base = torch.tensor([out.base_logits[o] for o in options], dtype=torch.float64)  # type: ignore[index]
            assert float((base - reference[0]).abs().max()) <= 1e-4


@pytest.mark.parametrize("where", ["first", "last"])
def test_fan_out_at_any_layer_equals_sequential(tiny: Any, tiny_vectors: Any, where: str) -> None:
    """Steering at block 0 or at the final block (where the last block is not fanned out),
    reading several positions per row, incl. padded read lists."""
    layer = 0 if where == "first" else tiny.n_layers - 1
    steer = tiny_vectors.scaled(COEFF)
    rows = [tiny.tokenizer(MODERATION.format(t))["input_ids"] for t in TEXTS]
    n = [len(r) for r in rows]
    read = [[n[0] - 1], [3, n[1] - 2, n[1] - 1], [n[2] - 5, n[2] - 1]]  # padded to 3 by collate
    hidden = steered_hidden(tiny, collate(rows, read, tiny.pad_id, tiny.device), steer, layer, start=1)
    logits = Unembedding(tiny)(hidden)
    for i, row in enumerate(rows):
        reference = sequential_view_logits(tiny, row, steer, layer, start=1)[:, read[i]]
        got = logits[i, :, : len(read[i])]
        diff = (torch.log_softmax(got, -1) - torch.log_softmax(reference, -1)).abs().max()
        assert float(diff) <= 1e-4


def test_continuation_chunked_equals_unchunked(tiny: Any, tiny_vectors: Any) -> None:
    record = Record(text="The capital of France is", continuation=" Paris, a city on the Seine, of course.")
    one = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, chunk_positions=1)).score_text(
        record.text, continuation=record.continuation)
    whole = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, chunk_positions=1000)).score_text(
        record.text, continuation=record.continuation)
    assert one.tokens is not None and whole.tokens is not None and len(one.tokens) == len(whole.tokens) > 8

    def flat(out: ScoredRecord) -> list[float]:
        values = [v for t in out.tokens or [] for v in [t["base_logprob"], t["fused_logprob"], *t["scores"].values()]]
        values += [v for agg in (out.score_aggregates or {}).values() for v in agg.values()]
        values += [v for view in out.views.values() for v in view.values()] + list(out.weights.values())
        return values + [out.extra["base_logprob"], out.extra["fused_logprob"]]

    # float32 sums in another order: equal to a few ulps of each value (sums of log-probs reach ~100)
    diff = max(abs(a - b) / max(1.0, abs(a), abs(b)) for a, b in zip(flat(one), flat(whole)))
    assert diff <= 1e-5
    assert [t["token"] for t in one.tokens] == [t["token"] for t in whole.tokens]


def test_chunks_are_capped_by_vocabulary_size(tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(chunk_positions=16))
    per_position = (len(scorer.names) + 1) * scorer.unembed.vocab_size
    monkeypatch.setattr(readouts_module, "CHUNK_VALUES", 3 * per_position)
    assert scorer._chunk_positions() == 3
    monkeypatch.setattr(readouts_module, "CHUNK_VALUES", 1)
    assert scorer._chunk_positions() == 1


@pytest.mark.parametrize("options", [["Yes", "No"], ["Yes", "No", "Unsure"]], ids=["single-token", "multi-token"])
def test_options_never_unembed_all_positions(
    tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch, options: list[str]
) -> None:
    calls: list[tuple[tuple[int, ...], bool]] = []
    original = Unembedding.__call__

    def counting(self: Unembedding, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        calls.append((tuple(hidden.shape), token_ids is None))
        return original(self, hidden, token_ids)

    monkeypatch.setattr(Unembedding, "__call__", counting)
    head_calls: list[int] = []
    handle = tiny.hf_model.get_output_embeddings().register_forward_hook(lambda *a: head_calls.append(1))
    mlp_shapes: list[tuple[int, ...]] = []
    last_mlp = tiny.bridge.blocks[tiny.n_layers - 1].mlp.original_component  # inside the bridge's hooks
    mlp_handle = last_mlp.register_forward_pre_hook(lambda m, args: mlp_shapes.append(tuple(args[0].shape)))
    try:
        scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=COEFF, batch_size=64))
        scorer.score([Record(text=MODERATION.format(t), options=options) for t in TEXTS])
    finally:
        handle.remove()
        mlp_handle.remove()
    longest_option = max(len(tiny.tokenizer(" " + o, add_special_tokens=False)["input_ids"]) for o in options)
    views = len(scorer.names) + 1
    assert not head_calls  # the model's own head (all positions) never runs
    assert calls
    for shape, full_vocab in calls:
        assert shape[-2] == views or shape[-3] == views
        if len(options) == 2:  # one call for the batch: option rows, last position
            assert not full_vocab and shape == (len(TEXTS), views, tiny.d_model)
        else:
            assert shape[-2] <= longest_option  # the option's own positions only
    # the final block's MLP ran at the read positions only, on the fanned-out rows
    assert mlp_shapes and mlp_shapes[-1][1] <= longest_option and mlp_shapes[-1][0] % views == 0


def test_host_copy_packs_exactly() -> None:
    values = [torch.randn(3, 4), torch.tensor([262143, 5, 0]), torch.tensor(0.125)]
    back = readouts_module.packed_to_host(values)
    for a, b in zip(values, back):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert readouts_module.to_host(values)[0] is values[0]  # nothing to copy on the CPU
