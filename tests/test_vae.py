"""The Bernoulli VAE: ARM's architectures against hand-written formulas, and the ELBO and IWAE bounds against enumeration."""

import math

import pytest
import torch
import torch.nn.functional as F

from pwgf import exact, families
from pwgf.experiments import vae

X_DIM, Z_DIM, Z2_DIM, HIDDEN = 6, 3, 2, 4
SMALL = {
    "linear": {},
    "two_layer": {"z2_dim": Z2_DIM},
    "nonlinear": {"hidden_dim": HIDDEN},
}
# Four distinct 6-pixel images.
X = families.support("bernoulli", torch.full((X_DIM,), 0.5, dtype=torch.float64))[[5, 17, 40, 63]]
# Monte Carlo checks compare a mean of R independent estimates with an exact value: |mean - exact| <= 4
# standard errors, a two-sided false-alarm probability of 6e-5 per comparison under the normal approximation.
R = 4000
K_SE = 4.0


def small(arch, dtype=torch.float64, **kwargs):
    return vae.BernoulliVAE(arch, X_DIM, Z_DIM, seed=1, dtype=dtype, **SMALL[arch], **kwargs)


def binary_states(d):
    return families.support("bernoulli", torch.full((d,), 0.5, dtype=torch.float64))


def log_bernoulli(v, logits):
    """sum_i v_i l_i - softplus(l_i): log Bern(v; sigmoid(l)), written out."""
    return (v * logits - F.softplus(logits)).sum(-1)


def reference(model, x, z, z2=None):
    """log p(x, z) and log q(z | x) from the model's weights by the formulas of ARM's scripts."""
    p = dict(model.named_parameters()) | dict(model.named_buffers())

    def affine(name, v):
        return v @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def mlp(name, v):
        if model.arch != "nonlinear":
            return affine(name, 2 * v - 1 if model.arch == "linear" else v)
        for i in (0, 2):
            h = affine(f"{name}.{i}", v)
            v = torch.where(h > 0, h, 0.1 * h)
        return affine(f"{name}.4", v)

    log_p = log_bernoulli(x, mlp("decoder", z))
    log_q = log_bernoulli(z, mlp("encoder", x))
    if z2 is None:
        return log_p + log_bernoulli(z, p["prior_logits"]), log_q
    log_p = log_p + log_bernoulli(z, affine("decoder_2", z2)) + log_bernoulli(z2, p["prior_logits"])
    return log_p, log_q + log_bernoulli(z2, affine("encoder_2", z))


def enumerate_latents(model, batch):
    """Every latent state, broadcast over the batch: (z,) or (z1, z2), each [S, batch, d]."""
    dims = [model.z_dim] + ([model.z2_dim] if model.n_layers == 2 else [])
    states = binary_states(sum(dims))[:, None, :].expand(-1, batch, -1)
    return tuple(states.split(dims, dim=-1))


def exact_terms(model, x):
    with torch.no_grad():
        return vae.enumerated_log_densities(model, x)


def mc(values, batch):
    """Mean and standard error over R replicates of per-example estimates laid out as [R * batch]."""
    values = values.reshape(-1, batch).double()
    return values.mean(0), values.std(0) / math.sqrt(values.shape[0])


# --- construction ---


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("conv",), {}, "unknown arch 'conv'; valid: linear, nonlinear, two_layer"),
        (("linear",), {"z2_dim": 3}, "z2_dim applies only to arch='two_layer'"),
        (("two_layer",), {"hidden_dim": 3}, "hidden_dim applies only to arch='nonlinear'"),
        (("linear", 0), {}, "x_dim must be an integer >= 1, got 0"),
        (("linear", 784, 2.5), {}, "z_dim must be an integer >= 1"),
        (("two_layer",), {"z2_dim": -1}, "z2_dim must be an integer >= 1"),
        (("nonlinear",), {"hidden_dim": 0}, "hidden_dim must be an integer >= 1"),
        (("linear",), {"dtype": torch.int32}, "dtype must be a floating torch.dtype"),
        (("linear",), {"learned_prior": "yes"}, "learned_prior must be True, False or None"),
        (("linear",), {"seed": -1}, r"seed must be an integer in \[0, 2\*\*63\)"),
    ],
)
def test_configuration_errors_name_the_argument(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vae.BernoulliVAE(*args, **kwargs)


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_paper_scale_sizes_and_initialization(arch):
    model = vae.BernoulliVAE(arch)
    assert (model.x_dim, model.z_dim) == (784, 200)
    widths = {"linear": [(784, 200), (200, 784)], "two_layer": [(784, 200), (200, 784), (200, 200), (200, 200)]}
    widths["nonlinear"] = [(784, 200), (200, 200), (200, 200), (200, 200), (200, 200), (200, 784)]
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert sorted((m.in_features, m.out_features) for m in layers) == sorted(widths[arch])
    for layer in layers:
        # Glorot-uniform weights, U(-b, b) with b = sqrt(6 / (fan_in + fan_out)); zero biases.
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert abs(w.var().item() - bound**2 / 3) < 0.1 * bound**2 / 3
        assert (layer.bias == 0).all()


def test_initialization_is_seeded():
    a, b, c = (vae.BernoulliVAE("nonlinear", seed=s).state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["encoder.0.weight"], c["encoder.0.weight"])


@pytest.mark.parametrize(("arch", "learned"), [("linear", True), ("two_layer", True), ("nonlinear", False)])
def test_the_prior_is_learned_where_arm_learns_it(arch, learned):
    model = small(arch)
    assert (model.prior_logits == 0).all()
    assert isinstance(model.prior_logits, torch.nn.Parameter) == learned
    flipped = small(arch, learned_prior=not learned)
    assert isinstance(flipped.prior_logits, torch.nn.Parameter) == (not learned)
    groups = model.parameter_groups()
    assert sorted(groups) == ["decoder", "encoder", "prior"]
    assert len(groups["prior"]) == int(learned)
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert {id(p) for p in groups["encoder"]} == {id(p) for n, p in model.named_parameters() if n.startswith("encoder")}


# --- densities ---


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_densities_match_the_formulas_and_broadcast(arch):
    model = small(arch)
    latents = enumerate_latents(model, len(X))  # [S, B, d]
    log_p, log_q = reference(model, X, *latents)
    # float64 sums of a dozen terms of order one: agreement to 1e-12.
    assert torch.allclose(model.log_joint(X, *latents), log_p, atol=1e-12)
    assert torch.allclose(model.log_q(X, *latents), log_q, atol=1e-12)
    # One more leading sample dimension broadcasts the same way.
    stacked = [torch.stack([z, 1 - z]) for z in latents]
    twice = model.log_joint(X, *stacked)
    assert twice.shape == (2, len(latents[0]), len(X))
    assert torch.allclose(twice[1], reference(model, X, *[1 - z for z in latents])[0], atol=1e-12)
    # q(. | x) is a distribution over the latent states.
    assert torch.allclose(log_q.logsumexp(0), torch.zeros(len(X), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(arch, dtype):
    model = small(arch, dtype=dtype)
    x = X.to(dtype)
    assert model.dtype == dtype
    assert model.encoder_logits(x).shape == (4, Z_DIM) and model.encoder_logits(x).dtype == dtype
    latents = model.sample_latents(x, 5, torch.Generator().manual_seed(0))
    assert len(latents) == model.n_layers
    assert [tuple(z.shape) for z in latents] == [(5, 4, Z_DIM)] + ([(5, 4, Z2_DIM)] if arch == "two_layer" else [])
    assert all(z.dtype == dtype and ((z == 0) | (z == 1)).all() for z in latents)
    assert model.decoder_logits(latents[0]).shape == (5, 4, X_DIM)
    assert model.log_joint(x, *latents).shape == (5, 4) and model.log_q(x, *latents).shape == (5, 4)
    if arch == "two_layer":
        assert model.encoder_logits_2(latents[0]).shape == (5, 4, Z2_DIM)
        assert model.decoder_logits_2(latents[1]).shape == (5, 4, Z_DIM)
    assert vae.elbo(model, x, 3).shape == (4,) and vae.elbo(model, x, 3).dtype == dtype
    assert vae.iwae_bound(model, x, 3).shape == (4,) and vae.iwae_bound(model, x, 3).dtype == dtype


def test_input_errors_name_the_argument():
    linear, two = small("linear"), small("two_layer")
    z = torch.zeros(4, Z_DIM, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \[\.\.\., 6\], got \(4, 5\)"):
        linear.encoder_logits(torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have the model's dtype torch.float64, got torch.float32"):
        linear.encoder_logits(X.float())
    with pytest.raises(ValueError, match="x must hold only 0 and 1"):
        linear.log_joint(X * 0.5, z)
    with pytest.raises(ValueError, match="z must hold only 0 and 1"):
        linear.log_joint(X, z + 2)
    with pytest.raises(ValueError, match="z2 must be given exactly when arch='two_layer'"):
        two.log_joint(X, z)
    with pytest.raises(ValueError, match="z2 must be given exactly when arch='two_layer'"):
        linear.log_q(X, z, torch.zeros(4, Z2_DIM, dtype=torch.float64))
    with pytest.raises(ValueError, match="encoder_logits_2 exists only for arch='two_layer'"):
        linear.encoder_logits_2(z)
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \[B, 6\]"):
        vae.elbo(linear, X[0], 1)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 0"):
        vae.elbo(linear, X, 0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        vae.iwae_bound(linear, X, 0)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        vae.iwae_bound(linear, X, 5, chunk=0)
    with pytest.raises(ValueError, match="model must be a BernoulliVAE"):
        vae.elbo(torch.nn.Linear(6, 3), X, 1)


# --- bounds against enumeration ---


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_exact_bounds_are_ordered(arch):
    log_q, log_joint = exact_terms(small(arch), X)
    log_px = log_joint.logsumexp(0)
    bounds = [exact.importance_weighted_bound(log_q, log_joint, k) for k in (1, 2, 3)]
    elbo = (log_q.exp() * (log_joint - log_q)).sum(0)
    assert torch.allclose(bounds[0], elbo, atol=1e-12)
    # Strict inequalities: q is not the posterior, so every gap is positive (by far more than rounding).
    for lower, upper in zip([elbo, *bounds[1:]], [*bounds[1:], log_px]):
        assert (upper - lower > 1e-6).all()


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_elbo_is_unbiased(arch):
    model = small(arch)
    log_q, log_joint = exact_terms(model, X)
    exact_elbo = exact.importance_weighted_bound(log_q, log_joint, 1)
    generator = torch.Generator().manual_seed(11)
    for n_samples in (1, 4):
        mean, se = mc(vae.elbo(model, X.repeat(R, 1), n_samples, generator=generator), len(X))
        assert ((mean - exact_elbo).abs() <= K_SE * se).all(), (n_samples, mean, exact_elbo, se)


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
@pytest.mark.parametrize(("k", "chunk"), [(2, 100), (3, 2), (3, 1)])
def test_iwae_bound_is_unbiased_for_every_chunk_size(arch, k, chunk):
    model = small(arch)
    log_q, log_joint = exact_terms(model, X)
    target = exact.importance_weighted_bound(log_q, log_joint, k)
    generator = torch.Generator().manual_seed(12)
    mean, se = mc(vae.iwae_bound(model, X.repeat(R, 1), k, chunk=chunk, generator=generator), len(X))
    assert ((mean - target).abs() <= K_SE * se).all(), (mean, target, se)


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_many_samples_approach_log_px_from_below(arch):
    model = small(arch)
    log_q, log_joint = exact_terms(model, X)
    log_px = log_joint.logsumexp(0)
    bound_3 = exact.importance_weighted_bound(log_q, log_joint, 3)
    mean, se = mc(vae.iwae_bound(model, X.repeat(100, 1), 500, chunk=128, generator=torch.Generator().manual_seed(13)), len(X))
    # L_3 <= L_500 <= log p(x), each up to the Monte Carlo error of the estimate of L_500.
    assert (mean >= bound_3 - K_SE * se).all() and (mean <= log_px + K_SE * se).all(), (bound_3, mean, log_px, se)
    # ... and L_500 is much closer to log p(x) than L_3 is.
    assert ((log_px - mean) < 0.25 * (log_px - bound_3)).all()


def test_reproducible_with_a_generator_and_no_gradient_from_the_iwae_bound():
    model = small("two_layer")
    a = vae.iwae_bound(model, X, 10, chunk=3, generator=torch.Generator().manual_seed(5))
    b = vae.iwae_bound(model, X, 10, chunk=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not a.requires_grad
    loss = -vae.elbo(model, X, 2, generator=torch.Generator().manual_seed(5)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameter_groups()["decoder"] + model.parameter_groups()["prior"])


def test_a_thousand_samples_at_batch_100_at_paper_scale():
    model = vae.BernoulliVAE("nonlinear")
    x = (torch.rand(100, 784, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    bound = vae.iwae_bound(model, x, 1000, generator=torch.Generator().manual_seed(1))
    assert bound.shape == (100,) and bound.dtype == torch.float32 and torch.isfinite(bound).all()
    # log p(x) <= 0 for binary data; the 1000-sample bound cannot sit below the single-sample ELBO on average.
    assert (bound < 0).all()
    assert bound.mean() > vae.elbo(model, x, 1, generator=torch.Generator().manual_seed(2)).mean()


def test_enumeration_covers_every_state_once():
    model = small("two_layer")
    log_q, log_joint = vae.enumerated_log_densities(model, X)
    assert log_q.shape == log_joint.shape == (2 ** (Z_DIM + Z2_DIM), len(X))
    assert torch.allclose(log_q.logsumexp(0), torch.zeros(len(X), dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="max_states"):
        vae.enumerated_log_densities(vae.BernoulliVAE("linear", X_DIM, 20, dtype=torch.float64), X)


@pytest.mark.parametrize("arch", vae.ARCHITECTURES)
def test_the_relaxed_path_evaluates_the_closed_form_at_real_valued_latents(arch):
    # The training costs evaluate log p at relaxed samples in (0, 1) and at other real points: there each factor is
    # v l - softplus(l), written out independently by `reference`.
    model = small(arch)
    generator = torch.Generator().manual_seed(3)
    z = torch.rand(5, len(X), Z_DIM, generator=generator, dtype=torch.float64)
    z2 = torch.rand(5, len(X), Z2_DIM, generator=generator, dtype=torch.float64) if arch == "two_layer" else None
    expected, _ = reference(model, X, z, z2)
    torch.testing.assert_close(model.log_joint(X, z, z2, relaxed=True), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        model.log_likelihood(X, z, relaxed=True) + model.log_prior(z, z2, relaxed=True), expected, rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="z must hold only 0 and 1"):
        model.log_joint(X, z, z2)
