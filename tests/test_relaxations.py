"""Tests for pwgf.relaxations: noise laws, the Gumbel-max trick, relaxations, straight-through, conditional noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pwgf import relaxations

# Probabilistic checks use fixed seeds and a significance level of 1e-3: a correct sampler fails one of
# them with probability 1e-3 per seed, and the seeds are fixed, so a pass is reproducible.
ALPHA = 1e-3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- noise -------------------------------------------------------------------------------------------


def test_sample_gumbel_shape_dtype_and_law():
    g = relaxations.sample_gumbel((200_000,), generator=gen(0))
    assert g.shape == (200_000,) and g.dtype == torch.float64
    assert torch.isfinite(g).all()
    assert stats.kstest(g.numpy(), stats.gumbel_r.cdf).pvalue > ALPHA
    # mean = Euler-Mascheroni constant, variance = pi^2/6; 5 standard errors
    se = math.sqrt(math.pi**2 / 6 / g.numel())
    assert abs(g.mean().item() - np.euler_gamma) < 5 * se
    assert relaxations.sample_gumbel((3, 4), generator=gen(1), dtype=torch.float32).dtype == torch.float32


def test_sample_gumbel_is_seeded():
    assert torch.equal(relaxations.sample_gumbel((5,), generator=gen(3)), relaxations.sample_gumbel((5,), generator=gen(3)))


def test_sample_logistic_law():
    L = relaxations.sample_logistic((200_000,), generator=gen(2))
    assert torch.isfinite(L).all()
    assert stats.kstest(L.numpy(), stats.logistic.cdf).pvalue > ALPHA


# ---- Gumbel-max --------------------------------------------------------------------------------------


def test_gumbel_argmax_is_categorical_chi_square():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0, -0.5], dtype=torch.float64)
    n = 100_000
    z = relaxations.gumbel_argmax(logits, relaxations.sample_gumbel((n, 5), generator=gen(4)))
    assert z.shape == (n, 5) and torch.equal(z.sum(-1), torch.ones(n, dtype=torch.float64))
    counts = z.sum(0).numpy()
    expected = n * torch.softmax(logits, -1).numpy()
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_gumbel_argmax_never_picks_minus_infinity_and_has_no_gradient():
    logits = torch.tensor([0.0, -math.inf, 1.0], dtype=torch.float64, requires_grad=True)
    z = relaxations.gumbel_argmax(logits, relaxations.sample_gumbel((10_000, 3), generator=gen(5)))
    assert z[:, 1].sum() == 0
    assert not z.requires_grad


# ---- Gumbel-Softmax / Concrete -----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    logits=st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    tau=st.floats(0.05, 10.0),
    seed=st.integers(0, 2**31),
)
def test_gumbel_softmax_is_a_point_of_the_simplex(logits, tau, seed):
    a = torch.tensor(logits, dtype=torch.float64)
    g = relaxations.sample_gumbel(a.shape, generator=gen(seed))
    y = relaxations.gumbel_softmax(a, g, tau)
    assert (y >= 0).all()
    assert abs(y.sum().item() - 1.0) < 1e-12
    torch.testing.assert_close(y, torch.softmax((a + g) / tau, -1), rtol=0, atol=1e-15)


def test_gumbel_softmax_zero_temperature_limit_is_gumbel_argmax():
    a = torch.randn(1000, 7, generator=gen(6), dtype=torch.float64)
    g = relaxations.sample_gumbel(a.shape, generator=gen(7))
    hard = relaxations.gumbel_argmax(a, g)
    # The gap between the two largest perturbed logits is at least `gap`; the soft sample is then within
    # (K-1) exp(-gap/tau) of the one-hot in sup norm.
    top2 = (a + g).topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]).min().item()
    tau = gap / 50
    bound = 6 * math.exp(-50)
    assert (relaxations.gumbel_softmax(a, g, tau) - hard).abs().max().item() <= bound + 1e-15


def test_gumbel_softmax_gradient_matches_finite_differences():
    a = torch.tensor([[0.2, -0.3, 1.1], [0.0, 0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    g = relaxations.sample_gumbel(a.shape, generator=gen(8))
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: relaxations.gumbel_softmax(x, g, t), (a, tau))


def test_binary_concrete_is_two_class_gumbel_softmax():
    a = torch.linspace(-3, 3, 13, dtype=torch.float64)
    g = relaxations.sample_gumbel((13, 2), generator=gen(9))
    two = relaxations.gumbel_softmax(torch.stack([torch.zeros_like(a), a], -1), g, 0.4)[:, 1]
    torch.testing.assert_close(relaxations.binary_concrete(a, g[:, 1] - g[:, 0], 0.4), two, rtol=0, atol=1e-14)


def test_binary_concrete_limit_is_bernoulli():
    a = torch.tensor([-1.0, 0.0, 0.7], dtype=torch.float64)
    n = 200_000
    L = relaxations.sample_logistic((n, 3), generator=gen(10))
    hard = (a + L > 0).double()
    se = torch.sqrt(torch.sigmoid(a) * (1 - torch.sigmoid(a)) / n)
    assert ((hard.mean(0) - torch.sigmoid(a)).abs() < 5 * se).all()
    y = relaxations.binary_concrete(a, L, 1e-3)
    far = (a + L).abs() > 0.1  # there sigma(x/tau) is within exp(-100) of the indicator
    assert (y[far] - hard[far]).abs().max() < 1e-40


def test_binary_concrete_gradient():
    a = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    L = relaxations.sample_logistic((2,), generator=gen(11))
    assert torch.autograd.gradcheck(lambda x: relaxations.binary_concrete(x, L, 0.5), (a,))


# ---- straight-through --------------------------------------------------------------------------------


def test_straight_through_value_and_gradient():
    a = torch.tensor([0.1, 0.9, -0.4], dtype=torch.float64, requires_grad=True)
    g = relaxations.sample_gumbel((3,), generator=gen(12))
    soft = relaxations.gumbel_softmax(a, g, 0.5)
    hard = relaxations.gumbel_argmax(a, g)
    y = relaxations.straight_through(hard, soft)
    assert torch.equal(y.detach(), hard)
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    (grad_st,) = torch.autograd.grad((w * y).sum(), a)
    (grad_soft,) = torch.autograd.grad((w * relaxations.gumbel_softmax(a, g, 0.5)).sum(), a)
    torch.testing.assert_close(grad_st, grad_soft, rtol=0, atol=1e-15)


def test_straight_through_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        relaxations.straight_through(torch.zeros(3), torch.zeros(4))


# ---- conditional noise (REBAR) -----------------------------------------------------------------------


def test_conditional_gumbel_agrees_with_hard_and_has_gumbel_marginals():
    a = torch.tensor([0.5, -1.0, 1.5, 0.0], dtype=torch.float64)
    n = 100_000
    hard = relaxations.gumbel_argmax(a, relaxations.sample_gumbel((n, 4), generator=gen(13)))
    v = torch.rand((n, 4), generator=gen(14), dtype=torch.float64)
    g = relaxations.conditional_gumbel(a, hard, v)
    assert torch.equal(relaxations.gumbel_argmax(a, g), hard)
    # Drawing b ~ Cat(softmax a) and then g | b gives back unconditional i.i.d. Gumbel noise.
    for k in range(4):
        assert stats.kstest(g[:, k].numpy(), stats.gumbel_r.cdf).pvalue > ALPHA


def test_conditional_gumbel_minus_infinity_logit_and_gradient():
    a = torch.tensor([0.0, -math.inf, 1.0], dtype=torch.float64, requires_grad=True)
    hard = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    v = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)
    g = relaxations.conditional_gumbel(a, hard, v)
    assert g[1] == 0 and torch.isfinite(g).all()
    g.sum().backward()
    assert torch.isfinite(a.grad).all()
    b = torch.tensor([0.2, -0.4, 1.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: relaxations.conditional_gumbel(x, hard, v), (b,))


def test_conditional_logistic_agrees_with_b_and_has_logistic_marginal():
    a = torch.tensor([-0.8, 0.0, 2.0], dtype=torch.float64)
    n = 100_000
    b = (a + relaxations.sample_logistic((n, 3), generator=gen(15)) > 0).double()
    v = torch.rand((n, 3), generator=gen(16), dtype=torch.float64)
    L = relaxations.conditional_logistic(a, b, v)
    assert torch.equal((a + L > 0).double(), b)
    for k in range(3):
        assert stats.kstest(L[:, k].numpy(), stats.logistic.cdf).pvalue > ALPHA
    x = a.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: relaxations.conditional_logistic(t, b[:5], v[:5]), (x,))


def test_conditional_logistic_is_stable_for_large_logits():
    a = torch.tensor([40.0, -40.0], dtype=torch.float64)
    v = torch.tensor([0.5, 0.5], dtype=torch.float64)
    L = relaxations.conditional_logistic(a, torch.tensor([0.0, 1.0]), v)
    assert torch.isfinite(L).all()
    assert (a + L > 0).tolist() == [False, True]


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(tau):
    a = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="temperature"):
        relaxations.gumbel_softmax(a, a, tau)
    with pytest.raises(ValueError, match="temperature"):
        relaxations.binary_concrete(a, a, tau)


def test_bad_logits_and_noise():
    ok = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="logits"):
        relaxations.gumbel_argmax(torch.tensor([0.0, float("nan"), 1.0]), ok)
    with pytest.raises(ValueError, match="logits"):
        relaxations.gumbel_softmax(torch.tensor([0.0, float("inf"), 1.0]), ok, 1.0)
    with pytest.raises(ValueError, match="logits"):
        relaxations.gumbel_softmax([0.0, 1.0, 2.0], ok, 1.0)
    with pytest.raises(ValueError, match="uniform"):
        relaxations.conditional_gumbel(ok, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="one-hot"):
        relaxations.conditional_gumbel(ok, torch.tensor([1.0, 1.0, 0.0]), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="0 and 1"):
        relaxations.conditional_logistic(ok, torch.tensor([0.0, 2.0, 1.0]), torch.full((3,), 0.5))


def test_uniforms_are_drawn_on_the_generators_device_and_moved_to_the_models():
    # A CPU generator serves a model on another device: the same numbers as on the CPU, then moved
    # ("meta" stands in for an accelerator on machines without one).
    on_cpu = relaxations.sample_uniform((3, 4), generator=torch.Generator().manual_seed(5))
    same = relaxations.sample_uniform((3, 4), generator=torch.Generator().manual_seed(5), device="cpu")
    moved = relaxations.sample_uniform((3, 4), generator=torch.Generator().manual_seed(5), device="meta")
    assert torch.equal(on_cpu, same) and moved.device.type == "meta" and moved.shape == (3, 4)
