"""pwgf.sample: exact discrete values forward, the estimator's Jacobian backward; the same gradients as the surrogates."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

import pwgf
from pwgf import estimators as E
from pwgf import projection
from pwgf.sampling import METHODS

torch.set_default_dtype(torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(kind: str, parameterization: str, shape: tuple[int, ...], replicates: int | None = None) -> tuple[torch.Tensor, D.Distribution]:
    """A leaf parameter and its distribution; with ``replicates``, that many copies of the same parameter along a leading axis."""
    logits = torch.randn(shape, generator=gen(0))
    if replicates is not None:
        logits = logits.expand(replicates, *shape)
    if kind == "categorical":
        value = logits if parameterization == "logits" else torch.softmax(logits, -1)
        leaf = value.clone().requires_grad_(True)
        return leaf, D.OneHotCategorical(**{parameterization: leaf})
    value = logits if parameterization == "logits" else torch.sigmoid(logits)
    leaf = value.clone().requires_grad_(True)
    dist = D.Bernoulli(**{parameterization: leaf})
    return leaf, (D.Independent(dist, 1) if kind == "independent" else dist)


def cost(dist: D.Distribution):
    """A non-quadratic cost, one value per sample and example: ``[n, *batch_shape, *event_shape] -> [n, *batch_shape]``."""
    event = tuple(dist.event_shape)
    w = torch.linspace(-1.0, 2.0, int(torch.Size(dist.batch_shape + dist.event_shape).numel())).reshape(*dist.batch_shape, *event)

    def f(z: torch.Tensor) -> torch.Tensor:
        x = torch.sin(3 * z * w) + (z * w) ** 3
        return x.sum(tuple(range(-len(event), 0))) if event else x

    return f


CASES = [("bernoulli", "logits", (2, 3)), ("bernoulli", "probs", (3,)), ("independent", "logits", (2, 3)),
         ("categorical", "logits", (2, 4)), ("categorical", "probs", (2, 3, 4))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("kind", "parameterization", "shape"), CASES)
def test_same_value_and_gradient_as_the_surrogate_at_fixed_noise(method, kind, parameterization, shape):
    leaf, dist = make(kind, parameterization, shape)
    f = cost(dist)
    z = pwgf.sample(dist, method, generator=gen(7))
    assert z.shape == dist.batch_shape + dist.event_shape
    assert torch.equal(z.detach(), z.detach().round()) and ((z == 0) | (z == 1)).all()
    if kind == "categorical":
        assert torch.equal(z.detach().sum(-1), torch.ones(z.shape[:-1]))
    (by_sample,) = torch.autograd.grad(f(z.unsqueeze(0))[0].sum(), leaf)
    # A fresh distribution: torch.distributions caches what it derives from the parameter (probs, normalized logits).
    leaf, dist = make(kind, parameterization, shape)
    (by_surrogate,) = torch.autograd.grad(E.surrogate(method, dist, f, 1, generator=gen(7)).sum(), leaf)
    assert torch.equal(by_sample, by_surrogate)
    assert by_sample.abs().sum() > 0


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
@pytest.mark.parametrize("method", ["st_gumbel_softmax", "gumbel_rao", "gapped_st"])
def test_same_expectation_as_independent_surrogate_draws(method, kind):
    # Two independent samples of 4000 gradients each: a difference of means within 4.5 standard errors per coordinate.
    replicates = 4000
    f = cost(make(kind, "logits", (3,))[1])
    leaf, dist = make(kind, "logits", (3,), replicates)
    (by_sample,) = torch.autograd.grad(f(pwgf.sample(dist, method, generator=gen(1)).unsqueeze(0)).sum(), leaf)
    leaf, dist = make(kind, "logits", (3,), replicates)
    (by_surrogate,) = torch.autograd.grad(E.surrogate(method, dist, f, 1, generator=gen(2)).sum(), leaf)
    se = (by_sample.var(0) / replicates + by_surrogate.var(0) / replicates).sqrt()
    z = (by_sample.mean(0) - by_surrogate.mean(0)) / se
    assert z.abs().max() < 4.5, z


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_expectations_against_enumeration(kind):
    # References independent of the sampling path: ST's mean E[grad f(z)] dm/dtheta by enumeration
    # (projection.st_expectation); ReinMax at tau = 1 and ZGR are exact for quadratic costs, so their mean is
    # the exact gradient (enumeration). 20000 draws at once; each coordinate within 4 standard errors.
    replicates = 20000
    w = torch.tensor([0.5, -1.0, 2.0])

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z * w).sum(-1) - 0.3) ** 2 if kind == "categorical" else (z * w - 0.3) ** 2

    _, dist0 = make(kind, "logits", (3,))
    references = {"st": projection.st_expectation(dist0, f), "reinmax": E.estimate("exact", dist0, f, 1), "zgr": E.estimate("exact", dist0, f, 1)}
    for method, reference in references.items():
        leaf, dist = make(kind, "logits", (3,), replicates)
        (grad,) = torch.autograd.grad(f(pwgf.sample(dist, method, generator=gen(3)).unsqueeze(0)).sum(), leaf)
        se = grad.std(0) / replicates**0.5
        assert ((grad.mean(0) - reference).abs() < 4 * se).all(), (method, grad.mean(0), reference)


def test_errors_name_the_argument():
    _, dist = make("bernoulli", "logits", (3,))
    with pytest.raises(ValueError, match="unknown method 'gumbel_softmax'"):
        pwgf.sample(dist, "gumbel_softmax")
    with pytest.raises(ValueError, match="unknown option.*gap.*'reinmax'"):
        pwgf.sample(dist, "reinmax", gap=1.0)
    with pytest.raises(ValueError, match="does not apply to a poisson"):
        pwgf.sample(D.Poisson(torch.ones(2)), "zgr")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pwgf.sample(dist, "st_gumbel_softmax", temperature=0.0)


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(5, 12)
        self.decoder = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        logits = self.encoder(x).reshape(-1, 3, 4)
        z = pwgf.sample(D.OneHotCategorical(logits=logits), "zgr", generator=generator)
        return (self.decoder(z.reshape(-1, 12)) - x).pow(2).sum()


# TorchDynamo and AOTAutograd, where a straight-through point could break, without inductor's C++ build of
# kernels (measured 45 s for this model on the 2-core CI machine with backend="inductor", same gradients).
BACKEND = "aot_eager"


def test_compiles_with_the_same_gradients():
    # The model's own layers compile; pwgf.sample's seeded draw runs between graphs.
    # torch.compile (torch 2.13) turns torch.distributions' argument validation off process-wide when it is
    # first set up; the other tests expect torch's default, restored below.
    validate = D.Distribution._validate_args
    x = torch.randn(8, 5, generator=gen(0))
    eager, compiled = _Model(), _Model()
    compiled_forward = torch.compile(compiled, backend=BACKEND, dynamic=False)
    eager(x, gen(11)).backward()
    try:
        compiled_forward(x, gen(11)).backward()
    finally:
        D.Distribution.set_default_validate_args(validate)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12, msg=name)
