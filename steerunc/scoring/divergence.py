"""Pure tensor maths on distributions over the last axis: no model imports.

All functions take log-probabilities (natural log) and reduce over the last
axis, so they work on options (…, C) and on vocabularies (…, V) alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["kl", "js", "entropy", "top_m_entropy", "mutual_info"]


def kl(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p || q) in nats, over the last axis.

    >>> p = torch.log_softmax(torch.tensor([1.0, 2.0, 3.0]), -1)
    >>> float(kl(p, p))
    0.0
    """
    p = logp.exp()
    return (p * (logp - logq)).sum(-1).clamp_min(0.0)


def js(logp: Tensor, logq: Tensor) -> Tensor:
    """Jensen-Shannon divergence in nats: symmetric, in [0, ln 2]."""
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    return (0.5 * (kl(logp, logm) + kl(logq, logm))).clamp(0.0, math.log(2.0))


def entropy(logp: Tensor) -> Tensor:
    """Shannon entropy in nats over the last axis.

    >>> round(float(entropy(torch.log(torch.tensor([0.5, 0.5])))), 6) == round(math.log(2), 6)
    True
    """
    return (-(logp.exp() * logp).sum(-1)).clamp_min(0.0)


def top_m_entropy(logp: Tensor, m: int) -> Tensor:
    """Entropy of the distribution restricted to its ``m`` most likely entries, renormalised."""
    m = min(m, logp.shape[-1])
    top = logp.topk(m, dim=-1).values
    return entropy(torch.log_softmax(top, dim=-1))


def mutual_info(logps: Tensor, dim: int = 0) -> Tensor:
    """Disagreement between views: H(mean_k p_k) − mean_k H(p_k), views along ``dim``."""
    dim = dim % logps.dim()  # the class axis is reduced first, so use a positive index
    n = logps.shape[dim]
    log_mean = torch.logsumexp(logps, dim=dim) - math.log(n)
    return (entropy(log_mean) - entropy(logps).mean(dim=dim)).clamp_min(0.0)
