"""Tests for pwgf.estimators: the exact reference, unbiasedness, the surrogate contract, bad inputs.

Statistical checks: ``R`` independent estimates (each from ``n`` samples) are averaged and compared
with the exact gradient coordinate by coordinate; an unbiased estimator passes when every coordinate
is within 4 standard errors (two-sided false-alarm probability 6.3e-5 per coordinate under the CLT, so
about 2e-3 over the ~60 coordinates tested here). Seeds are fixed once. ``REPLICATES`` is sized so that
every check detects a bias of 10% of the gradient's largest coordinate on any one coordinate (power 0.95;
each test asserts its own detectable bias); the same test rejects the biased relaxations.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pwgf import estimators as E
from pwgf import families

DT = torch.float64
W_B = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
W_C = torch.tensor([[0.3, -1.2, 0.8], [1.5, 0.1, -0.7]], dtype=DT)


def f_bernoulli(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(z @ W_B) + torch.log1p(z.prod(-1) + z[..., 0] ** 2)


def f_poisson(z: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1 + z).sum(-1) + 0.1 * (z[..., 0] - z[..., 1]) ** 2


def f_categorical(z: torch.Tensor) -> torch.Tensor:
    return torch.cos((z * W_C).sum((-1, -2))) + (z[..., 0, :] * z[..., 1, :].flip(-1)).sum(-1) ** 2


PROBLEMS = {
    "bernoulli": (torch.tensor([0.3, 0.6, 0.85], dtype=DT), f_bernoulli),
    "poisson": (torch.tensor([0.7, 3.0], dtype=DT), f_poisson),
    "categorical": (torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=DT), f_categorical),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tensors here are tiny: intra-op threads only add synchronization, which on a loaded 2-core machine
    costs ~10x (OpenMP barriers wait for busy cores). One thread for this module, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the exact estimator against independent references -----------------------------------------


def test_exact_bernoulli_matches_difference_formula():
    # d/dp_k E f = E_{z_-k}[f(z_-k, 1) - f(z_-k, 0)], summed over the 2^(d-1) other states in numpy.
    p, f = PROBLEMS["bernoulli"]
    pn, d = p.numpy(), p.shape[0]
    ref = np.zeros(d)
    for k in range(d):
        for rest in itertools.product([0.0, 1.0], repeat=d - 1):
            weight = np.prod([pn[j] if r else 1 - pn[j] for j, r in zip([j for j in range(d) if j != k], rest)])
            hi, lo = list(rest), list(rest)
            hi.insert(k, 1.0), lo.insert(k, 0.0)
            ref[k] += weight * (f(torch.tensor([hi], dtype=DT)) - f(torch.tensor([lo], dtype=DT))).item()
    np.testing.assert_allclose(E.estimate("exact", "bernoulli", p, f, 1).numpy(), ref, rtol=0, atol=1e-12)


def test_exact_poisson_matches_stein_identity():
    # Poisson: d/dlambda_k E f(z) = E[f(z + e_k) - f(z)]; scipy pmf on a grid with tail < 1e-15.
    lam, f = PROBLEMS["poisson"]
    grid = np.arange(60.0)
    pmf = [stats.poisson.pmf(grid, r) for r in lam.numpy()]
    z = torch.tensor(np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2), dtype=DT)
    w = np.outer(*pmf).reshape(-1)
    ref = [float(w @ (f(z + torch.eye(2, dtype=DT)[k]) - f(z)).numpy()) for k in range(2)]
    np.testing.assert_allclose(E.estimate("exact", "poisson", lam, f, 1).numpy(), ref, rtol=0, atol=1e-9)


def test_exact_categorical_matches_finite_differences():
    # Central differences of the enumerated expectation of the normalized theta (scale-invariant
    # extension); step 1e-5 gives truncation error ~1e-10, rounding ~1e-11.
    theta, f = PROBLEMS["categorical"]
    states = torch.tensor(list(itertools.product(range(3), repeat=2)))
    onehot = torch.nn.functional.one_hot(states, 3).to(DT)
    costs = f(onehot).numpy()

    def value(t: np.ndarray) -> float:
        q = t / t.sum(-1, keepdims=True)
        return float((q[0, states[:, 0]] * q[1, states[:, 1]]) @ costs)

    h, t0, ref = 1e-5, theta.numpy(), np.zeros((2, 3))
    for i, k in itertools.product(range(2), range(3)):
        e = np.zeros((2, 3))
        e[i, k] = h
        ref[i, k] = (value(t0 + e) - value(t0 - e)) / (2 * h)
    got = E.estimate("exact", "categorical", theta, f, 1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose((got * theta).sum(-1).numpy(), 0, atol=1e-14)  # Euler: scale invariance


# ---- unbiasedness ---------------------------------------------------------------------------------


#: Replicates of every unbiasedness check, drawn in one call as independent examples along a batch axis
#: (the per-example contract). Sized so that each check detects, with probability 0.95, a bias of 10% of the
#: largest gradient coordinate on any one coordinate: the largest coordinate's 4-standard-error threshold plus
#: 1.645 standard errors, relative to that size, is at most 5.5% for every case (REINFORCE on the categorical
#: problem, the noisiest), and ``test_unbiased_within_four_standard_errors`` asserts it is below 10%.
REPLICATES = 20_000
#: A bias this many standard errors from zero is detected by the 4-standard-error check with probability 0.95.
DETECTED_AT = 4 + stats.norm.isf(0.05)


def z_scores(name: str, family: str, replicates: int, n: int, seed: int, **opts) -> tuple[np.ndarray, float]:
    """Per-coordinate z-scores of the mean of ``replicates`` estimates against the exact gradient, and the
    detectable bias: ``DETECTED_AT`` standard errors of the noisiest coordinate, relative to the largest gradient coordinate."""
    theta, f = PROBLEMS[family]
    q, _ = families.resolve(family, (theta, f, n), ("f", "n_samples"))
    draws = E.estimate(name, q.replicated(replicates).dist, f, n, generator=gen(seed), **opts)
    exact = E.estimate("exact", family, theta, f, 1)
    se = draws.std(0) / replicates**0.5
    return ((draws.mean(0) - exact) / se).numpy(), float(DETECTED_AT * se.max() / exact.abs().max())


UNBIASED_CASES = [(name, family) for name in sorted(E.UNBIASED - {"exact"}) for family in sorted(E.ESTIMATORS[name])]


@pytest.mark.parametrize(("name", "family"), UNBIASED_CASES)
def test_unbiased_within_four_standard_errors(name, family):
    # Eight distinct states would be the whole support of the Bernoulli problem: an exact, zero-variance estimate.
    z, detectable = z_scores(name, family, replicates=REPLICATES, n=4 if name == "unordered_set" else 8, seed=2024)
    assert detectable < 0.10, detectable  # the check has the power it claims
    assert np.all(np.abs(z) < 4), z


@pytest.mark.parametrize(("name", "family"), [("gumbel_softmax", "bernoulli"), ("st", "bernoulli"), ("st_gumbel_softmax", "categorical")])
def test_the_same_test_detects_biased_estimators(name, family):
    assert np.abs(z_scores(name, family, replicates=REPLICATES, n=8, seed=2024)[0]).max() > 4


@pytest.mark.parametrize(("name", "family", "bias"), [("reinforce", "categorical", 0.10), ("reinforce", "poisson", 0.10), ("arm", "bernoulli", 0.10)])
def test_the_check_detects_a_ten_percent_bias(name, family, bias, monkeypatch):
    """An unbiased estimator made biased by 10% of its largest gradient coordinate on its noisiest coordinate fails the check."""
    theta, f = PROBLEMS[family]
    exact = E.estimate("exact", family, theta, f, 1)
    q, _ = families.resolve(family, (theta, f, 8), ("f", "n_samples"))
    draws = E.estimate(name, q.replicated(REPLICATES).dist, f, 8, generator=gen(2024))
    noisiest = draws.std(0).flatten().argmax()
    shift = torch.zeros(exact.numel(), dtype=DT)
    shift[noisiest] = bias * exact.abs().max()
    z = ((draws.mean(0) + shift.reshape(exact.shape) - exact) / (draws.std(0) / REPLICATES**0.5)).numpy()
    assert np.abs(z).max() > 4, z


def test_muprop_single_sample_and_reinforce_needs_two():
    z, detectable = z_scores("muprop", "bernoulli", replicates=REPLICATES, n=1, seed=7)
    assert detectable < 0.10 and np.all(np.abs(z) < 4), (z, detectable)
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        E.estimate("reinforce", "bernoulli", PROBLEMS["bernoulli"][0], f_bernoulli, 1)


def test_disarm_has_no_more_variance_than_arm():
    # DisARM is ARM conditioned on the antithetic pair (Rao-Blackwellization): Var(DisARM) <= Var(ARM).
    # Here the total variance ratio is about 0.68 (4000 replicates); with 1000 replicates each total
    # variance is estimated to ~5% relative error, so the ratio below 1 is a > 5-sigma margin.
    theta, f = PROBLEMS["bernoulli"]
    var = {k: E.estimates(k, "bernoulli", theta, f, 4, 1000, generator=gen(5)).var(0).sum() for k in ("arm", "disarm")}
    assert var["disarm"] < var["arm"]


# ---- the surrogate contract -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "family"), [(n, fam) for n in sorted(E.ESTIMATORS) for fam in sorted(E.ESTIMATORS[n])])
def test_surrogate_contract(name, family):
    theta, f = PROBLEMS[family]
    # (a) theta as the output of a network: backward through it is the chain rule of estimate().
    w = torch.logit(theta) if family == "bernoulli" else theta.log()
    w = w.clone().requires_grad_(True)
    link = (torch.sigmoid if family == "bernoulli" else torch.exp if family == "poisson" else lambda x: torch.softmax(x, -1))
    phi = torch.tensor(1.3, dtype=DT, requires_grad=True)

    def scaled(z: torch.Tensor) -> torch.Tensor:
        return phi * f(z)

    loss = E.surrogate(name, family, link(w), scaled, 6, generator=gen(11))
    loss.backward()
    g = E.estimate(name, family, theta, scaled, 6, generator=gen(11))
    (chain,) = torch.autograd.grad(link(w), w, grad_outputs=g)
    torch.testing.assert_close(w.grad, chain, rtol=1e-10, atol=1e-12)
    # (b) f's own parameters get the sample mean of their gradients: for f = phi * f0 that is value / phi.
    torch.testing.assert_close(phi.grad, loss.detach() / phi.detach(), rtol=1e-12, atol=1e-14)
    assert g.shape == theta.shape and g.dtype == theta.dtype


def test_relax_control_gets_zero_surrogate_gradient_but_trains_on_variance():
    theta, f = PROBLEMS["bernoulli"]
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(DT)
    eta = torch.tensor(0.8, dtype=DT, requires_grad=True)

    def control(s: torch.Tensor) -> torch.Tensor:
        return net(s).squeeze(-1)

    leaf = theta.clone().requires_grad_(True)
    loss = E.surrogate("relax", "bernoulli", leaf, f, 16, generator=gen(3), control=control, eta=eta)
    loss.backward(retain_graph=True)
    assert all(p.grad is None or torch.all(p.grad == 0) for p in [*net.parameters(), eta])
    (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
    variance_grads = torch.autograd.grad(g.pow(2).sum(), [eta, *net.parameters()])
    assert all(torch.isfinite(v).all() for v in variance_grads) and variance_grads[0].abs() > 0


def test_tune_fits_only_the_given_parameters():
    theta, f = PROBLEMS["bernoulli"]
    phi = torch.tensor(1.0, dtype=DT, requires_grad=True)  # a parameter of f: tune must not touch it
    eta = torch.tensor(0.5, dtype=DT, requires_grad=True)
    history = E.tune("rebar", "bernoulli", theta, lambda z: phi * f(z), 8, [eta], steps=5, lr=0.1, generator=gen(4), eta=eta)
    assert len(history) == 5 and all(np.isfinite(history))
    assert eta.item() != 0.5 and phi.grad is None
    with pytest.raises(ValueError, match="parameters must be a non-empty list"):
        E.tune("rebar", "bernoulli", theta, f, 8, [], eta=eta)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        E.tune("rebar", "bernoulli", theta, f, 8, [eta], steps=0, eta=eta)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(E.ESTIMATORS)), st.integers(0, 2**31 - 1))
def test_seeded_estimates_are_reproducible(name, seed):
    family = sorted(E.ESTIMATORS[name])[0]
    theta, f = PROBLEMS[family]
    a = E.estimate(name, family, theta, f, 3, generator=gen(seed))
    b = E.estimate(name, family, theta, f, 3, generator=gen(seed))
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_float32_theta_gives_float32_estimates():
    theta, f = PROBLEMS["bernoulli"]
    theta32 = theta.float()
    w32 = W_B.float()
    for name in ("reinforce", "arm", "rebar", "st", "gumbel_softmax"):
        g = E.estimate(name, "bernoulli", theta32, lambda z: torch.sin(z @ w32), 4, generator=gen(0))
        assert g.dtype == torch.float32


# ---- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("nope", "bernoulli"), {}, "unknown estimator 'nope'; valid: arm, disarm"),
        (("reinforce", "gaussian"), {}, "unknown family 'gaussian'; valid: bernoulli, categorical, poisson"),
        (("arm", "poisson"), {}, "does not apply to a poisson distribution.*estimators for poisson: eat_cubic, eat_sigmoid, exact, muprop, pwgf_mmd"),
        (("reinforce", "bernoulli"), {"temperature": 0.5}, "unknown option.*temperature.*valid: none"),
        (("rebar", "bernoulli"), {"tau": 0.5}, "unknown option.*tau.*valid: eta, temperature"),
        (("rebar", "bernoulli"), {"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_names_families_and_options_raise(args, kwargs, message):
    theta, f = PROBLEMS["poisson" if args[1] == "poisson" else "bernoulli"]
    with pytest.raises(ValueError, match=message):
        E.estimate(*args, theta, f, 4, **kwargs)


def test_bad_theta_samples_and_costs_raise():
    theta, f = PROBLEMS["bernoulli"]
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        E.estimate("reinforce", "bernoulli", torch.tensor([0.2, 1.5], dtype=DT), f, 4)
    # Probabilities of exactly 0 and 1 are valid: every estimator that needs logits reads torch's clamped ones.
    for name in ("arm", "disarm", "rebar", "gumbel_rao", "reinmax"):
        g = E.estimate(name, "bernoulli", torch.tensor([0.0, 0.5, 1.0], dtype=DT), f, 4, generator=gen(1))
        assert torch.isfinite(g).all(), name
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        E.estimate("muprop", "bernoulli", theta, f, 0)
    with pytest.raises(ValueError, match="costs of shape"):
        E.estimate("reinforce", "bernoulli", theta, lambda z: z, 4)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        E.estimate("reinforce", "bernoulli", theta, f, 4, generator=0)
    with pytest.raises(ValueError, match="replicates must be an integer >= 1"):
        E.estimates("reinforce", "bernoulli", theta, f, 4, 0)
    with pytest.raises(ValueError, match="theta must be a torch.Tensor"):
        E.estimate("exact", "bernoulli", [0.5], f, 4)
