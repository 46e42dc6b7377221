"""Identities of the pure maths: KL, JS, entropy, top-m entropy, mutual information."""

from __future__ import annotations

import math

import pytest
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


def test_exact_log_softmax_keeps_the_top_entry_of_a_nearly_certain_distribution() -> None:
    from steerunc.scoring.divergence import exact_log_softmax

    z = torch.tensor([0.0, -50.0, -60.0], dtype=torch.float64)
    got = exact_log_softmax(z)
    others = math.exp(-50.0) + math.exp(-60.0)
    assert float(got[0]) == pytest.approx(-math.log1p(others), rel=1e-14, abs=0.0)  # torch.log_softmax: 0.0
    assert float(torch.log_softmax(z, -1)[0]) == 0.0
    assert torch.allclose(got[1:], torch.log_softmax(z, -1)[1:], rtol=0, atol=1e-13)
    padded = exact_log_softmax(torch.cat([z, torch.full((13,), -5e3, dtype=torch.float64)]))
    assert torch.equal(padded[:3], got)  # entries far below add nothing, in any width
    ordinary = torch.randn(5, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    assert torch.allclose(exact_log_softmax(ordinary), torch.log_softmax(ordinary, -1), rtol=0, atol=1e-14)


def test_log_mean_prob_is_the_log_of_the_views_mean() -> None:
    from steerunc.scoring.divergence import log_mean_prob

    logps = torch.log_softmax(torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64), -1)
    expected = torch.logsumexp(logps, dim=1) - math.log(5)
    assert torch.allclose(log_mean_prob(logps, dim=1), expected, rtol=0, atol=1e-14)
    same = logps[:, :1].expand(4, 5, 6)
    assert torch.equal(log_mean_prob(same, dim=1), logps[:, 0])  # exactly the common view
    # two views whose top entries differ by 1e-20: logsumexp - log 2 rounds that away, the mean keeps it
    near = torch.tensor([[-1e-20, -46.0], [-3e-20, -45.0]], dtype=torch.float64)
    assert float(log_mean_prob(near, dim=0)[0]) == pytest.approx(-2e-20, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("module", ["steerunc.scoring.divergence", "steerunc.scoring.fusion"])
def test_the_examples_in_the_docstrings_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
