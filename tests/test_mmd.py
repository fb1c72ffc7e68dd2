"""MMD projection: values against a brute-force sum, closed-form gradients against autograd, truncation, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pwgf import mmd

torch.set_default_dtype(torch.float64)
# Closed forms and autograd evaluate the same float64 sums in a different order: a few ulps of O(1) terms.
TOL = 1e-12


def brute_mmd(support: np.ndarray, pmf: np.ndarray, y: np.ndarray, h: float) -> float:
    """Squared MMD between sum_j pmf_j delta_j and the empirical measure of y, by explicit double sums (one coordinate)."""
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h**2))  # noqa: E731
    model = sum(pmf[a] * pmf[b] * k(support[a], support[b]) for a in range(len(support)) for b in range(len(support)))
    data = sum(k(u, v) for u in y for v in y) / len(y) ** 2
    cross = sum(pmf[a] * k(support[a], u) for a in range(len(support)) for u in y) / len(y)
    return model + data - 2 * cross


def test_rbf_kernel_values():
    x = torch.tensor([0.0, 1.0, 3.0])
    assert torch.allclose(mmd.rbf_kernel(x, 1.0, 2.0), torch.exp(-torch.tensor([1.0, 0.0, 4.0]) / 8), atol=TOL)


@pytest.mark.parametrize("h", [0.5, 1.0, 3.0])
def test_mmd_squared_matches_brute_force_all_families(h):
    rng = np.random.default_rng(0)
    p = torch.tensor([0.2, 0.9])
    yb = torch.tensor(rng.uniform(-0.5, 1.5, size=(5, 2)))
    got = mmd.mmd_squared("bernoulli", p, yb, h)
    for i in range(2):
        ref = brute_mmd(np.array([0.0, 1.0]), np.array([1 - p[i].item(), p[i].item()]), yb[:, i].numpy(), h)
        assert abs(got[i].item() - ref) < TOL
    lam = torch.tensor([0.3, 7.0])
    yp = torch.tensor(rng.uniform(0, 12, size=(4, 2)))
    got = mmd.mmd_squared("poisson", lam, yp, h)
    for i in range(2):
        support = np.arange(200.0)  # P(Z >= 200) is astronomically small for rate 7
        ref = brute_mmd(support, stats.poisson.pmf(support, lam[i].item()), yp[:, i].numpy(), h)
        assert abs(got[i].item() - ref) < 1e-10  # truncation bound 4 * tail = 4e-12 plus rounding
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    yc = torch.tensor(rng.normal(size=(4, 2, 3)))
    got = mmd.mmd_squared("categorical", probs, yc, h)
    for i in range(2):
        ref = brute_mmd(np.eye(3), probs[i].numpy(), yc[:, i].numpy(), h)
        assert abs(got[i].item() - ref) < TOL


def autograd_grad(family, theta, y, h):
    leaf = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(mmd.mmd_squared(family, leaf, y, h).sum(), leaf)
    return g


bandwidths = st.one_of(st.floats(0.2, 10.0), st.just("median"))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), d=st.integers(1, 4), h=bandwidths)
def test_bernoulli_closed_form_gradient_matches_autograd(seed, n, d, h):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(d, generator=g)
    y = torch.rand(n, d, generator=g) * 3 - 1
    assert torch.allclose(mmd.mmd_squared_grad_bernoulli(p, y, h), autograd_grad("bernoulli", p, y, h), atol=TOL, rtol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), d=st.integers(1, 4), h=bandwidths, scale=st.sampled_from([1e-3, 1.0, 20.0, 300.0]))
def test_poisson_closed_form_gradient_matches_autograd(seed, n, d, h, scale):
    g = torch.Generator().manual_seed(seed)
    lam = scale * (0.2 + torch.rand(d, generator=g))
    y = lam + torch.randn(n, d, generator=g) * lam.sqrt() * 2
    got, ref = mmd.mmd_squared_grad_poisson(lam, y, h), autograd_grad("poisson", lam, y, h)
    assert torch.allclose(got, ref, atol=1e-11, rtol=0)  # sums over up to ~10^3 states: a few hundred ulps


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), d=st.integers(1, 3), k=st.integers(2, 5), h=bandwidths)
def test_categorical_closed_form_gradient_matches_autograd(seed, n, d, k, h):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(d, k, generator=g), -1)
    y = torch.randn(n, d, k, generator=g)
    got = mmd.mmd_squared_grad_categorical(probs, y, h)
    assert torch.allclose(got, autograd_grad("categorical", probs, y, h), atol=TOL, rtol=0)
    # Degree-0 homogeneity of theta -> theta / sum(theta): theta . grad = 0 on each row (Euler).
    assert torch.allclose((probs * got).sum(-1), torch.zeros(d), atol=TOL)


def test_bernoulli_gradient_vanishes_at_the_model_and_paper_formula_does_not():
    # z_tilde = the model's own two atoms with weights 1-p, p (N = 10, p = 0.3): Delta^2 is minimal at p.
    p = torch.tensor([0.3])
    y = torch.tensor([[0.0]] * 7 + [[1.0]] * 3)
    h = 1.0
    ours = mmd.mmd_squared_grad_bernoulli(p, y, h)
    assert abs(ours.item()) < TOL
    k10 = np.exp(-1 / (2 * h**2))
    mean_diff = (mmd.rbf_kernel(y, 1.0, h) - mmd.rbf_kernel(y, 0.0, h)).mean().item()
    paper = 2 * ((1 - 2 * 0.3) * (1 - k10) - mean_diff)  # Appendix D as printed
    assert abs(paper - 4 * (1 - 2 * 0.3) * (1 - k10)) < TOL and abs(paper) > 0.1


@pytest.mark.parametrize("rate", [1e-3, 0.5, 5.0, 80.0, 400.0])
def test_poisson_truncation_against_a_much_larger_support(rate):
    lam = torch.tensor([rate])
    y = torch.tensor([[rate], [rate + 2 * rate**0.5 + 1], [0.0]])
    got = mmd.mmd_squared_grad_poisson(lam, y, 1.5)
    # reference: every state 0..rate + 60 sqrt(rate) + 60, autograd through torch.distributions' pmf
    support = torch.arange(0.0, rate + 60 * rate**0.5 + 60)
    leaf = lam.clone().requires_grad_(True)
    pmf = torch.distributions.Poisson(leaf).log_prob(support).exp()
    gram = mmd.rbf_kernel(support[:, None], support[None, :], 1.5)
    value = pmf @ gram @ pmf - 2 * (pmf * mmd.rbf_kernel(y, support, 1.5)).sum(-1).mean()
    (ref,) = torch.autograd.grad(value, leaf)
    assert abs(got.item() - ref.item()) < 20 * 1e-12 + 1e-11  # stated bound 20 * tail, plus rounding


def test_poisson_lattice_tail_bounds():
    for rate in [1e-3, 1.0, 30.0, 500.0]:
        j, p, _ = mmd.poisson_lattice(torch.tensor([rate]), 1e-12)
        lo, hi = int(j[0]), int(j[-1])
        assert stats.poisson.cdf(lo - 1, rate) <= 1e-12 and stats.poisson.sf(hi - 1, rate) <= 1e-12
        assert abs(p.sum().item() - 1) < 3e-12


def test_moved_gradient_is_difference_of_gradients():
    g = torch.Generator().manual_seed(1)
    cases = [
        ("bernoulli", torch.rand(3, generator=g), torch.bernoulli(torch.full((6, 3), 0.5), generator=g)),
        ("poisson", torch.tensor([0.5, 4.0, 60.0]), torch.poisson(torch.tensor([0.5, 4.0, 60.0]).expand(6, 3), generator=g)),
        ("categorical", torch.softmax(torch.randn(3, 4, generator=g), -1), torch.eye(4)[torch.randint(4, (6, 3), generator=g)]),
    ]
    for family, theta, z in cases:
        z_tilde = z + 0.3 * torch.randn(z.shape, generator=g)
        h = torch.tensor(1.3)
        got = mmd.moved_gradient(family, theta, z, z_tilde, h)
        if family == "categorical":  # moved_gradient is in p; mmd_squared_grad applies the chain rule through theta / sum(theta)
            got = got - (theta * got).sum(-1, keepdim=True)
        ref = mmd.mmd_squared_grad(family, theta, z_tilde, h) - mmd.mmd_squared_grad(family, theta, z, h)
        assert torch.allclose(got, ref, atol=1e-12), family


@pytest.mark.parametrize("h", [0.5, 1.0, 4.0])
def test_metric_is_hessian_of_model_to_model_mmd(h):
    def model_mmd(family, a, b):
        if family == "bernoulli":
            support, pa, pb = torch.tensor([0.0, 1.0]), torch.cat([1 - a, a]), torch.cat([1 - b, b])
        elif family == "poisson":
            support = torch.arange(0.0, 80.0)
            pa, pb = (torch.distributions.Poisson(r).log_prob(support).exp() for r in (a, b))
        else:
            support, pa, pb = torch.eye(3), a / a.sum(), b / b.sum()
        diff = pa - pb
        sq = ((support[:, None] - support[None, :]) ** 2).reshape(len(support), len(support), -1).sum(-1)
        return diff @ torch.exp(-sq / (2 * h**2)) @ diff

    for family, theta in [("bernoulli", torch.tensor([0.35])), ("poisson", torch.tensor([6.0]))]:
        hess = torch.autograd.functional.hessian(lambda a: model_mmd(family, a, theta), theta)
        assert torch.allclose(mmd.mmd_metric(family, theta, torch.tensor(h)), hess.reshape(1), atol=1e-11)
    probs = torch.tensor([[0.2, 0.5, 0.3]])
    hess = torch.autograd.functional.hessian(lambda a: model_mmd("categorical", a, probs[0]), probs[0])
    v = torch.tensor([1.0, -2.0, 1.0])  # a direction along the simplex
    # along the simplex the Jacobian of theta -> theta / sum(theta) is the identity: v' H v = 2 v' G v = C |v|^2
    assert torch.allclose(v @ hess @ v, mmd.mmd_metric("categorical", probs, torch.tensor(h)) * (v @ v), atol=1e-11)


def test_median_bandwidth():
    y = torch.tensor([[0.0, 0.0], [1.0, 0.01], [3.0, 0.02], [7.0, 0.0]])
    h = mmd.median_bandwidth(y)
    # cyclic pairs (4,1), (1,2), (2,3), (3,4): distances 7, 1, 2, 4; the lower median is 2
    assert h[0].item() == 2.0
    assert h[1].item() == 1.0  # floored at the lattice spacing
    assert torch.equal(mmd.median_bandwidth(y[:1]), torch.ones(2))
    assert torch.allclose(mmd.median_bandwidth(torch.eye(3)[[0, 1, 1]][:, None, :]), torch.tensor([2**0.5]))


def test_median_bandwidth_estimates_the_population_median():
    # Poisson(50): the population median of |Z - Z'| (Skellam) from scipy; 4000 cyclic pairs give it within 1 lattice step
    z = torch.poisson(torch.full((4000, 1), 50.0), generator=torch.Generator().manual_seed(0))
    diff = np.arange(0, 200)
    cdf = stats.skellam.cdf(diff, 50, 50) - stats.skellam.cdf(-diff - 1, 50, 50)
    population = diff[np.searchsorted(cdf, 0.5)]
    assert abs(mmd.median_bandwidth(z).item() - population) <= 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mmd.mmd_squared("bernoulli", torch.tensor([0.5]), torch.zeros(3, 1), -1.0), r"bandwidth must be > 0, got minimum -1"),
        (lambda: mmd.mmd_squared("bernoulli", torch.tensor([0.5]), torch.zeros(3, 1), "mean"), r"unknown bandwidth 'mean'; valid: median"),
        (lambda: mmd.mmd_squared("bernoulli", torch.tensor([0.5]), torch.zeros(3, 1), torch.ones(2)), r"bandwidth must be a number or a tensor of shape \[d\] = \[1\], got \(2,\)"),
        (lambda: mmd.mmd_squared("bernoulli", torch.tensor([1.5]), torch.zeros(3, 1)), r"theta \(Bernoulli probabilities p\) must lie in \[0, 1\]"),
        (lambda: mmd.mmd_squared("gaussian", torch.tensor([0.5]), torch.zeros(3, 1)), r"unknown family 'gaussian'; valid: bernoulli, categorical, poisson"),
        (lambda: mmd.mmd_squared_grad_bernoulli(torch.tensor([0.5]), torch.zeros(3, 2)), r"z_tilde for 'bernoulli' .* must have shape \[N, d\]"),
        (lambda: mmd.mmd_squared_grad_bernoulli(torch.tensor([0.5]), torch.tensor([[float("nan")]])), r"z_tilde must be finite"),
        (lambda: mmd.mmd_squared_grad_poisson(torch.tensor([0.0]), torch.zeros(3, 1)), r"theta \(Poisson rates lambda\) must be > 0"),
        (lambda: mmd.mmd_squared_grad_poisson(torch.tensor([2.0]), torch.zeros(3, 1), tail=0.0), r"tail must lie in \(0, 1\), got 0.0"),
        (lambda: mmd.mmd_squared_grad_categorical(torch.tensor([[0.5, 0.6]]), torch.zeros(3, 1, 2)), r"theta rows for 'categorical' must sum to 1"),
        (lambda: mmd.mmd_squared_grad_categorical(torch.tensor([[0.5, 0.5]]), torch.zeros(3, 2)), r"z_tilde for 'categorical' .* must have shape \[N, d, K\]"),
        (lambda: mmd.mmd_squared_grad("bernoulli", torch.tensor([0.5]), [[0.0]]), r"z_tilde must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
