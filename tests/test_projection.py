"""pWGF surrogate builders: ST identities, MMD projection against autograd, the surrogate contract, errors."""

import numpy as np
import pytest
import torch

from pwgf import estimators, families, mmd, projection

torch.set_default_dtype(torch.float64)

D, K, N = 4, 3, 64
W = torch.tensor([0.7, -1.2, 0.4, 2.0])
WC = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.4], [-0.8, 0.6, 0.9], [0.2, -0.3, 1.1]])


def f_vector(z):
    return torch.sin(z @ W) + 0.3 * (z**2).sum(-1)


def f_onehot(z):
    return torch.sin((z * WC).sum((-1, -2))) + ((z * WC).sum(-1) ** 2).sum(-1)


CASES = {
    "bernoulli": (torch.tensor([0.1, 0.5, 0.8, 0.97]), f_vector),
    "poisson": (torch.tensor([0.05, 1.0, 7.0, 150.0]), f_vector),
    "categorical": (torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.05, 0.9, 0.05], [1 / 3, 1 / 3, 1 / 3]]), f_onehot),
}


def grad_of(name, family, theta, f, seed, **opts):
    return estimators.estimate(name, family, theta, f, N, generator=torch.Generator().manual_seed(seed), **opts)


def drawn(family, theta, seed):
    """The samples a builder draws with this seed, and grad f at them (autograd, independent of the builders)."""
    z = families.sample(family, theta, N, torch.Generator().manual_seed(seed)).requires_grad_(True)
    f = CASES[family][1]
    (gz,) = torch.autograd.grad(f(z).sum(), z)
    return z.detach(), gz


@pytest.mark.parametrize("family", list(CASES))
def test_st_is_mean_gradient_through_the_mean(family):
    theta, f = CASES[family]
    _, gz = drawn(family, theta, 3)
    ref = gz.mean(0)
    if family == "categorical":  # chain rule through theta / sum(theta) at sum = 1
        ref = ref - (theta * ref).sum(-1, keepdim=True)
    assert torch.allclose(grad_of("st", family, theta, f, 3), ref, atol=1e-12)


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("eps", [1e-3, 0.1, 1.0, 10.0])
def test_pwgf_st_equals_st_for_every_eps(family, eps):
    theta, f = CASES[family]
    a, b = grad_of("st", family, theta, f, 5), grad_of("pwgf_st", family, theta, f, 5, eps=eps)
    # only rounding of z_tilde = z - eps grad f differs: relative 1e-16 * max|z| / eps, max|z| ~ 200 here
    assert torch.allclose(a, b, atol=1e-16 * 400 / eps * a.abs().max().item() + 1e-15, rtol=0)


def autograd_mmd_estimate(family, theta, z, z_tilde, h, eps):
    """[grad Delta^2(z_tilde) - grad Delta^2(z)] / (eps C) with autograd gradients and an autograd Hessian for C."""
    def g(y):
        leaf = theta.clone().requires_grad_(True)
        (out,) = torch.autograd.grad(mmd.mmd_squared(family, leaf, y, h).sum(), leaf)
        return out

    if family == "categorical":
        c = 2 * (1 - torch.exp(-1 / torch.tensor(h) ** 2))
    else:
        # curvature: d^2/dtheta^2 of Delta^2(mu_theta, mu_theta') at theta' = theta, coordinate by coordinate
        c = torch.stack([_model_hessian(family, theta[i : i + 1], h) for i in range(theta.shape[0])])
    return (g(z_tilde) - g(z)) / (eps * c)


def _model_hessian(family, t, h):
    support = torch.tensor([0.0, 1.0]) if family == "bernoulli" else torch.arange(0.0, float(t.item() + 40 * t.item() ** 0.5 + 40))

    def pmf(a):
        if family == "bernoulli":
            return torch.cat([1 - a, a])
        return torch.distributions.Poisson(a).log_prob(support).exp()

    gram = mmd.rbf_kernel(support[:, None], support[None, :], h)
    return torch.autograd.functional.hessian(lambda a: (pmf(a) - pmf(t)) @ gram @ (pmf(a) - pmf(t)), t).reshape(())


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("h", [0.6, 1.0, 2.5])
def test_pwgf_mmd_matches_autograd_projection(family, h):
    theta, f = CASES[family]
    eps = 0.2
    z, gz = drawn(family, theta, 11)
    ref = autograd_mmd_estimate(family, theta, z, z - eps * gz, h, eps)
    got = grad_of("pwgf_mmd", family, theta, f, 11, eps=eps, bandwidth=h)
    assert torch.allclose(got, ref, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("h", [0.5, 1.0, 3.0])
def test_pwgf_mmd_small_eps_limit_is_scaled_st(h):
    # Derived in the MMD chapter: as eps -> 0 the Bernoulli (categorical) estimate is c(h) times ST with
    # c = k / (2 h^2 (1 - k)), k = exp(-1/(2h^2))  (c = kappa / (h^2 (1 - kappa)), kappa = exp(-1/h^2)).
    eps = 1e-6
    for family, k, c_of in [
        ("bernoulli", torch.exp(torch.tensor(-1 / (2 * h**2))), lambda k: k / (2 * h**2 * (1 - k))),
        ("categorical", torch.exp(torch.tensor(-1 / h**2)), lambda k: k / (h**2 * (1 - k))),
    ]:
        theta, f = CASES[family]
        st_grad = grad_of("st", family, theta, f, 2)
        got = grad_of("pwgf_mmd", family, theta, f, 2, eps=eps, bandwidth=h)
        # the remainder is O(eps |grad f|^2 / h^2): |grad f| <= 10 here, so 1e-4 relative is ample
        assert torch.allclose(got, c_of(k) * st_grad, atol=1e-4 * st_grad.abs().max().item(), rtol=0), family


@pytest.mark.parametrize("name", ["st", "pwgf_st", "pwgf_mmd", "pwgf_mmd_argmin"])
@pytest.mark.parametrize("family", list(CASES))
def test_surrogate_contract(name, family):
    theta, _ = CASES[family]
    # f with its own parameter: value and parameter gradient are the sample mean of f and of d f / d scale
    scale = torch.tensor(1.5, requires_grad=True)
    base = CASES[family][1]
    f = lambda z: scale * base(z)  # noqa: E731
    # theta as the output of a "network": gradients must flow through it
    raw = (theta.log() if family != "bernoulli" else torch.logit(theta)).clone().requires_grad_(True)
    theta_net = torch.softmax(raw, -1) if family == "categorical" else (raw.exp() if family == "poisson" else torch.sigmoid(raw))
    out = estimators.surrogate(name, family, theta_net, f, N, generator=torch.Generator().manual_seed(9))
    out.backward(retain_graph=True)
    z, _ = drawn(family, theta, 9)
    mean_f = base(z).mean()
    assert abs(out.item() - 1.5 * mean_f.item()) < 1e-12
    assert abs(scale.grad.item() - mean_f.item()) < 1e-12
    est = grad_of(name, family, theta, f, 9)
    (chain,) = torch.autograd.grad(theta_net, raw, est)
    assert torch.allclose(raw.grad, chain, atol=1e-12)


def f_square(z):
    return (z**2).sum(-1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: estimators.surrogate("st", "bernoulli", torch.tensor([0.5]), f_square, 0), r"n_samples must be an integer >= 1, got 0"),
        (lambda: estimators.surrogate("st", "bernoulli", torch.tensor([1.5]), f_vector, 4), r"theta \(Bernoulli probabilities p\) must lie in \[0, 1\]"),
        (lambda: estimators.surrogate("st", "gaussian", torch.tensor([0.5]), f_square, 4), r"unknown family 'gaussian'"),
        (lambda: estimators.surrogate("st", "bernoulli", torch.tensor([0.5]), lambda z: z, 4), r"f must map samples of shape \[n, ...\] = \(4, 1\) to costs of shape \[4\], got \(4, 1\)"),
        (lambda: estimators.surrogate("pwgf_st", "bernoulli", torch.tensor([0.5]), f_square, 4, eps=0.0), r"eps must be > 0, got minimum 0"),
        (lambda: estimators.surrogate("pwgf_mmd", "bernoulli", torch.tensor([0.5]), f_square, 4, eps=-1.0), r"eps must be > 0, got minimum -1"),
        (lambda: estimators.surrogate("pwgf_mmd", "bernoulli", torch.tensor([0.5]), f_square, 4, bandwidth=0.0), r"bandwidth must be > 0, got minimum 0"),
        (lambda: estimators.surrogate("pwgf_mmd", "bernoulli", torch.tensor([0.5]), f_square, 4, bandwidth="silverman"), r"unknown bandwidth 'silverman'; valid: median"),
        (lambda: estimators.surrogate("pwgf_mmd", "poisson", torch.tensor([2.0]), lambda z: torch.ones(z.shape[0]), 4), r"f must be differentiable in z"),
        (lambda: estimators.surrogate("pwgf_mmd", "poisson", torch.tensor([2.0]), lambda z: z.sum(-1).round().detach(), 4), r"f must be differentiable in z"),
        (lambda: estimators.surrogate("pwgf_mmd_argmin", "bernoulli", torch.tensor([0.5]), f_square, 4, eps=0.0), r"eps must be > 0, got minimum 0"),
        (lambda: estimators.surrogate("pwgf_mmd_argmin", "bernoulli", torch.tensor([0.5]), f_square, 4, bandwidth=torch.ones(3)), r"bandwidth must be a number, 'median', or a tensor broadcastable to \(1,\), got \(3,\)"),
    ],
)
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_st_expectation_matches_monte_carlo_and_quadratic_bias():
    # f(z) = 1/2 z'Az + b'z: ST's mean is exact minus (1/2 - p_i) A_ii (Bernoulli) and exact - A_ii / 2 (Poisson)
    from pwgf import exact

    a = torch.tensor([[2.0, 0.5, -0.3], [0.5, -1.0, 0.2], [-0.3, 0.2, 0.6]])
    b = torch.tensor([0.3, -0.7, 1.1])
    f = lambda z: 0.5 * torch.einsum("ni,ij,nj->n", z, a, z) + z @ b  # noqa: E731
    p = torch.tensor([0.2, 0.5, 0.9])
    bias = projection.st_expectation("bernoulli", p, f) - exact.gradient("bernoulli", p, f)
    assert torch.allclose(bias, (p - 0.5) * a.diagonal(), atol=1e-12)
    lam = torch.tensor([0.4, 2.0, 5.0])
    bias = projection.st_expectation("poisson", lam, f) - exact.gradient("poisson", lam, f)
    assert torch.allclose(bias, -0.5 * a.diagonal(), atol=1e-9)  # truncated tails: 1e-12 mass times |f| <= 1e3
    # Monte Carlo mean of the ST estimator within 5 standard errors of the enumerated mean
    theta, fv = CASES["bernoulli"]
    reps = torch.stack([grad_of("st", "bernoulli", theta, fv, s) for s in range(200)])
    se = reps.std(0) / 200**0.5
    assert ((reps.mean(0) - projection.st_expectation("bernoulli", theta, fv)).abs() <= 5 * se).all()


@pytest.mark.parametrize("family", list(CASES))
def test_pwgf_mmd_expectation_matches_monte_carlo(family):
    theta, f = CASES[family]
    if family == "poisson":
        theta = torch.tensor([0.05, 1.0, 4.0])  # enumeration needs a small joint support
        f = lambda z: torch.sin(z @ W[:3]) + 0.3 * (z**2).sum(-1)  # noqa: E731
    mean = projection.pwgf_mmd_expectation(family, theta, f, eps=0.1, bandwidth=1.0)
    reps = torch.stack([grad_of("pwgf_mmd", family, theta, f, s, eps=0.1, bandwidth=1.0) for s in range(100)])
    se = reps.std(0) / 100**0.5
    assert ((reps.mean(0) - mean).abs() <= 5 * se + 1e-12).all()  # 5 standard errors of the Monte Carlo mean
    with pytest.raises(ValueError, match="bandwidth must be a fixed positive number or tensor here; the median heuristic depends on the whole batch"):
        projection.pwgf_mmd_expectation(family, theta, f, bandwidth="median")


def test_benchmark_harness_records_timings_and_ratios():
    from pwgf.experiments import bench

    record = bench.run(2, dimensions=(3,), sample_sizes=(2,), families=("bernoulli",), names=("exact", "st", "pwgf_st", "pwgf_mmd"))
    rows = {r["estimator"]: r for r in record["timings"]}
    assert all(rows[name]["median_s"] > 0 for name in rows)
    ratios = bench.overhead(2, families=("poisson",), d=3, n=2)["poisson"]
    assert set(ratios) >= {"pwgf_mmd_over_st", "pwgf_mmd_argmin_over_st", "target", "within_target", "st_cpu_median_s"}
    assert ratios["within_target"] == (ratios["pwgf_mmd_over_st"] <= bench.TARGET_RATIO)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        bench.run(0)


def test_model_benchmark_times_a_training_step_per_estimator():
    from pwgf.experiments import bench

    record = bench.run_model(1, names=("st", "reinmax", "arm"))
    rows = {r["estimator"]: r for r in record["rows"]}
    assert rows["st"]["over_st"] == 1.0 and rows["reinmax"]["target"] == bench.MODEL_TARGETS["reinmax"]
    assert all(r["median_s"] > 0 for r in rows.values()) and record["shape"] == bench.MODEL_SHAPE


# ---- the paper's MMD step: mmd_argmin against numerical minimization of mmd.mmd_squared ----------


def _numerical_argmin(family, y, h, bounds):
    from scipy import optimize

    def objective(value):
        theta = torch.tensor([value]) if family != "categorical" else None
        return mmd.mmd_squared(family, theta, y, h).item()

    grid = np.linspace(*bounds, 301)
    start = grid[np.argmin([objective(v) for v in grid])]
    step = grid[1] - grid[0]
    lo, hi = max(bounds[0], start - step), min(bounds[1], start + step)
    return optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x


@pytest.mark.parametrize("shift", [0.0, 0.3, -0.6, 2.0])
def test_bernoulli_paper_step_is_the_argmin_clipped(shift):
    g = torch.Generator().manual_seed(12)
    z = torch.bernoulli(torch.full((40, 1), 0.4), generator=g)
    y = z - shift * torch.rand(40, 1, generator=g)
    got = projection.mmd_argmin("bernoulli", torch.tensor([0.4]), y, torch.tensor(1.0))
    ref = _numerical_argmin("bernoulli", y, 1.0, (0.0, 1.0))
    # The objective is quadratic with curvature 4(1 - K(1,0)) ~ 1.6: the bounded search's 1e-12 on x is the tolerance.
    assert abs(got.item() - ref) < 1e-7


@pytest.mark.parametrize(("rate", "h", "shift"), [(0.3, 1.0, 0.2), (3.0, 1.0, 0.5), (3.0, 2.5, -1.0), (40.0, 6.0, 3.0), (5.0, 1.0, 8.0)])
def test_poisson_paper_step_is_the_argmin(rate, h, shift):
    g = torch.Generator().manual_seed(13)
    z = torch.poisson(torch.full((64, 1), rate), generator=g)
    y = z - shift * torch.rand(64, 1, generator=g)
    got = projection.mmd_argmin("poisson", torch.tensor([rate]), y, torch.tensor(h)).item()
    upper = 2 * (max(rate, y.max().item()) + h) + 1
    ref = _numerical_argmin("poisson", y, h, (1e-6, upper))
    # Both search the same smooth function; the zoom shrinks its bracket by 16^11 and minimize_scalar stops at
    # 1e-12, but a minimum is flat: |x - x*| ~ sqrt(2 * rounding / curvature) ~ 1e-7 for objective rounding 1e-16.
    assert abs(got - ref) < 1e-6 * max(1.0, ref)


def test_categorical_paper_step_is_the_simplex_argmin():
    from scipy import optimize

    g = torch.Generator().manual_seed(14)
    y = torch.eye(3)[torch.randint(3, (30,), generator=g)][:, None, :] + 0.2 * torch.randn(30, 1, 3, generator=g)
    got = projection.mmd_argmin("categorical", torch.full((1, 3), 1 / 3), y, torch.tensor(0.8))[0]
    res = optimize.minimize(
        lambda p: mmd.mmd_squared("categorical", torch.tensor(p)[None].clamp_min(1e-300), y, 0.8).item(),
        np.full(3, 1 / 3), method="SLSQP", bounds=[(0, 1)] * 3,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}], options={"ftol": 1e-15, "maxiter": 500},
    )
    assert np.abs(got.numpy() - res.x).max() < 1e-5  # SLSQP's accuracy on a quadratic over the simplex


@pytest.mark.parametrize("h", [0.5, 1.0, 2.0])
def test_pwgf_mmd_reverses_sign_for_outward_moves_beyond_the_reversal_move(h):
    """A Bernoulli sample's term of pwgf.mmd.moved_gradient (the closed form of the estimator, an independent
    code path) points along a small move, keeps that sign for outward moves up to bernoulli_reversal_move
    and reverses beyond it (1e-6 relative either side of the root, float64); inward moves never reverse."""
    t_star = projection.bernoulli_reversal_move(h)
    mean, bw = torch.tensor([0.3], dtype=torch.float64), torch.tensor(h, dtype=torch.float64)

    def term(z: float, moved: float) -> float:
        return float(mmd.moved_gradient("bernoulli", mean, torch.tensor([[z]], dtype=torch.float64), torch.tensor([[moved]], dtype=torch.float64), bw))

    for z, outward in ((1.0, 1.0), (0.0, -1.0)):
        small = term(z, z + 1e-3 * outward)
        assert small * term(z, z + t_star * (1 - 1e-6) * outward) > 0 > small * term(z, z + t_star * (1 + 1e-6) * outward)
        moves = torch.linspace(1e-3, 20, 400, dtype=torch.float64)
        assert not projection.reversed_moves(torch.full_like(moves, z), z - outward * moves, h).any()
        assert projection.reversed_moves(torch.full_like(moves, z), z + outward * moves, h).eq(moves > t_star).all()
    if h == 1.0:
        assert t_star == pytest.approx(1.2112068998, abs=1e-9)
