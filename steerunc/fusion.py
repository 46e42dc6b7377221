"""The fused pluralistic distribution and the uncertainty scores (METHOD.md §3-5).

Everything works on view logits ``z`` of shape ``[..., K+1, C]`` (view 0 = base;
``C`` options or vocabulary entries) and is a pure function of them.

Two temperatures, each with one job (docs/method.md):

- every distribution steerunc *outputs* (the base, each view, the fused
  prediction) is at the model's own temperature 1, and so are the baselines
  ``msp`` and ``entropy``: the numbers a user or a paper would compute;
- the views are *compared* at temperature ``tau`` (``mutual_info``,
  ``mean_kl``, each view's ``kl``), which magnifies the small shifts a
  steering vector makes; ``flip_rate`` does not depend on it.

The fused prediction is, by default, the **mixture** of the K+1 view
distributions, ``mean_k p_k`` (Bayesian model averaging over the
perspectives, the plain reading included). It keeps its meaning when the
vectors are centred: where the views disagree the mixture is flatter than the
base distribution (its entropy is the total uncertainty whose
perspective-driven part ``mutual_info`` measures), where they agree it is the
base. The seed work's contrastive fusion (DVD, ``method="dvd"``) is kept as an
option: with centred vectors its displacements cancel and it is close to a
no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
from torch import Tensor

from steerunc.divergence import entropy, js, kl, mutual_info, top_m_entropy

__all__ = ["FusionConfig", "Fused", "fuse", "SCORE_NAMES"]

#: all uncertainties: higher = less sure
SCORE_NAMES = ("msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy")

#: ways to fuse the views into one prediction
FUSION_METHODS = ("mixture", "dvd")


@dataclass(frozen=True)
class FusionConfig:
    """How views are compared (``tau``) and fused (``method``; ``alpha`` and ``top_m`` are DVD's).
    Defaults from the seed work."""

    tau: float = 0.4
    alpha: float = 0.2
    top_m: int = 10
    method: str = "mixture"

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, got {self.method!r}")
        for name in ("tau", "alpha"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.top_m < 1:
            raise ValueError(f"top_m must be >= 1, got {self.top_m}")

@dataclass
class Fused:
    """Per-item results; leading dims are those of ``z`` without the last two."""

    logp: Tensor  # [..., K+1, C] view log-probs at temperature 1 (the model's own)
    fused_logits: Tensor  # [..., C] mixture: log of the mixture; dvd: z_fused
    fused_logp: Tensor  # [..., C] the fused prediction, at temperature 1
    weights: Tensor  # [..., K] weight of each steered view in the fusion (mixture: 1 / (K+1) each)
    view_kl: Tensor  # [..., K]  KL(p_k || p_0) at temperature tau
    view_js: Tensor  # [..., K]  at temperature tau
    scores: dict[str, Tensor]  # each [...]

def fuse(z: Tensor, config: FusionConfig = FusionConfig()) -> Fused:
    """Fuse base + K steered view logits and score their disagreement.

    >>> z = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # base + 2 identical views
    >>> f = fuse(z)
    >>> [float(f.scores[n]) == 0.0 for n in ("mutual_info", "mean_kl", "flip_rate")]
    [True, True, True]
    >>> torch.allclose(f.fused_logp, torch.log_softmax(z[0], -1))
    True
    """
    if z.dim() < 2 or z.shape[-2] < 2:
        raise ValueError(f"z must be [..., K+1, C] with K >= 1, got {list(z.shape)}")
    z = z.float()
    n_views = z.shape[-2]
    own = torch.log_softmax(z, dim=-1)  # temperature 1: what is output
    tempered = torch.log_softmax(z / config.tau, dim=-1)  # temperature tau: what is compared
    base, steered = tempered[..., 0, :], tempered[..., 1:, :]
    if config.method == "dvd":
        weights = torch.softmax(top_m_entropy(steered, config.top_m), dim=-1)
        displacement = z[..., 1:, :] - z[..., :1, :]
        fused_logits = z[..., 0, :] + (1.0 + config.alpha) * (weights.unsqueeze(-1) * displacement).sum(-2)
        fused_logp = torch.log_softmax(fused_logits, dim=-1)
    else:
        weights = torch.full(steered.shape[:-1], 1.0 / n_views, device=z.device)
        fused_logp = torch.logsumexp(own, dim=-2) - math.log(n_views)
        fused_logits = fused_logp
    view_kl = kl(steered, base.unsqueeze(-2))
    view_js = js(steered, base.unsqueeze(-2))
    base_own = own[..., 0, :]
    scores = {
        "msp": 1.0 - base_own.exp().max(-1).values,
        "entropy": entropy(base_own),
        "mutual_info": mutual_info(tempered, dim=-2),
        "mean_kl": view_kl.mean(-1),
        "flip_rate": (z[..., 1:, :].argmax(-1) != z[..., :1, :].argmax(-1)).float().mean(-1),
        "fused_entropy": entropy(fused_logp),
    }
    return Fused(own, fused_logits, fused_logp, weights, view_kl, view_js, scores)
