"""Identities of the pure maths: KL, JS, entropy, top-m entropy, mutual information."""

from __future__ import annotations

import math

import torch

from steerunc.scoring.divergence import entropy, js, kl, mutual_info, top_m_entropy


def _logp(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=gen) * 3, dim=-1)


def test_kl_of_a_distribution_with_itself_is_zero() -> None:
    p = _logp(5, 7)
    assert torch.allclose(kl(p, p), torch.zeros(5), atol=1e-7)


def test_kl_is_positive_and_matches_scipy() -> None:
    from scipy.stats import entropy as scipy_entropy

    p, q = _logp(7, seed=1), _logp(7, seed=2)
    assert float(kl(p, q)) > 0
    assert math.isclose(float(kl(p, q)), scipy_entropy(p.exp().numpy(), q.exp().numpy()), rel_tol=1e-5)


def test_js_is_symmetric_and_bounded_by_ln2() -> None:
    p, q = _logp(50, 9, seed=3), _logp(50, 9, seed=4)
    assert torch.allclose(js(p, q), js(q, p), atol=1e-7)
    disjoint_p = torch.log(torch.tensor([1.0, 1e-30]))
    disjoint_q = torch.log(torch.tensor([1e-30, 1.0]))
    assert float(js(disjoint_p, disjoint_q)) <= math.log(2) + 1e-7
    assert float(js(disjoint_p, disjoint_q)) > math.log(2) - 1e-4
    assert bool((js(p, q) <= math.log(2)).all())


def test_entropy_of_uniform_is_log_n() -> None:
    uniform = torch.log_softmax(torch.zeros(3, 8), dim=-1)
    assert torch.allclose(entropy(uniform), torch.full((3,), math.log(8)), atol=1e-6)


def test_top_m_entropy_renormalises_the_top_entries() -> None:
    logp = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.1]))
    expected = entropy(torch.log(torch.tensor([0.5, 0.3]) / 0.8))
    assert torch.allclose(top_m_entropy(logp, 2), expected, atol=1e-6)
    assert torch.allclose(top_m_entropy(logp, 99), entropy(logp), atol=1e-6)


def test_mutual_info_is_zero_for_identical_views_and_positive_otherwise() -> None:
    p = _logp(4, 6)
    same = p.unsqueeze(1).expand(4, 5, 6)
    assert torch.allclose(mutual_info(same, dim=1), torch.zeros(4), atol=1e-6)
    assert bool((mutual_info(_logp(4, 5, 6), dim=1) > 0).all())
