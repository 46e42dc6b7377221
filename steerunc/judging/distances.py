"""Distances between probability distributions, row by row: pure NumPy.

Used to compare a prediction with the distribution of people's answers
(``evaluate``'s ``human`` block, where records carry ``human_probs``). Each
argument is one distribution per row (a single distribution is one row); rows
are renormalised, and negative values are refused.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["js_distance", "kl_divergence"]

Array = NDArray[np.float64]


def _distributions(p: ArrayLike, q: ArrayLike) -> tuple[Array, Array]:
    a = np.atleast_2d(np.asarray(p, dtype=np.float64))
    b = np.atleast_2d(np.asarray(q, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"distributions differ in shape: {a.shape} vs {b.shape}")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("probabilities must be non-negative")
    return a / a.sum(axis=1, keepdims=True), b / b.sum(axis=1, keepdims=True)


def _kl(a: Array, b: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0)
    return np.sum(terms, axis=1)


def kl_divergence(p: ArrayLike, q: ArrayLike, eps: float = 1e-12) -> Array:
    """KL(p || q) in nats per row; q is floored at ``eps`` (then renormalised) to stay finite."""
    a, b = _distributions(p, q)
    b = np.maximum(b, eps)
    return _kl(a, b / b.sum(axis=1, keepdims=True))


def js_distance(p: ArrayLike, q: ArrayLike) -> Array:
    """Jensen-Shannon distance per row, base 2 (in [0, 1]); as scipy's ``jensenshannon(p, q, base=2)``.

    >>> js_distance([[1, 0]], [[0, 1]]).tolist(), js_distance([[0.5, 0.5]], [[0.5, 0.5]]).tolist()
    ([1.0], [0.0])
    """
    a, b = _distributions(p, q)
    m = (a + b) / 2.0
    js = (_kl(a, m) + _kl(b, m)) / 2.0 / np.log(2.0)
    return np.sqrt(np.clip(js, 0.0, None))
