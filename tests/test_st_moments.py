"""Exact moments of the straight-through estimators (pwgf.theory.st_moments) against independent references:
one-dimensional quadrature over the logistic density, enumeration by other modules, and Monte Carlo
draws of the library's estimators (independent copies along a batch axis, one vectorized call).

Monte Carlo means are compared within 4 standard errors (false-alarm probability 6.3e-5 per coordinate
under the CLT); a variance estimate s^2 over R draws has standard error sqrt(Var((x - mean)^2) / R),
estimated from the same draws, and is compared within 5 of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from torch import distributions as D

from pwgf import estimators as E
from pwgf import exact, projection
from pwgf.theory import st_moments, toys

DT = torch.float64
LOGITS = torch.tensor([-1.3, 0.2, 2.1], dtype=DT)
W = torch.tensor([0.9, -1.4, 0.6], dtype=DT)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f_smooth(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(z @ W) + 0.5 * (z**2).sum(-1) + z[..., 0] * z[..., 2] ** 3


def bernoulli(logits: torch.Tensor, replicates: int = 0) -> D.Distribution:
    return D.Independent(D.Bernoulli(logits=logits.expand(replicates, *logits.shape) if replicates else logits), 1)


def reference_moments(logit: float, b: int, tau: float) -> tuple[float, float]:
    """E[w | D = b] and E[w^2 | D = b], w = sigma'((l + L)/tau)/tau, by quadrature against the logistic pdf in x."""
    jac = lambda x: special.expit((logit + x) / tau) * special.expit(-(logit + x) / tau) / tau  # noqa: E731
    lo, hi = (-logit, np.inf) if b else (-np.inf, -logit)
    mass = special.expit(logit) if b else special.expit(-logit)
    # The kernel has width tau around x = -logit: split there so that quad sees it.
    pieces = [(lo, -logit + 40 * tau), (-logit + 40 * tau, hi)] if b else [(lo, -logit - 40 * tau), (-logit - 40 * tau, hi)]
    first = sum(integrate.quad(lambda x: stats.logistic.pdf(x) * jac(x), a, c, epsabs=1e-15, epsrel=1e-12, limit=200)[0] for a, c in pieces)
    second = sum(integrate.quad(lambda x: stats.logistic.pdf(x) * jac(x) ** 2, a, c, epsabs=1e-15, epsrel=1e-12, limit=200)[0] for a, c in pieces)
    return first / mass, second / mass


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_gumbel_moments_match_quadrature_in_the_noise(tau):
    logits = torch.tensor([-3.0, -0.4, 0.0, 1.7], dtype=DT)
    first, second = st_moments.weight_moments("st_gumbel_softmax", logits, temperature=tau)
    for k, logit in enumerate(logits.tolist()):
        for b in (0, 1):
            m1, m2 = reference_moments(logit, b, tau)
            assert abs(first[b, k].item() - m1) <= 1e-9 * m1, (tau, logit, b)
            assert abs(second[b, k].item() - m2) <= 1e-9 * m2, (tau, logit, b)


def test_gumbel_moments_keep_their_accuracy_at_saturated_logits():
    # P(D = 1) = sigma(-30) ~ 1e-13: given D = 1 the noise is ~ Exp(1) above 30, so E[w | D = 1] = E[sigma'(E/tau)/tau], E ~ Exp(1).
    first, _ = st_moments.weight_moments("st_gumbel_softmax", torch.tensor([-30.0], dtype=DT), temperature=0.5)
    value, _ = integrate.quad(lambda e: np.exp(-e) * special.expit(e / 0.5) * special.expit(-e / 0.5) / 0.5, 0, np.inf, epsabs=1e-14)
    assert abs(first[1, 0].item() - value) < 1e-9
    assert torch.isfinite(first).all()


def test_gumbel_rao_second_moment_interpolates_between_st_gumbel_softmax_and_its_conditional_mean():
    first, second = st_moments.weight_moments("st_gumbel_softmax", LOGITS)
    _, one = st_moments.weight_moments("gumbel_rao", LOGITS, n_conditional=1)
    _, many = st_moments.weight_moments("gumbel_rao", LOGITS, n_conditional=10**9)
    torch.testing.assert_close(one, second, rtol=1e-14, atol=0)
    torch.testing.assert_close(many, first**2, rtol=1e-8, atol=0)


def test_reinmax_at_temperature_one_has_the_half_weights():
    # 2 pi (1 - pi) - p (1 - p)/2 with pi = (p + D)/2 is p/2 at D = 0 and (1 - p)/2 at D = 1.
    first, _ = st_moments.weight_moments("reinmax", LOGITS)
    p = torch.sigmoid(LOGITS)
    torch.testing.assert_close(first, torch.stack([p / 2, (1 - p) / 2]), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize(
    ("name", "opts"),
    [("st", {}), ("pwgf_st", {}), ("reinmax", {}), ("reinmax", {"temperature": 0.5}), ("gapped_st", {"temperature": 0.8, "gap": 1.5}),
     ("st_gumbel_softmax", {}), ("gumbel_rao", {"n_conditional": 3})],
)
def test_mean_and_variance_are_those_of_the_library_estimators(name, opts):
    R, n = 20000, 2
    draws = E.estimate(name, bernoulli(LOGITS, R), f_smooth, n, generator=gen(3), **opts)
    mean = st_moments.mean(name, bernoulli(LOGITS), f_smooth, **opts)
    var = st_moments.variance(name, bernoulli(LOGITS), f_smooth, n_samples=n, **opts)
    z = (draws.mean(0) - mean) / (draws.std(0) / R**0.5)
    assert z.abs().max() < 4, z
    centred = (draws - draws.mean(0)) ** 2
    z_var = (draws.var(0) - var) / (centred.std(0) / R**0.5)
    assert z_var.abs().max() < 5, z_var


def test_probability_parameters_get_the_chain_rule():
    p = torch.sigmoid(LOGITS)
    mean_logits = st_moments.mean("reinmax", bernoulli(LOGITS), f_smooth)
    mean_probs = st_moments.mean("reinmax", "bernoulli", p, f_smooth)
    torch.testing.assert_close(mean_probs, mean_logits / (p * (1 - p)), rtol=1e-12, atol=0)
    var_probs = st_moments.variance("gapped_st", "bernoulli", p, f_smooth)
    torch.testing.assert_close(var_probs, st_moments.variance("gapped_st", bernoulli(LOGITS), f_smooth) / (p * (1 - p)) ** 2, rtol=1e-12, atol=0)


def test_st_mean_equals_the_projection_module_enumeration():
    p = torch.tensor([0.2, 0.5, 0.9], dtype=DT)
    torch.testing.assert_close(st_moments.mean("st", "bernoulli", p, f_smooth), projection.st_expectation("bernoulli", p, f_smooth), rtol=1e-12, atol=1e-14)
    logits = torch.tensor([[0.3, -1.0, 0.5], [1.0, 0.2, -0.4]], dtype=DT)
    w = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.4]], dtype=DT)
    f = lambda z: torch.sin((z * w).sum((-1, -2))) + ((z * w).sum(-1) ** 2).sum(-1)  # noqa: E731
    dist = D.Independent(D.OneHotCategorical(logits=logits), 1)
    torch.testing.assert_close(st_moments.mean("st", dist, f), projection.st_expectation(dist, f), rtol=1e-12, atol=1e-14)


def test_categorical_means_are_those_of_the_library_estimators():
    logits = torch.tensor([[0.3, -1.0, 0.5], [1.0, 0.2, -0.4]], dtype=DT)
    w = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.4]], dtype=DT)
    f = lambda z: torch.sin((z * w).sum((-1, -2))) + ((z * w).sum(-1) ** 3).sum(-1)  # noqa: E731
    R = 20000
    for k, (name, opts) in enumerate([("reinmax", {"temperature": 0.7}), ("gapped_st", {"temperature": 0.8, "gap": 1.5})]):
        draws = E.estimate(name, D.Independent(D.OneHotCategorical(logits=logits.expand(R, 2, 3)), 1), f, 1, generator=gen(10 + k), **opts)
        mean = st_moments.mean(name, D.Independent(D.OneHotCategorical(logits=logits), 1), f, **opts)
        z = (draws.mean(0) - mean) / (draws.std(0) / R**0.5)
        assert z.abs().max() < 4, (name, z)


def test_reinmax_at_temperature_one_is_exact_for_quadratic_categorical_costs():
    logits = torch.tensor([[0.3, -1.0, 0.5, 0.0], [1.0, 0.2, -0.4, -2.0]], dtype=DT)
    A = torch.randn(8, 8, dtype=DT, generator=gen(1))
    f = lambda z: torch.einsum("...i,ij,...j->...", z.flatten(-2), A, z.flatten(-2))  # noqa: E731
    dist = D.Independent(D.OneHotCategorical(logits=logits), 1)
    truth = exact.gradient(dist, f)
    torch.testing.assert_close(st_moments.mean("reinmax", dist, f), truth, rtol=1e-12, atol=1e-13)
    assert (st_moments.mean("st", dist, f) - truth).abs().max() > 1e-2
    assert (st_moments.mean("reinmax", dist, f, temperature=0.5) - truth).abs().max() > 1e-2


def test_edges_list_differences_and_slopes_in_binary_order():
    f = lambda z: z[..., 0] * 10 + z[..., 1] ** 3 * 2 + z[..., 0] * z[..., 2]  # noqa: E731
    e = st_moments.edges(f, 3)
    # coordinate 0: rows are (z1, z2) = 00, 01, 10, 11, difference 10 + z2
    torch.testing.assert_close(e.difference[:, 0], torch.tensor([10.0, 11.0, 10.0, 11.0], dtype=DT))
    # coordinate 1: slope 6 z1^2 of 2 z^3, rows (z0, z2): 0 at z1 = 0, 6 at z1 = 1; difference 2
    torch.testing.assert_close(e.slope_at_0[:, 1], torch.zeros(4, dtype=DT))
    torch.testing.assert_close(e.slope_at_1[:, 1], torch.full((4,), 6.0, dtype=DT))
    torch.testing.assert_close(e.trapezoid_error[:, 1], torch.ones(4, dtype=DT))
    # coordinate 2 is multilinear: Euler is exact
    assert e.euler_error[:, 2].abs().max() == 0
    assert st_moments.edges(lambda z: torch.sin(torch.pi * z).pow(2).sum(-1), 2).size < 1e-15


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: st_moments.weight_moments("reinforce", LOGITS), "unknown estimator"),
        (lambda: st_moments.weight_moments("reinmax", LOGITS, gap=1.0), "unknown option"),
        (lambda: st_moments.weight_moments("gapped_st", LOGITS, gap=0.0), "gap must be > 0"),
        (lambda: st_moments.mean("st", "poisson", torch.tensor([1.0], dtype=DT), f_smooth), "bernoulli and categorical"),
        (lambda: st_moments.mean("st", bernoulli(LOGITS, 2), f_smooth), "single example"),
        (lambda: st_moments.mean("st_gumbel_softmax", D.Independent(D.OneHotCategorical(logits=torch.zeros(2, 3, dtype=DT)), 1), lambda z: z.sum((-1, -2))), "unknown estimator"),
        (lambda: st_moments.variance("st", D.Independent(D.OneHotCategorical(logits=torch.zeros(2, 3, dtype=DT)), 1), lambda z: z.sum((-1, -2))), "Bernoulli"),
        (lambda: st_moments.edges(f_smooth, 0), "d must be"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- the zoo's problems and the batched measurement ---------------------------------------------------


def test_toys_have_their_stated_gradients_and_broadcast():
    for p0 in (0.45, 0.499):
        theta, f = toys.tucker(p0)
        assert abs(exact.gradient("bernoulli", theta, f).item() - (1 - 2 * p0)) < 1e-14
    p, f = toys.decoder()
    assert p.shape == (10,) and ((p > 0.1) & (p < 0.9)).all()
    z = (torch.rand(5, 7, 10, generator=gen(0), dtype=DT) < 0.5).to(DT)
    torch.testing.assert_close(f(z)[2], f(z[2]))
    torch.testing.assert_close(toys.decoder()[1](z), f(z))  # fixed by the seed
    lam, f_pois = toys.poisson_counts()
    assert f_pois(torch.zeros(4, 2, 3, dtype=DT)).shape == (4, 2)
    with pytest.raises(ValueError, match="p must lie"):
        toys.tucker(0.45, p=1.0)


def test_batched_measure_has_the_statistics_of_independent_calls():
    theta, f = toys.tucker(0.45)
    reference = exact.gradient("bernoulli", theta, f)
    batched = E.measure("st", "bernoulli", theta, f, 8, 4000, reference=reference, generator=gen(4), batched=True)
    # ST's mean here is 2(p - p0) = -0.3 (zoo chapter): bias -0.4, variance 4 p (1 - p) / 8 in the probability parameter.
    assert abs(batched["bias2"] ** 0.5 - 0.4) < 4 * (0.105 / 4000) ** 0.5
    assert abs(batched["variance"] / (4 * 0.3 * 0.7 / 8) - 1) < 5 * (2 / 4000) ** 0.5
    assert batched["points"] == 8
    p, f_decoder = toys.decoder()
    reference = exact.gradient("bernoulli", p, f_decoder)
    unbiased = E.measure("disarm", "bernoulli", p, f_decoder, 4, 2000, reference=reference, generator=gen(5), batched=True)
    assert unbiased["z_max"] < 4 and unbiased["points"] == 8  # four antithetic pairs


def test_batched_must_be_a_bool():
    theta, f = toys.tucker(0.45)
    with pytest.raises(ValueError, match="batched must be True or False"):
        E.measure("st", "bernoulli", theta, f, 2, 10, reference=torch.zeros(1, dtype=DT), batched="yes")
