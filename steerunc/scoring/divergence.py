"""Pure tensor maths on distributions over the last axis: no model imports.

All functions take log-probabilities (natural log) and reduce over the last
axis, so they work on options (…, C) and on vocabularies (…, V) alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["kl", "js", "entropy", "top_m_entropy", "mutual_info", "log_mean_prob", "exact_log_softmax"]


def kl(logp: Tensor, logq: Tensor, p: Tensor | None = None) -> Tensor:
    """KL(p || q) in nats, over the last axis (``p``: ``logp.exp()``, where the caller has it).

    >>> p = torch.log_softmax(torch.tensor([1.0, 2.0, 3.0]), -1)
    >>> float(kl(p, p))
    0.0
    """
    if p is None:
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


def exact_log_softmax(z: Tensor) -> Tensor:
    """``log_softmax`` over the last axis that keeps the top entry's log-probability exact.

    ``torch.log_softmax`` gives the top entry ``z_max - logsumexp(z)``: where the others' summed
    mass ``s`` is below the rounding of ``1 + s`` (about 1e-16 in float64), that is 0 or one unit
    in the last place of the largest logit, not ``-log1p(s)``, and which of the two depends on
    the summation order (so on the padded width of a batch). Here the top entry is
    ``-log1p(s)`` with ``s`` summed over the other entries only. Costs a few copies of ``z``: for
    small ``C`` (options), not vocabularies.

    >>> z = torch.tensor([0.0, -50.0], dtype=torch.float64)
    >>> float(torch.log_softmax(z, -1)[0]), float(exact_log_softmax(z)[0])
    (0.0, -1.9287498479639178e-22)
    """
    top_value, top = z.max(-1, keepdim=True)
    shifted = z - top_value  # the top entry is exactly 0
    log_others = shifted.scatter(-1, top, -math.inf).logsumexp(-1, keepdim=True)  # log s
    return shifted - torch.logaddexp(log_others, torch.zeros_like(log_others))  # - log(1 + s)


def log_mean_prob(logps: Tensor, dim: int = 0) -> Tensor:
    """``log mean_k p_k``: the mixture of the views along ``dim``, in log space.

    Taken relative to the first view (``d_k = log p_k - log p_0``) as
    ``log p_0 + M + log1p(mean_k expm1(d_k - M))`` with ``M = max_k d_k``: views equal to the
    first give exactly ``log p_0``, and views that differ by far less than the rounding of
    ``log n`` (nearly certain items) keep their difference, which ``logsumexp - log n`` rounds
    away.

    >>> p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    >>> [round(v, 6) for v in log_mean_prob(p, 0).exp().tolist()]
    [0.7, 0.3]
    """
    dim = dim % logps.dim()
    ref = logps.narrow(dim, 0, 1)
    d = logps - ref
    top = d.amax(dim, keepdim=True)  # >= 0: the first view's own d is 0
    return (ref + top + d.sub_(top).expm1_().mean(dim, keepdim=True).log1p()).squeeze(dim)


def mutual_info(logps: Tensor, dim: int = 0, p: Tensor | None = None) -> Tensor:
    """Disagreement between views along ``dim``: ``H(mean_k p_k) - mean_k H(p_k)``.

    Summed as ``mean_k KL(p_k || mean_k p_k)`` (the same quantity, from small terms rather than
    as a difference of two nearly equal entropies), with the mixture from
    :func:`log_mean_prob`: views equal to each other give exactly 0. ``p``: ``logps.exp()``,
    where the caller has it.
    """
    dim = dim % logps.dim()  # the class axis is reduced first, so use a positive index
    return kl(logps, log_mean_prob(logps, dim).unsqueeze(dim), p).mean(dim)
