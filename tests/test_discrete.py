"""pwgf.discrete: the view of a torch distribution that every estimator works on."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import distributions as D

from pwgf.discrete import as_discrete, costs, replicate

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("dist", "kind", "name", "batch", "event"),
    [
        (D.Bernoulli(logits=torch.zeros(4, 3)), "bernoulli", "logits", (4, 3), ()),
        (D.Independent(D.Bernoulli(probs=torch.full((4, 3), 0.3)), 1), "bernoulli", "probs", (4,), (3,)),
        (D.Independent(D.OneHotCategorical(logits=torch.zeros(2, 5, 3)), 1), "categorical", "logits", (2,), (5, 3)),
        (D.OneHotCategorical(probs=torch.full((2, 3), 1 / 3)), "categorical", "probs", (2,), (3,)),
        (D.Independent(D.Independent(D.Poisson(torch.ones(2, 3, 4)), 1), 1), "poisson", "rate", (2,), (3, 4)),
    ],
)
def test_view_reads_kind_parameter_and_shapes(dist, kind, name, batch, event):
    q = as_discrete(dist)
    assert (q.kind, q.parameter_name, tuple(q.batch_shape), tuple(q.event_shape)) == (kind, name, batch, event)
    assert q.sample(7, gen(0)).shape == (7, *batch, *event)
    rebuilt = q.with_parameter(q.parameter.detach().clone())
    assert type(rebuilt.dist) is type(dist) and rebuilt.batch_shape == q.batch_shape and rebuilt.event_shape == q.event_shape


def test_parameter_is_the_one_passed_even_after_the_other_was_computed():
    dist = D.Bernoulli(logits=torch.tensor([0.3]))
    _ = dist.probs  # caches the lazy property on the instance
    assert as_discrete(dist).parameter_name == "logits"
    cat = D.OneHotCategorical(probs=torch.tensor([0.2, 0.8]))
    _ = cat.logits
    assert as_discrete(cat).parameter_name == "probs"


def test_samples_have_the_right_frequencies():
    # 20000 draws per coordinate: a chi-square goodness-of-fit test at level 1e-4 per family.
    n = 20000
    p = torch.tensor([0.05, 0.5, 0.9], dtype=DT)
    z = as_discrete(D.Bernoulli(logits=torch.logit(p))).sample(n, gen(1))
    for i in range(3):
        ones = z[:, i].sum().item()
        assert stats.chisquare([n - ones, ones], [n * (1 - p[i].item()), n * p[i].item()]).pvalue > 1e-4
    probs = torch.tensor([0.1, 0.6, 0.3], dtype=DT)
    counts = as_discrete(D.OneHotCategorical(probs=probs)).sample(n, gen(2)).sum(0)
    assert stats.chisquare(counts.numpy(), (n * probs).numpy()).pvalue > 1e-4
    rate = 3.5
    draws = as_discrete(D.Poisson(torch.tensor([rate], dtype=DT))).sample(n, gen(3))[:, 0].long()
    observed = torch.bincount(draws.clamp(max=9), minlength=10).numpy()
    expected = n * stats.poisson.pmf(range(10), rate)
    expected[-1] = n * stats.poisson.sf(8, rate)
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_saturated_float32_logits_sample_exactly():
    # sigmoid(+-40) rounds to 1 and 0 in float32; noise is drawn in float64, so a 1e-17 event never happens here.
    logits = torch.tensor([40.0, -40.0, 20.0, -20.0], dtype=torch.float32)
    z = as_discrete(D.Bernoulli(logits=logits)).sample(200000, gen(4))
    assert z.dtype == torch.float32
    assert torch.equal(z.mean(0), torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float32))


def test_support_enumerates_one_examples_states():
    q = as_discrete(D.Independent(D.Bernoulli(probs=torch.full((5, 3), 0.5)), 1))
    states = q.support()
    assert states.shape == (8, 3) and len({tuple(s.tolist()) for s in states}) == 8
    q = as_discrete(D.Independent(D.OneHotCategorical(probs=torch.full((2, 4), 0.25)), 1))
    assert q.support().shape == (16, 2, 4)
    assert as_discrete(D.Bernoulli(probs=torch.full((3,), 0.5))).support().shape == (2,)


@pytest.mark.parametrize(
    ("dist", "message"),
    [
        (D.Normal(0.0, 1.0), "dist must be a torch.distributions Bernoulli, OneHotCategorical or Poisson.*got Normal"),
        (D.Independent(D.Normal(torch.zeros(3), 1.0), 1), "got Independent of Normal"),
        (D.Categorical(probs=torch.tensor([0.5, 0.5])), "got Categorical"),
        ("bernoulli", "got str"),
        (D.Bernoulli(probs=torch.tensor([1.5]), validate_args=False), r"probs of dist must lie in \[0, 1\]"),
        (D.Bernoulli(logits=torch.tensor([float("nan")]), validate_args=False), "logits of dist must be finite"),
        (D.Bernoulli(logits=torch.tensor([float("inf")]), validate_args=False), "logits of dist must be finite"),
        (D.Poisson(torch.tensor([0.0]), validate_args=False), "rate of dist must be > 0"),
    ],
)
def test_bad_distributions_raise_naming_the_argument(dist, message):
    with pytest.raises(ValueError, match=message):
        as_discrete(dist)


def test_costs_checks_one_cost_per_sample_and_example():
    z = torch.zeros(5, 4, 3)
    assert costs(lambda x: x.sum(-1), z, (4,)).shape == (5, 4)
    with pytest.raises(ValueError, match=r"costs of shape \[5, 4\], got \(5,\)"):
        costs(lambda x: x.sum((-1, -2)), z, (4,))
    with pytest.raises(ValueError, match="got float"):
        costs(lambda x: 1.0, z, (4,))


def test_replicate_gives_independent_copies_along_a_leading_axis():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.1]], dtype=torch.float64, requires_grad=True)
    copies = replicate(D.Independent(D.Bernoulli(logits=logits), 1), 3000)
    q = as_discrete(copies)
    assert copies.batch_shape == (3000, 2) and copies.event_shape == (2,) and q.parameter_name == "logits"
    assert not q.parameter.requires_grad
    z = q.sample(1, gen(0))[0]  # [3000, 2, 2]: one draw per copy
    assert (z[:, 0] != z[:, 1]).any()  # the copies are not the same draw
    # per coordinate, the frequency over the copies is within 4 standard errors of p
    p = torch.sigmoid(logits.detach())
    se = (p * (1 - p) / 3000).sqrt()
    assert ((z.mean(0) - p).abs() < 4 * se).all()
    with pytest.raises(ValueError, match="replicates must be an integer >= 1"):
        replicate(D.Bernoulli(logits=logits), 0)
