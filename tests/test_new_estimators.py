"""ZGR, the unordered-set estimator, VIMCO and the EAT relaxations against enumeration and quadrature."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import distributions as D

from pwgf import arrival_times, exact
from pwgf import estimators as E
from pwgf.experiments import vae
from pwgf.vimco import vimco, vimco_at
from pwgf.without_replacement import set_terms

torch.set_default_dtype(torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- ZGR ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_zgr_is_reinmax_at_unit_temperature_sample_by_sample(kind):
    shape = (4, 3) if kind == "bernoulli" else (4, 5)
    logits = torch.randn(shape, generator=gen(1))
    w = torch.randn(shape, generator=gen(2))

    def f(z: torch.Tensor) -> torch.Tensor:
        x = torch.cos(z * w) + (z * w) ** 3
        return x.sum(-1) if kind == "categorical" else x

    def dist() -> D.Distribution:
        return D.Bernoulli(logits=logits) if kind == "bernoulli" else D.OneHotCategorical(logits=logits)

    zgr = E.estimate("zgr", dist(), f, 6, generator=gen(3))
    reinmax = E.estimate("reinmax", dist(), f, 6, generator=gen(3), temperature=1.0)
    torch.testing.assert_close(zgr, reinmax, rtol=0, atol=1e-14)


def _zgr_mean_by_enumeration(p: float, slope0: float, slope1: float) -> float:
    # E over D of f'(D) (p(1-p) + (D - p)^2) / 2, the derivative in the logit; f' given at 0 and 1.
    return (1 - p) * slope0 * 0.5 * (p * (1 - p) + p**2) + p * slope1 * 0.5 * (p * (1 - p) + (1 - p) ** 2)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_zgr_exactness_class_on_one_bernoulli_coordinate(degree):
    # Exact for f = z and z^2 (its mean is the trapezoid rule on the edge), not for z^3 where the trapezoid errs.
    ell = torch.tensor([0.7])
    p = float(torch.sigmoid(ell))
    f = lambda z: z**degree
    mean = _zgr_mean_by_enumeration(p, 0.0 if degree > 1 else 1.0, float(degree))
    exact_grad = p * (1 - p) * (1.0 - 0.0)  # d/dl E z^k = d p / d l, since z^k = z on {0, 1}
    zgr = E.estimate("zgr", D.Bernoulli(logits=ell), f, 20000, generator=gen(0))
    # ZGR given D is deterministic: its mean over 20000 draws is the enumerated mean within 4 standard errors.
    assert abs(float(zgr) - mean) < 4 * 0.25 / 20000**0.5 * degree
    assert (abs(mean - exact_grad) < 1e-15) == (degree <= 2)


# ---- the unordered-set estimator ------------------------------------------------------------------


def _set_probability(p: np.ndarray, subset: tuple[int, ...]) -> float:
    """P(the k draws without replacement form ``subset``), summed over its orderings (an independent reference)."""
    total = 0.0
    for order in itertools.permutations(subset):
        prob, left = 1.0, 1.0
        for s in order:
            prob *= p[s] / left
            left -= p[s]
        total += prob
    return total


@pytest.mark.parametrize("k", [2, 3, 5])
def test_unordered_set_is_unbiased_by_enumeration_of_the_sets(k):
    # For one categorical of 5 classes, the expectation over every k-subset weighted by its probability (summed
    # over orderings, in numpy) equals the exact value and gradient to float64 rounding; k = 5 is exact outright.
    logits = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4], requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    f = lambda z: torch.sin((z * w).sum(-1)) + (z * w).sum(-1) ** 2
    p = torch.softmax(logits, -1).detach().numpy()
    states = torch.eye(5)
    values = f(states)
    mean_value, mean_grad = 0.0, torch.zeros(5)
    for subset in itertools.combinations(range(5), k):
        log_p = torch.log_softmax(logits, -1)
        index = torch.tensor(subset)
        outside = torch.logsumexp(log_p.detach()[[i for i in range(5) if i not in subset]], 0) if k < 5 else torch.tensor(-math.inf)
        weights, advantages = set_terms(log_p[index], outside, values[index])
        estimate = (weights * values[index]).sum()
        (grad,) = torch.autograd.grad((weights * advantages * log_p[index]).sum(), logits)
        prob = _set_probability(p, subset)
        mean_value, mean_grad = mean_value + prob * float(estimate), mean_grad + prob * grad
    (exact_grad,) = torch.autograd.grad((torch.softmax(logits, -1) * values).sum(), logits)
    assert abs(mean_value - float((torch.softmax(logits, -1) * values).sum().detach())) < 1e-12
    torch.testing.assert_close(mean_grad, exact_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_unordered_set_through_the_library_within_four_standard_errors(family):
    # Bernoulli: an event of three coordinates (8 states); categorical: two coordinates of three classes (9 states).
    theta = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]) if family == "categorical" else torch.tensor([0.3, 0.6, 0.8])
    f = (lambda z: ((z * torch.tensor([1.0, -2.0, 3.0])).sum(-1) ** 2).sum(-1)) if family == "categorical" else (lambda z: ((z - 0.45) ** 2).sum(-1))
    reference = E.estimate("exact", family, theta, f, 1)
    stats_ = E.measure("unordered_set", family, theta, f, 3, 4000, reference=reference, generator=gen(4), batched=True)
    assert stats_["z_max"] < 4, stats_


def test_unordered_set_with_the_whole_support_is_exact_and_bernoulli_is_two_classes():
    logits = torch.randn(4, 3, generator=gen(5))
    f = lambda z: torch.sin(2 * z) + z
    whole = E.estimate("unordered_set", D.Bernoulli(logits=logits), f, 2, generator=gen(6))
    torch.testing.assert_close(whole, E.estimate("exact", D.Bernoulli(logits=logits), f, 1), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"n_samples must lie in \[2, 2\]"):
        E.estimate("unordered_set", D.Bernoulli(logits=logits), f, 3)
    zero = D.OneHotCategorical(logits=torch.tensor([0.0, -torch.inf, 1.0]))
    E.estimate("unordered_set", zero, lambda z: z @ torch.tensor([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="states of positive probability"):
        E.estimate("unordered_set", zero, lambda z: z @ torch.tensor([1.0, 2.0, 3.0]), 3)


# ---- VIMCO ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [True, False])
def test_vimco_is_unbiased_for_the_gradient_of_the_multi_sample_bound_by_enumeration(baseline):
    # A Bernoulli VAE with 2 latent units (4 states), 2 images, K = 3: every one of the 4**3 tuples of samples
    # is enumerated. The mean of VIMCO's estimate over them, weighted by their probability, equals the gradient of
    # the exact bound (pwgf.exact.importance_weighted_bound), in every parameter, to float64 rounding.
    model = vae.BernoulliVAE("linear", x_dim=4, z_dim=2, seed=3, dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    k = 3
    log_q, log_joint = vae.enumerated_log_densities(model, x)
    bound = exact.importance_weighted_bound(log_q, log_joint, k).sum()
    params = list(model.parameters())
    reference = torch.autograd.grad(bound, params)

    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
    tuples = states[torch.cartesian_prod(*[torch.arange(4)] * k)]  # [T, k, 2]
    h = tuples.permute(1, 0, 2)[:, :, None, :].expand(k, len(tuples), len(x), 2)  # [k, T, B, 2]
    logits = model.encoder_logits(x).expand(len(tuples), len(x), 2)
    q = D.Independent(D.Bernoulli(logits=logits), 1)
    log_weight = lambda z: model.log_joint(x, z) - q.log_prob(z)
    from pwgf.discrete import as_discrete

    surrogate = vimco_at(as_discrete(q), log_weight, h, baseline=baseline)  # [T, B]
    prob = q.log_prob(h).sum(0).exp().detach()
    got = torch.autograd.grad((prob * surrogate).sum(), params)
    for r, g in zip(reference, got):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)
    torch.testing.assert_close((prob * surrogate).sum().detach(), bound.detach(), rtol=0, atol=1e-12)


def test_vimco_public_entry_point_and_errors():
    model = vae.BernoulliVAE("linear", x_dim=4, z_dim=2, seed=3, dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    q = D.Independent(D.Bernoulli(logits=model.encoder_logits(x)), 1)
    out = vimco(q, lambda z: model.log_joint(x, z) - q.log_prob(z), 5, generator=gen(0))
    assert out.shape == (1,)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        vimco(q, lambda z: model.log_joint(x, z) - q.log_prob(z), 1)
    with pytest.raises(ValueError, match="f must map samples"):
        vimco(q, lambda z: model.log_joint(x, z).sum(), 3)


# ---- EAT ------------------------------------------------------------------------------------------


def _campbell(kind: str, rate: float, tau: float) -> tuple[float, float, float]:
    r""":math:`\int_0^\infty g`, :math:`\int_0^\infty g^2` by quadrature; mean and variance of the relaxed count follow."""
    g = lambda t: float(arrival_times.step(torch.tensor((1 - t) / tau), kind))
    breaks = [max(0.0, 1 - tau), 1.0, 1 + tau]
    one = sum(integrate.quad(g, a, b, epsabs=1e-13, epsrel=1e-13)[0] for a, b in zip([0.0, *breaks], [*breaks, np.inf]) if b > a)
    two = sum(integrate.quad(lambda t: g(t) ** 2, a, b, epsabs=1e-13, epsrel=1e-13)[0] for a, b in zip([0.0, *breaks], [*breaks, np.inf]) if b > a)
    return one, rate * one, rate * two


@pytest.mark.parametrize("kind", ["sigmoid", "cubic"])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 2.0])
def test_eat_moments_against_quadrature(kind, tau):
    rate, n = 3.0, 40000
    z = arrival_times.relaxed_count(torch.tensor([rate]), n, gen(8), kind=kind, temperature=tau)[:, 0]
    one, mean, var = _campbell(kind, rate, tau)
    assert abs(float(z.mean()) - mean) < 4 * math.sqrt(var / n)
    # The sample variance's standard error, from the fourth central moment estimated on the draws.
    m4 = float(((z - z.mean()) ** 4).mean())
    assert abs(float(z.var()) - var) < 4 * math.sqrt((m4 - var**2) / n)
    # The cubic step's first moment is exactly the rate for tau <= 1, not above; the sigmoid's exceeds it.
    if kind == "cubic":
        assert (abs(one - 1) < 1e-12) == (tau <= 1)
    else:
        assert abs(one - tau * math.log1p(math.exp(1 / tau))) < 1e-10 and one > 1


@pytest.mark.parametrize("kind", ["sigmoid", "cubic"])
def test_eat_gradient_of_the_relaxed_objective_against_quadrature(kind):
    # For f(z) = z and f(z) = z^2 the relaxed objective is lambda c1 and lambda c2 + (lambda c1)^2 (Campbell), so
    # the pathwise gradient's mean must be c1 and c2 + 2 lambda c1^2.
    rate, tau, n = 2.5, 0.7, 40000
    c1, _, var = _campbell(kind, 1.0, tau)
    c2 = var
    for f, reference in [(lambda z: z, c1), (lambda z: z**2, c2 + 2 * rate * c1**2)]:
        lam = torch.tensor([rate]).expand(n, 1)
        grads = E.estimate("eat_" + kind, D.Independent(D.Poisson(lam.clone()), 1), lambda z: f(z).sum(-1), 1, generator=gen(10), temperature=tau)
        assert abs(float(grads.mean()) - reference) < 4 * float(grads.std()) / n**0.5


@pytest.mark.parametrize("kind", ["sigmoid", "cubic"])
def test_eat_tends_to_the_poisson_count_as_the_temperature_falls(kind):
    # At fixed noise the relaxed count tends to the number of arrivals in [0, 1]; the cubic step gives it exactly
    # once no arrival lies within tau of t = 1. The counts at tau = 1e-4 follow Poisson(rate) (chi-square test).
    rate, n = 4.0, 20000
    z = arrival_times.relaxed_count(torch.tensor([rate]), n, gen(12), kind=kind, temperature=1e-4)[:, 0]
    counts = z.round()
    # About 2 tau rate = 0.08% of the draws have an arrival within tau of t = 1.
    assert (z - counts).abs().quantile(0.99) < (1e-12 if kind == "cubic" else 1e-2)
    top = 12
    observed = np.bincount(np.minimum(counts.numpy().astype(int), top), minlength=top + 1)
    expected = n * np.append(stats.poisson.pmf(np.arange(top), rate), stats.poisson.sf(top - 1, rate))
    assert stats.chisquare(observed, expected).pvalue > 1e-4
