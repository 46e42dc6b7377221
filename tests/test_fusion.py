"""The fused distribution and the scores, on logits and through the scorer."""

from __future__ import annotations

import dataclasses

from typing import Any

import pytest
import torch

from steerunc.scoring.fusion import SCORE_NAMES, FusionConfig, fuse
from steerunc.records import Record
from steerunc.scoring.scorer import ScoreConfig, Scorer

from conftest import MODERATION


def test_dvd_fused_logits_follow_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=gen)  # base + 3 views, 3 options
    config = FusionConfig(tau=0.5, alpha=0.3, top_m=2, method="dvd")
    fused = fuse(z, config)
    logp = torch.log_softmax(z / config.tau, -1)
    top2 = torch.log_softmax(logp[1:].topk(2, -1).values, -1)
    weights = torch.softmax(-(top2.exp() * top2).sum(-1), -1)
    contrastive = (1 + config.alpha) * z[1:] - config.alpha * z[0]
    assert torch.allclose(fused.weights, weights, atol=1e-6)
    assert torch.allclose(fused.fused_logits, (weights[:, None] * contrastive).sum(0), atol=1e-5)
    assert torch.allclose(fused.fused_logp, torch.log_softmax(fused.fused_logits, -1), atol=1e-6)


def test_fused_prediction_is_the_mixture_of_the_views() -> None:
    """Default fusion: probs = mean over the K+1 views of softmax(z_k), at the model's temperature."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, 3, generator=gen) * 3  # 5 items, base + 3 views, 3 options
    fused = fuse(z)
    mixture = torch.softmax(z, -1).mean(-2)
    assert torch.allclose(fused.fused_logp.exp(), mixture, atol=1e-6)
    assert torch.allclose(fused.scores["fused_entropy"], -(mixture * mixture.log()).sum(-1), atol=1e-5)
    assert torch.allclose(fused.weights, torch.full((5, 3), 0.25))


def test_fusion_is_not_a_no_op_with_centred_views() -> None:
    """Centred vectors give displacements that sum to about zero; the old contrastive fusion then
    returned the base distribution. The mixture is flatter than the base where views disagree."""
    base = torch.tensor([1.0, -0.5])
    shifts = torch.tensor([[2.0, -2.0], [-2.0, 2.0], [1.0, -1.0], [-1.0, 1.0]])  # sum to zero
    z = torch.cat([base[None], base[None] + shifts])
    fused = fuse(z)
    base_probs = torch.softmax(base, -1)
    assert float(fused.fused_logp.exp().max()) < float(base_probs.max()) - 0.05
    assert float(fused.scores["fused_entropy"]) > float(fused.scores["entropy"]) + 0.05
    assert fused.fused_logp.argmax() == base.argmax()  # the views pull both ways: the answer stays


def test_baselines_are_at_the_models_own_temperature() -> None:
    """msp and entropy are those of softmax(z_0), whatever tau the views are compared at."""
    z = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 1.0, 2.0]])
    for tau in (0.4, 1.0, 2.5):
        fused = fuse(z, FusionConfig(tau=tau))
        p0 = torch.softmax(z[0], -1)
        assert float(fused.scores["msp"]) == pytest.approx(1 - float(p0.max()), abs=1e-6)
        assert float(fused.scores["entropy"]) == pytest.approx(float(-(p0 * p0.log()).sum()), abs=1e-6)
        assert torch.allclose(fused.logp.exp(), torch.softmax(z, -1), atol=1e-6)  # outputs at temperature 1
        p_tau = torch.softmax(z / tau, -1)
        kl = (p_tau[1:] * (p_tau[1:].log() - p_tau[0].log())).sum(-1)
        assert torch.allclose(fused.view_kl, kl, atol=1e-5)  # views compared at tau


def test_flip_rate_counts_views_that_change_the_answer() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    assert float(fuse(z).scores["flip_rate"]) == pytest.approx(2 / 3)


def test_bad_fusion_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="tau"):
        FusionConfig(tau=0)
    with pytest.raises(ValueError, match="fusion method"):
        FusionConfig(method="average")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            FusionConfig(tau=bad)
        with pytest.raises(ValueError, match="finite"):
            FusionConfig(alpha=bad)
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
    base_logp = torch.log_softmax(torch.tensor([out.base_logits[o] for o in options]), -1)
    for option, value in zip(options, base_logp.tolist()):
        assert out.logits[option] == pytest.approx(value, abs=1e-5)  # the mixture's log-probabilities
        # every view is the base view, so their mixture is the base distribution
        assert out.probs[option] == pytest.approx(out.base_probs[option], abs=1e-6)


def test_steering_moves_the_views(tiny: Any, tiny_vectors: Any) -> None:
    scorer = Scorer(tiny, tiny_vectors, ScoreConfig(coeff=1.0))
    out = scorer.score_text(MODERATION.format("you people never learn"), options=["Yes", "No"])
    assert out.scores["mean_kl"] > 1e-4
    assert out.scores["mutual_info"] > 0
    assert set(out.views) == set(tiny_vectors.names)
    k = len(tiny_vectors.names)
    assert all(w == pytest.approx(1 / (k + 1)) for w in out.weights.values())  # the mixture's weights
    assert out.probs != pytest.approx(out.base_probs, abs=1e-4)  # the fused prediction is not the base one
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


@pytest.mark.parametrize("method", ["mixture", "dvd"])
def test_padded_options_change_nothing(method: str) -> None:
    """Items with 2 and 4 options fused in one padded [B, K+1, 4] tensor: each equals its own
    unpadded fusion, and padded entries get probability 0 (also at a large tau)."""
    gen = torch.Generator().manual_seed(3)
    small, large = torch.randn(4, 2, generator=gen) * 3, torch.randn(4, 4, generator=gen) * 3
    for tau in (0.4, 50.0):
        config = FusionConfig(tau=tau, method=method, top_m=3)
        z = torch.stack([torch.cat([small, torch.full((4, 2), 7.0)], -1), large])  # pads larger than the real logits
        mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
        both = fuse(z, config, mask)
        for i, alone in enumerate((fuse(small, config), fuse(large, config))):
            c = alone.fused_logp.shape[-1]
            assert torch.allclose(both.fused_logp[i, :c], alone.fused_logp, atol=1e-6)
            assert torch.allclose(both.logp[i, :, :c], alone.logp, atol=1e-6)
            assert torch.allclose(both.weights[i], alone.weights, atol=1e-6)
            assert torch.allclose(both.view_kl[i], alone.view_kl, atol=1e-6)
            for name in SCORE_NAMES:
                assert float(both.scores[name][i]) == pytest.approx(float(alone.scores[name]), abs=1e-6), name
        assert float(both.fused_logp.exp()[0, 2:].max()) == 0.0 and float(both.logp.exp()[0, :, 2:].max()) == 0.0
        assert bool(torch.isfinite(both.logp).all())


def test_jensen_shannon_is_computed_on_request() -> None:
    from steerunc.scoring.divergence import js

    z = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4))
    fused = fuse(z, FusionConfig(tau=0.5))
    tempered = torch.log_softmax(z / 0.5, -1)
    assert torch.allclose(fused.view_js, js(tempered[:, 1:], tempered[:, :1]), atol=1e-6)


def _exact_scores(z: torch.Tensor, tau: float) -> dict[str, float]:
    """Every score but flip_rate of one item's view logits ``z`` [K+1, C], in 80-digit decimal
    arithmetic straight from the definitions: the reference for nearly certain views."""
    from decimal import Decimal, getcontext

    getcontext().prec = 80
    rows = [[Decimal(v) for v in row] for row in z.double().tolist()]

    def softmax(row: list[Decimal], t: float) -> list[Decimal]:
        e = [(v / Decimal(t)).exp() for v in row]
        return [x / sum(e) for x in e]

    def kl(p: list[Decimal], q: list[Decimal]) -> Decimal:
        return sum((a * (a.ln() - b.ln()) for a, b in zip(p, q)), Decimal(0))

    def h(p: list[Decimal]) -> Decimal:
        return -sum((a * a.ln() for a in p), Decimal(0))

    own, tempered = [softmax(r, 1.0) for r in rows], [softmax(r, tau) for r in rows]
    n = len(rows)
    mixture = [sum(c, Decimal(0)) / n for c in zip(*tempered)]
    fused = [sum(c, Decimal(0)) / n for c in zip(*own)]
    return {
        "msp": float(1 - max(own[0])),
        "entropy": float(h(own[0])),
        "mutual_info": float(sum((kl(p, mixture) for p in tempered), Decimal(0)) / n),
        "mean_kl": float(sum((kl(p, tempered[0]) for p in tempered[1:]), Decimal(0)) / (n - 1)),
        "fused_entropy": float(h(fused)),
    }


def _nearly_certain_items(n: int) -> list[torch.Tensor]:
    """Base + 6 views over 2 to 7 options whose top option leads by 5 to 60 nats (as multi-token
    options' summed log-probabilities do), the views moved by small to moderate shifts."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        c = 2 + i % 6
        base = torch.cat([torch.zeros(1), -(5.0 + 55.0 * torch.rand(c - 1, generator=gen))]).double()
        scale = float(10.0 ** torch.empty(1).uniform_(-3, 0.3, generator=gen))
        z = base + torch.randn(7, c, generator=gen).double() * scale
        z[0] = base
        out.append(z)
    return out


def test_near_certain_views_keep_their_scores_alone_and_in_any_padded_batch() -> None:
    """Multi-token options' log-probabilities can differ by tens of nats (TruthfulQA): every view
    is nearly certain, and the scores are far below the rounding of the largest logit. A float64
    input (what the options readout hands) gets every score right to near float64's precision,
    fused alone or inside a batch padded to any width; float32 keeps msp. Before the exact
    log-softmax, mean_kl was off by up to 59 times and mutual_info by 100 %, and both moved with
    the padded width."""
    tau = 0.4
    zs = _nearly_certain_items(18)
    for z in zs:
        exact = _exact_scores(z, tau)
        assert float(fuse(z.float(), FusionConfig(tau=tau)).scores["msp"]) == pytest.approx(exact["msp"], rel=1e-5, abs=0.0)
        alone = fuse(z, FusionConfig(tau=tau)).scores
        for name, value in exact.items():
            assert float(alone[name]) == pytest.approx(value, rel=1e-9, abs=0.0), name
    for extra in (0, 3, 16):
        width = max(z.shape[1] for z in zs) + extra
        batch = torch.full((len(zs), 7, width), 123.0, dtype=torch.float64)  # padding larger than every logit
        mask = torch.zeros(len(zs), width, dtype=torch.bool)
        for i, z in enumerate(zs):
            batch[i, :, : z.shape[1]], mask[i, : z.shape[1]] = z, True
        padded = fuse(batch, FusionConfig(tau=tau), mask).scores
        for i, z in enumerate(zs):
            exact = _exact_scores(z, tau)
            for name, value in exact.items():
                assert float(padded[name][i]) == pytest.approx(value, rel=1e-9, abs=0.0), (name, i, extra)
    same = torch.tensor([[[-3.2, -10.5, -7.1, 0.0]] * 4], dtype=torch.float64)  # views equal to the base, padded
    for dtype in (torch.float32, torch.float64):
        padded_same = fuse(same.to(dtype), FusionConfig(tau=tau), torch.tensor([[True, True, True, False]]))
        for name in ("mutual_info", "mean_kl"):
            assert float(padded_same.scores[name]) == 0.0  # exactly: not rounding noise ranked among real values


def test_the_options_readout_compares_its_views_in_float64(
    tiny: Any, tiny_vectors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steerunc.scoring import readouts as readouts_module

    seen: list[torch.dtype] = []
    original = readouts_module.fuse

    def recording(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(z.dtype)
        return original(z, *args, **kwargs)

    monkeypatch.setattr(readouts_module, "fuse", recording)
    Scorer(tiny, tiny_vectors).score_text("a comment", options=["Yes", "No"])
    assert seen == [torch.float64]
