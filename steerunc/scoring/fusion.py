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

from steerunc.scoring.divergence import entropy, exact_log_softmax, js, kl, log_mean_prob, mutual_info, top_m_entropy

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
    scores: dict[str, Tensor]  # each [...]
    tempered: Tensor  # [..., K+1, C] view log-probs at temperature tau

    @property
    def view_js(self) -> Tensor:
        """[..., K] JS(p_k, p_0) at temperature tau; computed on request (no output uses it)."""
        return js(self.tempered[..., 1:, :], self.tempered[..., :1, :])


def _masked(z: Tensor, mask: Tensor | None, tau: float) -> Tensor:
    """``z`` with padded entries (``mask`` False) set far below every real one of their item:
    their probability is exactly 0 at temperature 1 and at ``tau`` (the gap, over 1000 times the
    temperature, underflows any exp), they never win an argmax, and every log-probability stays
    finite (no NaN from 0 * -inf in an entropy or a KL)."""
    if mask is None:
        return z
    real = mask[..., None, :].expand_as(z)
    if bool(real.all()):
        return z
    low = z.masked_fill(~real, math.inf).amin(dim=(-2, -1), keepdim=True)
    return torch.where(real, z, low - 1e3 * max(1.0, tau))


def _other_mass(logp: Tensor) -> Tensor:
    """``1 - max p`` over the last axis, as the summed probability of every other entry: where the
    top entry is nearly certain, ``1 - max p`` rounds to exactly 0 (below about 6e-8 in float32),
    while the others' log-probabilities keep their value."""
    top = logp.argmax(-1, keepdim=True)
    return logp.scatter(-1, top, -math.inf).logsumexp(-1).exp()


def fuse(z: Tensor, config: FusionConfig = FusionConfig(), mask: Tensor | None = None) -> Fused:
    """Fuse base + K steered view logits and score their disagreement.

    ``mask`` (``[..., C]``, True = real): items with fewer entries than ``C`` (a batch of
    records with different option counts, padded). Padded entries get probability 0 and
    change no score.

    Computed in float64 when ``z`` is float64, else in float32. The options readout hands
    float64 (``[B, K+1, C]`` is small): multi-token options' log-probabilities can differ by
    tens of nats, so every view is nearly certain and the scores are far below the rounding of
    the largest logit. In float64 the log-probabilities are taken with
    :func:`~steerunc.scoring.divergence.exact_log_softmax` (the top option's is
    ``-log1p(others' mass)``, not a rounded 0), the mixture relative to the base view
    (:func:`~steerunc.scoring.divergence.log_mean_prob`), ``mutual_info`` as
    ``mean_k KL(p_k || mean)`` and ``msp`` as the other options' mass: a record's scores then
    do not depend on the padded width of the batch it is fused in (beyond rounding: at most
    3e-13 relative, ``benchmarks/fusion_batch_shape.py``), and
    views equal to the base give exactly 0. Vocabulary readouts (``C`` = the vocabulary) stay
    in float32 with ``torch.log_softmax`` (memory).

    >>> z = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # base + 2 identical views
    >>> f = fuse(z)
    >>> [float(f.scores[n]) == 0.0 for n in ("mutual_info", "mean_kl", "flip_rate")]
    [True, True, True]
    >>> torch.allclose(f.fused_logp, torch.log_softmax(z[0], -1))
    True
    >>> padded = fuse(torch.tensor([[2.0, 0.0, 9.0], [1.0, 0.0, 9.0]]), mask=torch.tensor([True, True, False]))
    >>> float(padded.fused_logp.exp()[2]), torch.allclose(padded.scores["msp"], fuse(torch.tensor([[2.0, 0.0], [1.0, 0.0]])).scores["msp"])
    (0.0, True)
    """
    if z.dim() < 2 or z.shape[-2] < 2:
        raise ValueError(f"z must be [..., K+1, C] with K >= 1, got {list(z.shape)}")
    z = _masked(z if z.dtype == torch.float64 else z.float(), mask, config.tau)
    n_views = z.shape[-2]
    log_softmax = exact_log_softmax if z.dtype == torch.float64 else (lambda x: torch.log_softmax(x, dim=-1))
    own = log_softmax(z)  # temperature 1: what is output
    tempered = log_softmax(z / config.tau)  # temperature tau: what is compared
    base, steered = tempered[..., 0, :], tempered[..., 1:, :]
    if config.method == "dvd":
        weights = torch.softmax(top_m_entropy(steered, config.top_m), dim=-1)
        displacement = z[..., 1:, :] - z[..., :1, :]
        fused_logits = z[..., 0, :] + (1.0 + config.alpha) * (weights.unsqueeze(-1) * displacement).sum(-2)
        fused_logp = log_softmax(fused_logits)
    else:
        weights = torch.full(steered.shape[:-1], 1.0 / n_views, device=z.device)
        fused_logp = log_mean_prob(own, dim=-2)
        fused_logits = fused_logp
    p_tau = tempered.exp()  # once, for both comparisons
    view_kl = kl(steered, base.unsqueeze(-2), p_tau[..., 1:, :])  # KL(p_k || p_0)
    base_own = own[..., 0, :]
    scores = {
        "msp": _other_mass(base_own),
        "entropy": entropy(base_own),
        "mutual_info": mutual_info(tempered, dim=-2, p=p_tau),
        "mean_kl": view_kl.mean(-1),
        "flip_rate": (z[..., 1:, :].argmax(-1) != z[..., :1, :].argmax(-1)).float().mean(-1),
        "fused_entropy": entropy(fused_logp),
    }
    return Fused(own, fused_logits, fused_logp, weights, view_kl, scores, tempered)
