"""The fused pluralistic distribution (DVD) and the uncertainty scores (METHOD.md §3-5).

Everything works on view logits ``z`` of shape ``[..., K+1, C]`` (view 0 = base;
``C`` options or vocabulary entries) and is a pure function of them.

Conventions (docs/method.md): every view distribution is taken at temperature
tau, ``p_k = softmax(z_k / tau)`` (base included), so the scores and the fused
prediction live on one scale; the entropy weighting has the sign METHOD.md
gives, ``w = softmax(+H_top_m)``: views that spread their mass more weigh more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steerunc.divergence import entropy, js, kl, mutual_info, top_m_entropy

__all__ = ["FusionConfig", "Fused", "fuse", "SCORE_NAMES"]

#: all uncertainties: higher = less sure
SCORE_NAMES = ("msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy")

@dataclass(frozen=True)
class FusionConfig:
    """DVD hyper-parameters; defaults from the seed work."""

    tau: float = 0.4
    alpha: float = 0.2
    top_m: int = 10

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.top_m < 1:
            raise ValueError(f"top_m must be >= 1, got {self.top_m}")

@dataclass
class Fused:
    """Per-item results; leading dims are those of ``z`` without the last two."""

    logp: Tensor  # [..., K+1, C] view log-probs at temperature tau
    fused_logits: Tensor  # [..., C]
    fused_logp: Tensor  # [..., C]
    weights: Tensor  # [..., K]
    view_kl: Tensor  # [..., K]  KL(p_k || p_0)
    view_js: Tensor  # [..., K]
    scores: dict[str, Tensor]  # each [...]

def fuse(z: Tensor, config: FusionConfig = FusionConfig()) -> Fused:
    """Fuse base + K steered view logits and score their disagreement.

    >>> z = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # base + 2 identical views
    >>> f = fuse(z)
    >>> [float(f.scores[n]) == 0.0 for n in ("mutual_info", "mean_kl", "flip_rate")]
    [True, True, True]
    >>> torch.equal(f.fused_logits, z[0])
    True
    """
    if z.dim() < 2 or z.shape[-2] < 2:
        raise ValueError(f"z must be [..., K+1, C] with K >= 1, got {list(z.shape)}")
    z = z.float()
    logp = torch.log_softmax(z / config.tau, dim=-1)
    base, steered = logp[..., 0, :], logp[..., 1:, :]
    weights = torch.softmax(top_m_entropy(steered, config.top_m), dim=-1)
    displacement = z[..., 1:, :] - z[..., :1, :]
    fused_logits = z[..., 0, :] + (1.0 + config.alpha) * (weights.unsqueeze(-1) * displacement).sum(-2)
    fused_logp = torch.log_softmax(fused_logits / config.tau, dim=-1)
    view_kl = kl(steered, base.unsqueeze(-2))

    view_js = js(steered, base.unsqueeze(-2))
    base_top = base.argmax(-1, keepdim=True)
    scores = {
        "msp": 1.0 - base.exp().max(-1).values,
        "entropy": entropy(base),
        "mutual_info": mutual_info(logp, dim=-2),
        "mean_kl": view_kl.mean(-1),
        "flip_rate": (steered.argmax(-1) != base_top).float().mean(-1),
        "fused_entropy": entropy(fused_logp),
    }
    return Fused(logp, fused_logits, fused_logp, weights, view_kl, view_js, scores)
