"""Families: validation, sampling through torch.distributions, enumeration of supports, Poisson truncation."""

import numpy as np
import pytest
import torch
from scipy import stats

from pwgf import families

torch.set_default_dtype(torch.float64)


@pytest.mark.parametrize(
    ("family", "theta", "message"),
    [
        ("bernoulli", torch.tensor([0.2, 1.3]), r"\[0, 1\]"),
        ("bernoulli", torch.tensor([[0.2]]), "shape"),
        ("poisson", torch.tensor([2.0, 0.0]), "> 0"),
        ("poisson", torch.tensor([float("nan")]), "finite"),
        ("categorical", torch.tensor([[0.5, 0.6]]), "sum to 1"),
        ("categorical", torch.tensor([0.5, 0.5]), "shape"),
        ("gaussian", torch.tensor([0.5]), "valid: bernoulli, categorical, poisson"),
        ("bernoulli", torch.tensor([]), "empty"),
    ],
)
def test_bad_theta_raises_naming_the_problem(family, theta, message):
    with pytest.raises(ValueError, match=message):
        families.validate_theta(family, theta)


def test_sample_is_reproducible_and_leaves_global_rng_alone():
    theta = torch.tensor([0.3, 0.7])
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    a = families.sample("bernoulli", theta, 50, torch.Generator().manual_seed(1))
    after = torch.rand(3)
    b = families.sample("bernoulli", theta, 50, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(before, after)
    assert a.shape == (50, 2) and a.dtype == torch.float64


def test_sample_shapes_per_family():
    g = torch.Generator().manual_seed(0)
    assert families.sample("poisson", torch.tensor([1.0, 2.0, 3.0]), 7, g).shape == (7, 3)
    onehot = families.sample("categorical", torch.full((2, 4), 0.25), 7, g)
    assert onehot.shape == (7, 2, 4) and torch.all(onehot.sum(-1) == 1)


def test_sample_frequencies_match_probabilities():
    """Chi-square goodness of fit of 20000 categorical draws (rejects at level 1e-4 only)."""
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    draws = families.sample("categorical", probs, 20_000, torch.Generator().manual_seed(3))
    counts = draws[:, 0].sum(0).numpy()
    assert stats.chisquare(counts, 20_000 * probs[0].numpy()).pvalue > 1e-4


@pytest.mark.parametrize("rate", [1e-4, 0.05, 1.0, 5.0, 50.0, 300.0])
def test_poisson_truncation_is_the_exact_tail_quantile(rate):
    tail = 1e-12
    k = families.poisson_truncation(rate, tail)
    assert stats.poisson.sf(k, rate) <= tail
    assert k == 0 or stats.poisson.sf(k - 1, rate) > tail


def test_poisson_truncation_uses_the_largest_rate_and_validates():
    assert families.poisson_truncation(np.array([0.5, 80.0])) == families.poisson_truncation(80.0)
    with pytest.raises(ValueError, match="rate"):
        families.poisson_truncation(-1.0)
    with pytest.raises(ValueError, match="tail"):
        families.poisson_truncation(1.0, tail=0.0)


def test_support_enumerates_every_state_once():
    states = families.support("bernoulli", torch.tensor([0.5, 0.5, 0.5]))
    assert states.shape == (8, 3) and len({tuple(s) for s in states.tolist()}) == 8
    cat = families.support("categorical", torch.full((2, 3), 1 / 3))
    assert cat.shape == (9, 2, 3) and torch.all(cat.sum(-1) == 1)
    assert torch.allclose(families.log_prob("bernoulli", torch.tensor([0.3, 0.6, 0.9]), states).exp().sum(), torch.tensor(1.0))


def test_support_refuses_explosive_enumeration():
    with pytest.raises(ValueError, match="max_states"):
        families.support("bernoulli", torch.full((30,), 0.5))
