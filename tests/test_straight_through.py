"""ReinMax, Gumbel-Rao and Gapped ST: each estimate against its formula computed independently from the
same samples, and each expectation against enumeration of the discrete states (with one-dimensional
quadrature over the conditional noise for the Gumbel estimators).

Monte Carlo means are compared with exact expectations within 4 standard errors (false-alarm
probability below 1e-3 over the at most 12 coordinates of one test); the replicates are independent
copies of the examples along a batch axis, so each check is one vectorized call.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from torch import distributions as D

from pwgf import estimators as E
from pwgf import exact, straight_through
from pwgf.discrete import as_discrete

DT = torch.float64
LOGITS = torch.tensor([-1.3, 0.2, 2.1], dtype=DT)
W = torch.tensor([0.9, -1.4, 0.6], dtype=DT)
A = torch.tensor([[1.0, 0.5, -0.7], [0.5, -2.0, 0.3], [-0.7, 0.3, 0.8]], dtype=DT)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f_smooth(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(z @ W) + 0.5 * (z**2).sum(-1)


def f_quadratic(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.einsum("...i,ij,...j->...", z, A, z) + z @ W


def bernoulli(logits: torch.Tensor, replicates: int = 0) -> D.Distribution:
    return D.Independent(D.Bernoulli(logits=logits.expand(replicates, *logits.shape) if replicates else logits), 1)


def grad_at(f, z: torch.Tensor) -> torch.Tensor:
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(z).sum(), z)
    return g


def bernoulli_states(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=DT)


def enumerate_mean(weight_of_state, logits: torch.Tensor, f) -> torch.Tensor:
    """sum_b p(b) grad f(b) * w(b): the mean of an estimator whose estimate given the sample b is grad f(b) * w(b)."""
    p = torch.sigmoid(logits)
    total = torch.zeros_like(logits)
    for b in bernoulli_states(len(logits)):
        prob = torch.prod(torch.where(b > 0, p, 1 - p))
        total += prob * grad_at(f, b[None])[0] * weight_of_state(b)
    return total


# ---- ReinMax ---------------------------------------------------------------------------------------


def test_reinmax_bernoulli_matches_its_formula_on_the_same_samples():
    dist, tau = bernoulli(LOGITS), 0.7
    b = as_discrete(dist).sample(5, gen(1))
    p = torch.sigmoid(LOGITS)
    pi = 0.5 * (torch.sigmoid(LOGITS / tau) + b)
    expected = (grad_at(f_smooth, b) * (2 * pi * (1 - pi) - 0.5 * p * (1 - p))).mean(0)
    torch.testing.assert_close(E.estimate("reinmax", dist, f_smooth, 5, generator=gen(1), temperature=tau), expected, rtol=1e-12, atol=1e-14)


def test_reinmax_categorical_matches_its_formula_on_the_same_samples():
    logits = torch.tensor([[0.3, -1.0, 0.5, 0.0], [1.0, 0.2, -0.4, 2.0]], dtype=DT)
    w = torch.randn(2, 4, dtype=DT, generator=gen(0))
    dist, tau = D.Independent(D.OneHotCategorical(logits=logits), 1), 0.5
    f = lambda z: torch.sin((z * w).sum((-1, -2))) + (z * w).sum(-1).pow(2).sum(-1)  # noqa: E731
    hard = as_discrete(dist).sample(3, gen(2))
    g = grad_at(f, hard)
    p = torch.softmax(logits, -1)
    pi = 0.5 * (torch.softmax(logits / tau, -1) + hard)

    def jac(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # (diag(v) - v v^T) x
        return v * x - v * (v * x).sum(-1, keepdim=True)

    expected = (2 * jac(pi, g) - 0.5 * jac(p, g)).mean(0)
    torch.testing.assert_close(E.estimate("reinmax", dist, f, 3, generator=gen(2), temperature=tau), expected, rtol=1e-12, atol=1e-14)


def test_reinmax_is_exact_for_quadratic_costs_at_temperature_one():
    # Heun's rule integrates a quadratic exactly: E[estimate] = grad L for Bernoulli coordinates and tau = 1.
    truth = exact.gradient(bernoulli(LOGITS), f_quadratic)
    p = torch.sigmoid(LOGITS)

    def weight(tau):
        return lambda b: 2 * (0.5 * (torch.sigmoid(LOGITS / tau) + b)) * (1 - 0.5 * (torch.sigmoid(LOGITS / tau) + b)) - 0.5 * p * (1 - p)

    torch.testing.assert_close(enumerate_mean(weight(1.0), LOGITS, f_quadratic), truth, rtol=1e-12, atol=1e-14)
    assert (enumerate_mean(weight(0.5), LOGITS, f_quadratic) - truth).abs().max() > 1e-2  # not exact at another temperature
    draws = E.estimate("reinmax", bernoulli(LOGITS, 4000), f_quadratic, 1, generator=gen(3))
    z = (draws.mean(0) - truth) / (draws.std(0) / 4000**0.5)
    assert z.abs().max() < 4, z


# ---- Gapped ST -----------------------------------------------------------------------------------


def gapped_weight(logits: torch.Tensor, tau: float, gap: float):
    def weight(b: torch.Tensor) -> torch.Tensor:
        moved = torch.where(b > 0, torch.maximum(logits, torch.full_like(logits, gap)), torch.minimum(logits, torch.full_like(logits, -gap)))
        s = torch.sigmoid(moved / tau)
        return s * (1 - s) / tau

    return weight


def test_gapped_st_matches_its_formula_and_expectation():
    tau, gap = 0.8, 1.5
    dist = bernoulli(LOGITS)
    b = as_discrete(dist).sample(4, gen(5))
    expected = (grad_at(f_smooth, b) * gapped_weight(LOGITS, tau, gap)(b)).mean(0)
    torch.testing.assert_close(E.estimate("gapped_st", dist, f_smooth, 4, generator=gen(5), temperature=tau, gap=gap), expected, rtol=1e-12, atol=1e-14)
    mean = enumerate_mean(gapped_weight(LOGITS, tau, gap), LOGITS, f_smooth)
    draws = E.estimate("gapped_st", bernoulli(LOGITS, 4000), f_smooth, 1, generator=gen(6), temperature=tau, gap=gap)
    z = (draws.mean(0) - mean) / (draws.std(0) / 4000**0.5)
    assert z.abs().max() < 4, z


def test_gapped_st_bernoulli_is_the_two_class_categorical():
    # A Bernoulli coordinate with logit l is the categorical with logits (0, l) whose category 1 is z = 1.
    tau, gap = 0.8, 1.5
    two_class = torch.stack([torch.zeros_like(LOGITS), LOGITS], -1)
    dist = D.Independent(D.OneHotCategorical(logits=two_class), 1)

    def f_onehot(onehot: torch.Tensor) -> torch.Tensor:
        return f_smooth(onehot[..., 1])

    categorical = E.estimate("gapped_st", D.Independent(D.OneHotCategorical(logits=two_class.expand(6000, 3, 2)), 1), f_onehot, 1, generator=gen(7), temperature=tau, gap=gap)
    # the gradient in the logit l of (0, l) is the second column; its mean must be the Bernoulli one
    mean = enumerate_mean(gapped_weight(LOGITS, tau, gap), LOGITS, f_smooth)
    z = (categorical[..., 1].mean(0) - mean) / (categorical[..., 1].std(0) / 6000**0.5)
    assert z.abs().max() < 4, z
    assert dist.batch_shape == ()


# ---- Gumbel-Rao --------------------------------------------------------------------------------------


def conditional_jacobian(logit: float, b: float, tau: float) -> float:
    """E[sigma'((l + L)/tau)/tau | 1[l + L > 0] = b] for logistic L, by quadrature over the conditional density."""
    jac = lambda x: special.expit((logit + x) / tau) * special.expit(-(logit + x) / tau) / tau  # noqa: E731
    lo, hi = (-logit, np.inf) if b > 0 else (-np.inf, -logit)
    mass = special.expit(logit) if b > 0 else special.expit(-logit)
    value, _ = integrate.quad(lambda x: stats.logistic.pdf(x) * jac(x), lo, hi, epsabs=1e-14, epsrel=1e-12)
    return value / mass


def test_gumbel_rao_and_st_gumbel_softmax_share_their_expectation_with_less_variance():
    tau = 0.5
    table = {b: torch.tensor([conditional_jacobian(l, b, tau) for l in LOGITS.tolist()], dtype=DT) for b in (0.0, 1.0)}
    mean = enumerate_mean(lambda b: torch.where(b > 0, table[1.0], table[0.0]), LOGITS, f_smooth)
    draws = {
        name: E.estimate(name, bernoulli(LOGITS, 4000), f_smooth, 1, generator=gen(8), temperature=tau)
        for name in ("st_gumbel_softmax", "gumbel_rao")
    }
    for name, d in draws.items():
        z = (d.mean(0) - mean) / (d.std(0) / 4000**0.5)
        assert z.abs().max() < 4, (name, z)
    # Rao-Blackwellization: Var(GR) <= Var(ST-GS) coordinate by coordinate. With 4000 replicates a variance
    # is known to about 2-3 % (relative SE sqrt(2/R) for near-Gaussian draws); the ratio here is far lower.
    ratio = draws["gumbel_rao"].var(0) / draws["st_gumbel_softmax"].var(0)
    assert (ratio < 0.9).all(), ratio


def test_gumbel_rao_variance_falls_with_more_conditional_draws():
    variances = [
        E.estimate("gumbel_rao", bernoulli(LOGITS, 4000), f_smooth, 1, generator=gen(9), n_conditional=k).var(0).sum().item() for k in (1, 10, 100)
    ]
    assert variances[0] > variances[1] > variances[2]


def test_gumbel_rao_categorical_shares_the_st_gumbel_softmax_mean():
    logits = torch.tensor([[0.3, -1.0, 0.5], [1.0, 0.2, -0.4]], dtype=DT)
    w = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.4]], dtype=DT)
    f = lambda z: torch.sin((z * w).sum((-1, -2)))  # noqa: E731
    dist = D.Independent(D.OneHotCategorical(logits=logits.expand(6000, 2, 3)), 1)
    st_gs = E.estimate("st_gumbel_softmax", dist, f, 1, generator=gen(10))
    gr = E.estimate("gumbel_rao", dist, f, 1, generator=gen(11))
    # two independent Monte Carlo means of the same expectation: their difference has variance SE1^2 + SE2^2
    z = (st_gs.mean(0) - gr.mean(0)) / (st_gs.var(0) / 6000 + gr.var(0) / 6000).sqrt()
    assert z.abs().max() < 4, z
    assert (gr.var(0).sum() < st_gs.var(0).sum()).item()


@pytest.mark.parametrize(("name", "option", "value"), [("gumbel_rao", "n_conditional", 0), ("gapped_st", "gap", 0.0), ("reinmax", "temperature", -1.0)])
def test_bad_options_raise(name, option, value):
    with pytest.raises(ValueError, match=option if option != "n_conditional" else "n_conditional must be an integer >= 1"):
        E.estimate(name, bernoulli(LOGITS), f_smooth, 1, **{option: value})


def test_conditional_noise_stays_finite_for_float32_logits_and_uniforms_near_one():
    # A float64 uniform within 2**-25 of 1 rounds to 1.0 in float32; the noise is computed in float64 before the cast.
    logits = torch.tensor([[0.3, -2.0], [4.0, 0.0]], dtype=torch.float32)
    q = as_discrete(D.Independent(D.Bernoulli(logits=logits), 1))
    hard = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float32)
    uniform = torch.full((2, 2), 1 - 1e-12, dtype=torch.float64)
    for reparameterized in (False, True):
        noise = straight_through.conditional_noise(q, hard, uniform, reparameterized=reparameterized)
        assert noise.dtype == torch.float32 and torch.isfinite(noise).all()
        assert ((logits + noise > 0) == (hard > 0)).all()  # still consistent with the sample
