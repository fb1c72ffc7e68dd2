"""The model-facing estimator API: torch.distributions with batches and logits, per-example estimates,
bad input rejected before any sampling, and layered latents.

Statistical checks follow tests/test_estimators.py: R independent estimates are averaged and each
coordinate's mean is compared with the exact gradient; an unbiased estimator passes when every
coordinate is within 4 standard errors (false-alarm probability 6.3e-5 per coordinate under the CLT,
below 3e-3 over the at most 40 coordinates of one test).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import distributions as D

from pwgf import estimators as E
from pwgf import exact
from pwgf.discrete import as_discrete

DT = torch.float64
G = torch.Generator().manual_seed(20261123)
W_B = torch.randn(3, 3, dtype=DT, generator=G)  # one weight vector per example
W_C = torch.randn(2, 3, dtype=DT, generator=G)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f_bernoulli(z: torch.Tensor) -> torch.Tensor:
    """Per-example cost of [n, 3 examples, 3 coordinates] samples; nonlinear and not multilinear."""
    return torch.sin((z * W_B).sum(-1)) + torch.log1p(z.prod(-1) + z[..., 0] ** 2)


def f_categorical(z: torch.Tensor) -> torch.Tensor:
    return torch.cos((z * W_C).sum((-1, -2))) + (z[..., 0, :] * z[..., 1, :].flip(-1)).sum(-1) ** 2


def f_poisson(z: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1 + z).sum(-1) + 0.1 * (z[..., 0] - z[..., 1]) ** 2


LOGITS_B = torch.tensor([[-1.2, 0.4, 2.0], [0.0, -0.3, 0.8], [1.5, -2.0, 0.1]], dtype=DT)
LOGITS_C = torch.tensor([[[0.3, -1.0, 0.5], [1.0, 0.2, -0.4]], [[-0.5, 0.5, 0.0], [0.0, 2.0, -1.0]]], dtype=DT)
RATE = torch.tensor([[0.7, 3.0], [2.0, 5.0]], dtype=DT)


def problem(kind: str, parameterization: str = "logits"):
    if kind == "bernoulli":
        param = LOGITS_B if parameterization == "logits" else torch.sigmoid(LOGITS_B)
        return D.Independent(D.Bernoulli(**{parameterization: param}), 1), f_bernoulli
    if kind == "categorical":
        param = LOGITS_C if parameterization == "logits" else torch.softmax(LOGITS_C, -1)
        return D.Independent(D.OneHotCategorical(**{parameterization: param}), 1), f_categorical
    return D.Independent(D.Poisson(RATE), 1), f_poisson


def replicated(dist: D.Distribution, replicates: int) -> D.Distribution:
    """The same distribution with ``replicates`` independent copies of every example along a new leading batch axis.

    The costs above broadcast over leading axes, so one call gives ``replicates`` independent estimates.
    """
    q = as_discrete(dist)
    return q.with_parameter(q.parameter.detach().expand(replicates, *q.parameter.shape)).dist


def replicate_estimates(name: str, dist: D.Distribution, f, n: int, replicates: int, seed: int) -> torch.Tensor:
    return E.estimate(name, replicated(dist, replicates), f, n, generator=gen(seed))


ALL = [(name, kind) for name in sorted(E.ESTIMATORS) for kind in sorted(E.ESTIMATORS[name]) if name != "exact"]


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in ALL if n in E.UNBIASED])
def test_unbiased_per_example_with_logits(name, kind):
    dist, f = problem(kind)
    reference = exact.gradient(dist, f)
    draws = replicate_estimates(name, dist, f, 4, 1000, 7)
    z = (draws.mean(0) - reference) / (draws.std(0) / 1000**0.5)
    assert draws.shape == (1000, *as_discrete(dist).parameter.shape)
    assert z.abs().max() < 4, z


def test_the_same_test_detects_biased_estimators_with_logits():
    for name in ("st", "gumbel_rao", "reinmax", "gapped_st"):
        dist, f = problem("bernoulli")
        draws = replicate_estimates(name, dist, f, 4, 1000, 7)
        z = (draws.mean(0) - exact.gradient(dist, f)) / (draws.std(0) / 1000**0.5)
        assert z.abs().max() > 4, name


@pytest.mark.parametrize(("name", "kind"), ALL)
def test_examples_are_independent_and_the_result_has_batch_shape(name, kind):
    dist, f = problem(kind)
    q = as_discrete(dist)
    leaf = q.parameter.detach().clone().requires_grad_(True)
    out = E.surrogate(name, q.with_parameter(leaf).dist, f, 3, generator=gen(2))
    assert out.shape == q.batch_shape
    (grad,) = torch.autograd.grad(out[1], leaf)
    others = torch.cat([grad[:1], grad[2:]])
    assert torch.all(others == 0), "example 1's surrogate must not depend on other examples' parameters"


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in ALL if k != "poisson"])
def test_meaning_does_not_depend_on_the_parameterization(name, kind):
    # The same seed draws the same samples from either parameterization; the logit estimate is then the
    # chain rule of the probability estimate: p (1 - p) g (Bernoulli) or J(p) g, J = diag(p) - p p^T (categorical).
    by_logits, f = problem(kind, "logits")
    by_probs, _ = problem(kind, "probs")
    g_logits = E.estimate(name, by_logits, f, 3, generator=gen(5))
    g_probs = E.estimate(name, by_probs, f, 3, generator=gen(5))
    p = as_discrete(by_probs).mean
    if kind == "bernoulli":
        chained = p * (1 - p) * g_probs
    else:
        chained = p * g_probs - p * (p * g_probs).sum(-1, keepdim=True)
    torch.testing.assert_close(g_logits, chained, rtol=1e-9, atol=1e-12)


def test_st_gradient_wrt_logits_is_grad_f_times_the_mean_jacobian():
    for kind in ("bernoulli", "categorical"):
        dist, f = problem(kind)
        q = as_discrete(dist)
        z = q.sample(6, gen(9)).requires_grad_(True)
        (grad_f,) = torch.autograd.grad(f(z).sum(), z)
        mean_grad = grad_f.mean(0)
        p = q.mean.detach()
        expected = p * (1 - p) * mean_grad if kind == "bernoulli" else p * mean_grad - p * (p * mean_grad).sum(-1, keepdim=True)
        torch.testing.assert_close(E.estimate("st", dist, f, 6, generator=gen(9)), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(n for n, fams in E.ESTIMATORS.items() if "bernoulli" in fams and n != "exact"))
def test_saturated_float32_logits_give_finite_gradients(name):
    logits = torch.tensor([[40.0, -40.0, 0.5], [-40.0, 40.0, -0.5]], dtype=torch.float32, requires_grad=True)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float32)
    loss = E.surrogate(name, D.Independent(D.Bernoulli(logits=logits), 1), lambda z: torch.sin(z @ w) + z.sum(-1) ** 2, 2, generator=gen(1))
    loss.mean().backward()
    assert loss.dtype == torch.float32 and torch.isfinite(logits.grad).all() and torch.isfinite(loss).all()


@pytest.mark.parametrize("name", sorted(n for n, fams in E.ESTIMATORS.items() if "categorical" in fams and n != "exact"))
def test_saturated_float32_categorical_logits_give_finite_gradients(name):
    logits = torch.tensor([[40.0, -40.0, 0.0], [-40.0, -40.0, 40.0]], dtype=torch.float32, requires_grad=True)
    w = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.3, -0.2]], dtype=torch.float32)
    loss = E.surrogate(name, D.Independent(D.OneHotCategorical(logits=logits), 1), lambda z: torch.sin((z * w).sum((-1, -2))), 2, generator=gen(1))
    loss.mean().backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(loss).all()


def test_control_variates_train_on_the_variance_of_the_whole_batch():
    dist, f = problem("bernoulli")
    eta = torch.tensor(0.3, dtype=DT, requires_grad=True)
    history = E.tune("rebar", dist, f, 4, [eta], steps=60, lr=0.05, generator=gen(3), eta=eta)
    assert np.isfinite(history).all() and eta.item() != 0.3
    # Starting from eta = 0.3 the variance objective pulls eta up towards REBAR's natural scale.
    assert np.mean(history[-20:]) < np.mean(history[:20])


# ---- bad input: every static argument is checked before any sampling ----------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: E.surrogate("st", D.Normal(torch.zeros(3), 1.0), f_bernoulli, 2, generator=g), "dist must be a torch.distributions Bernoulli"),
        (lambda g: E.surrogate("arm", problem("poisson")[0], f_poisson, 2, generator=g), "does not apply to a poisson distribution.*estimators for poisson"),
        (lambda g: E.surrogate("reinmax", problem("bernoulli")[0], f_bernoulli, 2, generator=g, tau=1.0), "unknown option.*tau.*valid: temperature"),
        (lambda g: E.surrogate("gumbel_rao", problem("bernoulli")[0], f_bernoulli, 2, generator=g, gap=1.0), "unknown option.*gap.*valid: n_conditional, temperature"),
        (lambda g: E.surrogate("reinforce", problem("bernoulli")[0], f_bernoulli, 1, generator=g), "n_samples must be >= 2 for estimator 'reinforce'"),
        (lambda g: E.surrogate("st", problem("bernoulli")[0], f_bernoulli, 0, generator=g), "n_samples must be an integer >= 1"),
        (lambda g: E.surrogate("nope", problem("bernoulli")[0], f_bernoulli, 2, generator=g), "unknown estimator 'nope'; valid: arm"),
        (lambda g: E.surrogate("st", problem("bernoulli")[0], f_bernoulli, generator=g), r"expected \(f, n_samples\) after the distribution, got 1 of them"),
    ],
)
def test_bad_input_raises_before_any_sampling(call, message):
    g = gen(0)
    state = g.get_state()
    with pytest.raises(ValueError, match=message):
        call(g)
    assert torch.equal(g.get_state(), state), "the generator must not have been used"


def test_a_cost_of_the_wrong_shape_names_the_expected_shape():
    dist, _ = problem("bernoulli")
    with pytest.raises(ValueError, match=r"samples of shape \[n, \*batch_shape, \*event_shape\] = \(2, 3, 3\) to costs of shape \[2, 3\], got \(2,\)"):
        E.surrogate("st", dist, lambda z: z.sum((-1, -2)), 2)


# ---- layered latents ---------------------------------------------------------------------------------

A1 = torch.tensor([0.4, -0.8], dtype=DT)  # logits of z1 ~ Bern, two units
W2 = torch.tensor([[1.1, -0.7], [0.5, 0.9]], dtype=DT)  # logits of z2 | z1 = W2 z1 + C2
C2 = torch.tensor([-0.3, 0.2], dtype=DT)
V = torch.tensor([0.8, -1.3], dtype=DT)


def f_top(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The cost of both layers, per sample (any leading shape)."""
    return torch.sin(z2 @ V + z1[..., 0] * z2[..., 1]) + (z1.sum(-1) - z2[..., 0]) ** 2


def exact_layered_gradient() -> list[torch.Tensor]:
    """Gradient of E_{z1} E_{z2|z1} f by enumerating all 16 joint states (independent of the estimators)."""
    params = [p.clone().requires_grad_(True) for p in (A1, W2, C2)]
    a1, w2, c2 = params
    states = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=DT)
    total = 0.0
    for z1 in states:
        p1 = D.Bernoulli(logits=a1).log_prob(z1).sum().exp()
        for z2 in states:
            p2 = D.Bernoulli(logits=w2 @ z1 + c2).log_prob(z2).sum().exp()
            total = total + p1 * p2 * f_top(z1, z2)
    return list(torch.autograd.grad(total, params))


def layered_estimates(outer: str, inner: str, replicates: int, seed: int) -> torch.Tensor:
    """``replicates`` independent estimates of the gradient in (A1, W2, C2), flattened: the parameters are
    copied per replicate (a batch axis), so one call gives each replicate its own gradient."""
    generator = gen(seed)
    params = [p.detach().expand(replicates, *p.shape).clone().requires_grad_(True) for p in (A1, W2, C2)]
    a1, w2, c2 = params

    def f1(z1: torch.Tensor) -> torch.Tensor:  # [n, R, 2] -> [n, R]: one estimate of E[f | z1] from the inner layer
        q2 = D.Independent(D.Bernoulli(logits=torch.einsum("nrj,rij->nri", z1, w2) + c2), 1)
        return E.surrogate(inner, q2, lambda z2: f_top(z1, z2), 2, generator=generator)

    loss = E.surrogate(outer, D.Independent(D.Bernoulli(logits=a1), 1), f1, 2, generator=generator)
    return torch.cat([g.reshape(replicates, -1) for g in torch.autograd.grad(loss.sum(), params)], dim=1)


@pytest.mark.parametrize(
    ("outer", "inner"),
    [("reinforce", "reinforce"), ("arm", "disarm"), ("disarm", "arm"), ("muprop", "reinforce"), ("rebar", "arm"), ("relax", "disarm")],
)
def test_unbiased_estimators_stay_unbiased_across_two_layers(outer, inner):
    reference = torch.cat([g.reshape(-1) for g in exact_layered_gradient()])
    draws = layered_estimates(outer, inner, 4000, 11)
    z = (draws.mean(0) - reference) / (draws.std(0) / 4000**0.5)
    assert z.abs().max() < 4, z


def test_st_is_biased_across_two_layers():
    reference = torch.cat([g.reshape(-1) for g in exact_layered_gradient()])
    draws = layered_estimates("st", "st", 4000, 11)
    z = (draws.mean(0) - reference) / (draws.std(0) / 4000**0.5)
    assert z.abs().max() > 4


def test_cost_and_sample_count_may_be_given_by_keyword():
    dist, f = problem("bernoulli")
    by_position = E.estimate("reinmax", dist, f, 3, generator=gen(4))
    by_keyword = E.estimate("reinmax", dist, f=f, n_samples=3, generator=gen(4), temperature=1.0)
    assert torch.equal(by_position, by_keyword)
    assert E.surrogate("st", dist, f=f, n_samples=2, generator=gen(4)).shape == (3,)
