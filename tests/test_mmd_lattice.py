"""The fast paths of pwgf.mmd's Poisson projection against the plain definitions, to float64 rounding.

References are direct float64 sums with ``torch.exp``: the kernel table ``K(j, y_m)``, the ``S x S`` Gram
matrix, the scipy quantile functions. The fast paths use other arithmetic (an FFT convolution, NumPy's
``exp``, ``scipy.special`` without ``scipy.stats``'s wrappers), so they agree to rounding only: each kernel
value is off by a few ulps, a sum of S terms by at most S ulps of the sum of the absolute terms, and the
FFT adds a few ulps of ``||q||_2 ||k||_2 log2 n`` (``||k||_2 <= (1 + sqrt(pi) h)^(1/2)``, 6 at h = 20). The
tolerances are stated against those L1 sizes: 1e-14 * sum|dp| (45 ulps of it) for sums linear in dp and
1e-14 * (sum|dp|)^2 for the curvature; measured errors are below 4e-16 of the same sizes.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from pwgf import mmd
from pwgf.discrete import poisson_truncation

torch.set_default_dtype(torch.float64)

RTOL_L1 = 1e-14
RATES = [1e-3, 0.5, 3.0, 30.0, 400.0]
BANDWIDTHS = [0.3, 1.0, 3.0, 20.0]


def kernel(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """K(x, y) = exp(-(x - y)^2 / (2 h^2)) with torch.exp, no in-place tricks."""
    return torch.exp(-((x - y) ** 2) / (2 * h**2))


def plain_terms(lam, z, z_tilde, h, w):
    """The Gauss-Newton terms by their definitions: the kernel table over stacked samples and the Gram matrix."""
    j, _, dp = mmd.poisson_lattice(lam)
    table = kernel(j, z_tilde[..., None], h[:, None]) - kernel(j, z[..., None], h[:, None])  # [M, d, S]
    grad = -2 * torch.einsum("m,mds,ds->d", w, table, dp)
    gram = kernel(j[:, None], j[None, :], h[:, None, None])
    return grad, 2 * torch.einsum("dj,djk,dk->d", dp, gram, dp), dp.abs().sum(-1)


def test_poisson_quantiles_are_scipys():
    rng = np.random.default_rng(0)
    rates = np.concatenate([10 ** rng.uniform(-6, 4, 400), [1e-6, 1e-3, 0.5, 1.0, 5.0, 27.6, 80.0, 400.0, 1e4]])
    for tail in [1e-12, 1e-6, 0.01, 0.3, 0.5, 0.9]:
        for rate in rates:
            got = mmd._poisson_quantiles(np.array([tail, 1 - tail]), np.array([rate, rate]))
            assert got[0] == stats.poisson.ppf(tail, rate) and got[1] == stats.poisson.isf(tail, rate) == poisson_truncation(rate, tail)


def test_poisson_lattice_bounds_are_the_stated_quantiles():
    lam = torch.tensor([0.02, 3.0, 95.0, 410.0])
    j, p, dp = mmd.poisson_lattice(lam, 1e-12)
    assert j[0] == stats.poisson.ppf(1e-12, 0.02) and j[-1] == poisson_truncation(lam, 1e-12) + 1
    assert torch.equal(j, torch.arange(j[0].item(), j[-1].item() + 1))
    ref = torch.tensor(stats.poisson.pmf(j.numpy()[None, :], lam.numpy()[:, None]))
    assert torch.allclose(p, ref, rtol=1e-12, atol=1e-300)  # log-space pmf: ~|j log(lam)| ulps, 3e-13 at rate 410
    assert torch.allclose(dp, p * (j / lam[:, None] - 1), rtol=0, atol=0)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("h", BANDWIDTHS)
def test_smoothed_is_the_kernel_sum_at_every_integer(rate, h):
    lam = rate * torch.tensor([0.6, 1.0, 1.4])
    hs = h * torch.tensor([0.8, 1.0, 1.3])
    j, _, dp = mmd.poisson_lattice(lam)
    lo, hi = int(j[0]), int(j[-1])
    first, last = lo - 7, hi + 12  # integers below and above the lattice
    got = mmd._smoothed(dp, lo, mmd._kernel_scale(hs), first, last)
    t = torch.arange(first, last + 1.0)
    ref = (dp[:, None, :] * kernel(j, t[:, None], hs[:, None, None])).sum(-1)
    assert got.shape == ref.shape
    assert ((got - ref).abs() <= RTOL_L1 * dp.abs().sum(-1, keepdim=True)).all()


def test_lattice_self_matches_the_gram_matrix_with_batches():
    # the batch layout of the Poisson projection's grid search: pmfs [C, G, S], bandwidth [C, 1]
    g = torch.Generator().manual_seed(3)
    p, q = torch.rand(2, 3, 5, 40, generator=g)
    h = torch.tensor([[0.4], [2.0], [15.0]])
    gram = kernel(torch.arange(40.0)[:, None], torch.arange(40.0)[None, :], h[..., None, None])  # [3, 1, 40, 40]
    ref = torch.einsum("cgj,cgjk,cgk->cg", p, gram.expand(3, 5, 40, 40), q)
    assert torch.allclose(mmd.lattice_self(p, q, h), ref, rtol=0, atol=RTOL_L1 * (p.sum(-1) * q.sum(-1)).max().item())


def samples(lam, n, g, *, spread):
    """Poisson draws with one sample beyond the lattice (``spread`` lattice lengths up) and moved copies, one of them negative."""
    z = torch.poisson(lam.expand(n, -1), generator=g)
    z[0] += spread * (10 + 14 * lam.sqrt()).round()
    z_tilde = z + 0.7 * (1 + lam.sqrt()) * torch.randn(z.shape, generator=g)
    z_tilde[1] = -5.0 - 3 * torch.rand(lam.shape, generator=g)
    return z, z_tilde


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("h", BANDWIDTHS)
@pytest.mark.parametrize("case", ["integers", "integers spread wide", "non-integers"])
def test_gauss_newton_terms_match_the_definitions(rate, h, case):
    # integers: one correlation serves the drawn samples; spread wide (beyond N S points) or non-integer: the kernel table
    g = torch.Generator().manual_seed(int(rate * 1000) + int(h * 10))
    lam = rate * (0.5 + torch.rand(3, generator=g))
    hs = h * (0.8 + 0.4 * torch.rand(3, generator=g))
    z, z_tilde = samples(lam, 9, g, spread=1 if case != "integers spread wide" else 200)
    if case == "non-integers":
        z = z + 0.25
    w = torch.rand(9, generator=g)
    w = w / w.sum()
    grad, curvature = mmd.gauss_newton_terms("poisson", lam, z, z_tilde, hs, weights=w)
    ref_grad, ref_curvature, size = plain_terms(lam, z, z_tilde, hs, w)
    assert ((grad - ref_grad).abs() <= RTOL_L1 * size).all()
    assert ((curvature - ref_curvature).abs() <= RTOL_L1 * size**2).all()
    # the public pieces agree with the shared computation
    assert torch.allclose(mmd.moved_gradient("poisson", lam, z, z_tilde, hs, weights=w), grad, rtol=0, atol=RTOL_L1 * size.max().item())
    assert torch.allclose(mmd.mmd_metric("poisson", lam, hs), curvature, rtol=0, atol=RTOL_L1 * size.max().item() ** 2)


def test_gauss_newton_terms_with_a_scalar_bandwidth_and_default_weights():
    g = torch.Generator().manual_seed(5)
    lam = torch.tensor([0.7, 6.0, 40.0])
    z, z_tilde = samples(lam, 16, g, spread=0)
    grad, curvature = mmd.gauss_newton_terms("poisson", lam, z, z_tilde, torch.tensor(1.7))
    ref_grad, ref_curvature, size = plain_terms(lam, z, z_tilde, torch.full((3,), 1.7), torch.full((16,), 1 / 16))
    assert ((grad - ref_grad).abs() <= RTOL_L1 * size).all() and ((curvature - ref_curvature).abs() <= RTOL_L1 * size**2).all()


def test_rbf_kernel_in_place_path_matches_the_autograd_path():
    # NumPy's and torch's exp are each within 1 ulp; the exponent is computed the same way: 4 ulps relative
    g = torch.Generator().manual_seed(2)
    x = (30 * torch.rand(7, 11, 3, generator=g)).transpose(0, 1)  # a strided view
    y = torch.arange(20.0)
    h = 1 + 5 * torch.rand(3, 1, generator=g)
    plain = mmd.rbf_kernel(x[..., None], y, h)
    leaf = x.clone().requires_grad_(True)
    ref = mmd.rbf_kernel(leaf[..., None], y, h).detach()
    assert torch.allclose(plain, ref, rtol=4 * 2.0**-52, atol=1e-300)
    lags = mmd.rbf_kernel(torch.arange(-5.0, 6.0), 0.0, h)  # the bandwidth adds a dimension
    assert lags.shape == (3, 11) and torch.allclose(lags, kernel(torch.arange(-5.0, 6.0), torch.tensor(0.0), h), rtol=4 * 2.0**-52, atol=0)


def test_median_bandwidth_is_the_lower_median_of_cyclic_distances():
    g = torch.Generator().manual_seed(4)
    for n in [2, 3, 15, 16, 17]:
        y = 5 * torch.randn(n, 30, generator=g)
        ref = (y - y.roll(1, 0)).abs().T.median(-1).values.clamp(min=1.0)
        assert torch.equal(mmd.median_bandwidth(y), ref)
        onehot = torch.randn(n, 30, 4, generator=g)
        ref = (onehot - onehot.roll(1, 0)).norm(dim=-1).T.median(-1).values.clamp(min=2**0.5)
        assert torch.allclose(mmd.median_bandwidth(onehot), ref, rtol=2.0**-52, atol=0)
