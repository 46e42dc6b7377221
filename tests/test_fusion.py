"""The fused distribution and the scores, on logits and through the scorer."""

from __future__ import annotations

import dataclasses

from typing import Any

import pytest
import torch

from steerunc.fusion import SCORE_NAMES, FusionConfig, fuse
from steerunc.records import Record
from steerunc.scorer import ScoreConfig, Scorer

from conftest import MODERATION


def test_fused_logits_follow_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=gen)  # base + 3 views, 3 options
    config = FusionConfig(tau=0.5, alpha=0.3, top_m=2)
    fused = fuse(z, config)
    logp = torch.log_softmax(z / config.tau, -1)
    top2 = torch.log_softmax(logp[1:].topk(2, -1).values, -1)
    weights = torch.softmax(-(top2.exp() * top2).sum(-1), -1)
    contrastive = (1 + config.alpha) * z[1:] - config.alpha * z[0]
    assert torch.allclose(fused.weights, weights, atol=1e-6)
    assert torch.allclose(fused.fused_logits, (weights[:, None] * contrastive).sum(0), atol=1e-5)


def test_flip_rate_counts_views_that_change_the_answer() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    assert float(fuse(z).scores["flip_rate"]) == pytest.approx(2 / 3)


def test_bad_fusion_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="tau"):
        FusionConfig(tau=0)
    with pytest.raises(ValueError, match="K >= 1"):
        fuse(torch.zeros(1, 3))


@pytest.mark.parametrize("options", [["Yes", "No"], ["Yes", "No", "Unsure"]])
def test_coefficient_zero_means_no_disagreement(tiny: Any, tiny_vectors: Any, options: list[str]) -> None:
    """coeff 0: every view is the base view, so MI = mean KL = flip rate = 0 and fused = base."""
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=0.0))
    out = scorer.score_text(MODERATION.format("you are all wonderful"), options=options)
    assert out.scores["mutual_info"] == pytest.approx(0.0, abs=1e-6)
    assert out.scores["mean_kl"] == pytest.approx(0.0, abs=1e-6)
    assert out.scores["flip_rate"] == 0.0
    assert out.prediction == out.base_prediction
    for option in options:
        assert out.logits[option] == pytest.approx(out.base_logits[option], abs=1e-5)
        # tau applies to both, so the fused and base distributions coincide
        assert out.probs[option] == pytest.approx(out.base_probs[option], abs=1e-6)


def test_steering_moves_the_views(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0))
    out = scorer.score_text(MODERATION.format("you people never learn"), options=["Yes", "No"])
    assert out.scores["mean_kl"] > 1e-4
    assert out.scores["mutual_info"] > 0
    assert set(out.views) == set(tiny_vectors.names)
    assert sum(out.weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(out.scores) == set(SCORE_NAMES)


def test_continuation_scores_every_token(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=0.5, chunk_positions=3))
    (out,) = scorer.score([Record(text="The capital of France is", continuation=" Paris, of course.")])
    n = len(tiny.tokenizer(" Paris, of course.", add_special_tokens=False)["input_ids"])
    assert len(out.tokens) == n
    per_token = [t["scores"]["mean_kl"] for t in out.tokens]
    assert out.score_aggregates["max"]["mean_kl"] == pytest.approx(max(per_token), rel=1e-5)
    assert out.score_aggregates["sum"]["mean_kl"] == pytest.approx(sum(per_token), rel=1e-4)
    assert out.scores["mean_kl"] == pytest.approx(sum(per_token) / n, rel=1e-4)
    assert out.prediction is None and out.to_json()["mode"] == "continuation"


def test_center_steers_with_the_centred_vectors(tiny: Any, tiny_vectors: Any) -> None:
    """ScoreConfig(center=True) is the same as scoring with SteeringVectors.centered()."""
    text = MODERATION.format("you people never learn")
    centred = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0, center=True)).score_text(text, options=["Yes", "No"])
    by_hand = Scorer(tiny, tiny_vectors.centered(), ScoreConfig(coeff=1.0)).score_text(text, options=["Yes", "No"])
    raw = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0, center=False)).score_text(text, options=["Yes", "No"])
    default = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0)).score_text(text, options=["Yes", "No"])
    for name in SCORE_NAMES:
        assert default.scores[name] == centred.scores[name]  # K >= 2: centred unless told otherwise
        assert centred.scores[name] == pytest.approx(by_hand.scores[name], abs=1e-6)
    assert centred.scores["mean_kl"] != pytest.approx(raw.scores["mean_kl"], abs=1e-6)
    assert centred.base_probs == pytest.approx(raw.base_probs)  # the base view is never steered


def test_one_vector_is_steered_raw_by_default(tiny: Any, tiny_vectors: Any) -> None:
    """Centring one vector leaves nothing, so the default (center=None) steers a lone vector as it is."""
    one = dataclasses.replace(tiny_vectors, names=tiny_vectors.names[:1], vectors=tiny_vectors.vectors[:1],
                              n_pairs=tiny_vectors.n_pairs[:1])
    text = MODERATION.format("you people never learn")
    default = Scorer(tiny, one, ScoreConfig(coeff=1.0)).score_text(text, options=["Yes", "No"])
    raw = Scorer(tiny, one, ScoreConfig(coeff=1.0, center=False)).score_text(text, options=["Yes", "No"])
    assert default.scores == raw.scores and default.scores["mean_kl"] > 0
