r"""Maximum mean discrepancy between a discrete model :math:`\mu_\theta` and a cloud of moved samples (Section 2.2, Appendix D).

The paper's second projection replaces :math:`W^2(\mu_\theta, \tilde\mu)` by the squared MMD

.. math::
    \Delta^2(\mu_\theta, \{\tilde z_n\}) = \sum_{j,k} p_j p_k K(j,k)
        + \frac{1}{N^2}\sum_{n,n'} K(\tilde z_n, \tilde z_{n'})
        - \frac{2}{N}\sum_{n}\sum_j p_j K(j, \tilde z_n),
    \qquad K(x,y) = \exp\!\Big(-\frac{\lVert x-y\rVert^2}{2h^2}\Big),

where :math:`j, k` run over the support of :math:`\mu_\theta` and :math:`p_j = \mu_\theta(j)`. Like the
paper's Wasserstein projection (Theorem 2.1), it is applied to each coordinate of a factorized model
separately: the objective is the *sum* of one-dimensional MMDs, :math:`\sum_i \Delta^2(\mu_{\theta_i},
\{\tilde z_{n,i}\})` (each function returns the vector of per-coordinate values). A single MMD with the
product kernel :math:`\prod_i K(z_i, z'_i)` would couple the coordinates, cost
:math:`O(N \cdot |\mathcal{Z}|^d)` and, for large ``d``, have a kernel that is nearly zero off the
diagonal; the per-coordinate sum costs :math:`O(N \cdot |\text{support}|)` per coordinate.

A categorical coordinate is a one-hot vector in :math:`\mathbb{R}^K`: the support is the set of
vertices :math:`e_a` and the kernel compares vectors (:math:`K(e_a, e_b) = \kappa = e^{-1/h^2}` for
:math:`a \ne b`).

The closed-form gradients below are derived in the book chapter *The MMD projection*; the Bernoulli
one corrects the sign of the first term printed in Appendix D. Poisson supports are truncated to
:math:`\{\ell, \dots, J\}` with :math:`P(Z<\ell) \le \text{tail}` and :math:`P(Z \ge J) \le \text{tail}`
for every rate; since :math:`0 \le K \le 1`, :math:`\sum_{j \notin S} p_j \le 2\,\text{tail}` and
:math:`\sum_{j \notin S} |\partial_\lambda p_j| \le 3\,\text{tail}`, the truncated value is within
:math:`4\,\text{tail}` and the truncated gradient within :math:`20\,\text{tail}` of the exact ones, per
coordinate, for rates from near 0 to the hundreds (the cut-offs come from the exact Poisson quantile function).

On the integer lattice the kernel depends on the lag only, so a sum of lattice weights against the
kernel, read at integer points, is a convolution: one FFT per coordinate (:func:`_smoothed`) gives the
model-model terms, the curvature and the cross terms of drawn (integer) samples. Only moved samples, off
the lattice, need a table of kernel values, :math:`N \cdot S` per coordinate (:func:`_lattice_cross`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special
from scipy.fft import next_fast_len

from pwgf._validate import check_choice, check_finite, check_positive
from pwgf.families import FAMILIES, POISSON_TAIL, validate_theta

__all__ = [
    "Bandwidth",
    "Lattice",
    "rbf_kernel",
    "median_bandwidth",
    "resolve_bandwidth",
    "poisson_lattice",
    "mmd_squared",
    "mmd_squared_grad_bernoulli",
    "mmd_squared_grad_poisson",
    "mmd_squared_grad_categorical",
    "mmd_squared_grad",
    "moved_gradient",
    "mmd_metric",
    "gauss_newton_terms",
    "lattice_self",
    "vertex_kernel",
]

_SQRT2: float = float(np.sqrt(2.0))

#: A kernel bandwidth: a positive number, a per-coordinate tensor ``[d]``, or ``"median"``.
Bandwidth = float | torch.Tensor | str
#: A truncated Poisson support with its pmf and pmf derivative, as returned by :func:`poisson_lattice`.
Lattice = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def rbf_kernel(x: torch.Tensor, y: torch.Tensor | float, bandwidth: float | torch.Tensor) -> torch.Tensor:
    r""":math:`K(x,y) = \exp(-(x-y)^2 / (2h^2))`, elementwise with broadcasting (scalar coordinates), by :func:`_gaussian_`."""
    t = x - y
    return _gaussian_(t, _kernel_scale(torch.as_tensor(bandwidth, dtype=t.dtype)))


def _kernel_scale(h: torch.Tensor) -> torch.Tensor:
    r"""The factor :math:`-1/(2h^2)` of the kernel's exponent."""
    return -0.5 / h**2


def _gaussian_(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`\exp(\text{scale}\cdot t^2)` for a fresh tensor of differences ``t``, which it may overwrite.

    Without gradients the table is built in the buffer of ``t`` (square, scale, :func:`_exp_`), or of the
    scaled squares when ``scale`` adds dimensions: the kernel tables of the estimators are the hot loop,
    ``[N, d, S]`` entries per call, and a second buffer of that size costs about as much as a pass over it.
    """
    if t.requires_grad or scale.requires_grad:
        return torch.exp(t.square() * scale)
    t.square_()
    fits = scale.dim() <= t.dim() and all(b in (1, a) for a, b in zip(reversed(t.shape), reversed(scale.shape), strict=False))
    return _exp_(t.mul_(scale) if fits else t * scale)


def _exp_(x: torch.Tensor) -> torch.Tensor:
    """``x.exp_()``; on the CPU through NumPy's vectorized ``exp``, which takes half the time of torch's for float64 and is as accurate (< 1 ulp)."""
    if x.device.type != "cpu":
        return x.exp_()
    buffer = x.numpy()
    np.exp(buffer, out=buffer)
    return x


def median_bandwidth(y: torch.Tensor) -> torch.Tensor:
    r"""Median heuristic per coordinate: :math:`h_i = \max(\operatorname{median}_n \lVert y_{n,i} - y_{n-1,i}\rVert, \delta)`.

    ``y`` is ``[N, d]`` (or one-hot-like ``[N, d, K]``) with i.i.d. rows, the moved samples. The median
    is taken over the :math:`N` cyclically adjacent pairs :math:`(n-1, n)` (indices mod :math:`N`): each is
    a pair of independent draws, so this estimates the same population median of
    :math:`\lVert Y - Y'\rVert` as the median over all :math:`N(N-1)/2` pairs, at cost :math:`O(Nd)` instead
    of :math:`O(N^2 d)` (the lower middle value for even :math:`N`, as ``torch.median``: the
    :math:`\lceil N/2\rceil`-th smallest). The floor
    :math:`\delta` is the smallest distance between two support points (1 on the integer lattice,
    :math:`\sqrt 2` between one-hot vertices): moved samples of a Bernoulli or categorical coordinate
    cluster within :math:`O(\varepsilon)` of the vertices, the plain median is then :math:`O(\varepsilon)`
    and a kernel that narrow could not see neighbouring states. With fewer than two samples there are
    no pairs and the floor is returned. Returns ``[d]``.
    """
    y = y.detach()
    floor = 1.0 if y.ndim == 2 else _SQRT2
    if y.shape[0] < 2:
        return torch.full((y.shape[1],), floor, dtype=y.dtype, device=y.device)
    diff = y - y.roll(1, dims=0)
    dist = diff.abs_() if y.ndim == 2 else diff.square_().sum(-1).sqrt_()
    return dist.kthvalue((y.shape[0] + 1) // 2, dim=0).values.clamp_(min=floor)


def resolve_bandwidth(bandwidth: Bandwidth, z_tilde: torch.Tensor) -> torch.Tensor:
    """The bandwidth as a tensor broadcastable to ``[d]``: a positive number, a positive ``[d]`` tensor, or ``"median"``."""
    if isinstance(bandwidth, str):
        check_choice(bandwidth, ("median",), "bandwidth")
        return median_bandwidth(z_tilde)
    h = torch.as_tensor(bandwidth, dtype=z_tilde.dtype, device=z_tilde.device).detach()
    check_positive(h, "bandwidth")
    if h.ndim > 1 or (h.ndim == 1 and h.shape[0] != z_tilde.shape[1]):
        raise ValueError(f"bandwidth must be a number or a tensor of shape [d] = [{z_tilde.shape[1]}], got {tuple(h.shape)}")
    return h


def poisson_lattice(lam: torch.Tensor, tail: float = POISSON_TAIL) -> Lattice:
    r"""Truncated support :math:`S = \{\ell,\dots,J\}`, pmf :math:`p_j` and :math:`\partial_\lambda p_j = p_j (j/\lambda - 1)`.

    :math:`\ell` = the ``tail`` quantile of the smallest rate (so :math:`P(Z<\ell)\le` ``tail``) and
    :math:`J` = :func:`pwgf.families.poisson_truncation` of the largest rate plus one (so
    :math:`P(Z \ge J) \le` ``tail``, which bounds the left-out :math:`\sum_{j>J} j p_j = \lambda P(Z \ge J)`),
    both from :func:`_poisson_quantiles`. The pmf is computed in log space, differentiable in ``lam``.
    Returns ``j [S]``, ``p [d, S]``, ``dp [d, S]``.
    """
    return _lattice(lam, tail)[1]


def _lattice(lam: torch.Tensor, tail: float) -> tuple[int, Lattice]:
    r""":func:`poisson_lattice` and its first point :math:`\ell` as an int."""
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must lie in (0, 1), got {tail!r}")
    rates = lam.detach().cpu().numpy()
    lo, top = (int(k) for k in _poisson_quantiles(np.array([tail, 1.0 - tail]), np.array([rates.min(), rates.max()])))
    j = torch.arange(lo, top + 2, dtype=lam.dtype, device=lam.device)
    rate = lam[:, None]
    log_p = j * torch.log(rate) - rate - torch.lgamma(j + 1)
    p = torch.exp(log_p) if log_p.requires_grad else _exp_(log_p)
    return lo, (j, p, p * (j / rate - 1))


def _poisson_quantiles(q: np.ndarray, rate: np.ndarray) -> np.ndarray:
    r"""The smallest integers :math:`k` with :math:`P(Z \le k) \ge q`, :math:`Z \sim \mathrm{Poisson}(\text{rate})`, elementwise.

    ``scipy.stats.poisson.ppf``'s own algorithm (the ceiling of the continuous inverse
    ``scipy.special.pdtrik``, one step lower where the CDF ``pdtr`` allows) without its generic argument
    handling, which costs about eight times more for two points. scipy's ``isf(tail)`` is ``ppf(1 - tail)``, so
    ``q = [tail, 1 - tail]`` gives the ``stats.poisson.ppf`` and :func:`pwgf.families.poisson_truncation`
    values exactly (pinned by a test).
    """
    k = np.ceil(special.pdtrik(q, rate))
    below = np.maximum(k - 1, 0)
    return np.where(special.pdtr(below, rate) >= q, below, k)


def _per_coordinate(h: torch.Tensor) -> torch.Tensor:
    """Reshape a scalar or ``[d]`` per-coordinate tensor (bandwidth, kernel scale) so it broadcasts against ``[..., d, S]``."""
    return h.reshape(-1, 1)


def _smoothed(q: torch.Tensor, lo: int, scale: torch.Tensor, first: int, last: int) -> torch.Tensor:
    r"""The kernel-smoothed lattice weights :math:`g(t) = \sum_k q_k K(k, t)` at every integer :math:`t \in [\text{first}, \text{last}]`.

    ``q`` is ``[..., S]`` on the support :math:`\{lo, \dots, lo + S - 1\}`, the kernel's ``scale``
    (:func:`_kernel_scale`) broadcasts to ``[...]``; returns ``[..., T]``, :math:`T = \text{last} -
    \text{first} + 1`. On integers the kernel is the even lag kernel :math:`k(t - k) = K(t - k, 0)`, so
    :math:`g(t) = \sum_s q_{lo+s}\, k(t - lo - s)` is the convolution of ``q`` with :math:`k` tabulated on
    the lags :math:`[\text{first} - lo - S + 1, \text{last} - lo]`, read at positions :math:`S - 1, \dots,
    S + T - 2`. It is computed by FFT of a length :math:`n \ge S + T - 1`, so no lag wraps around:
    :math:`O(n \log n)` per row instead of :math:`S\,T` kernel values. The FFT's rounding error is a few
    ulps of :math:`\lVert q\rVert_2 \lVert k\rVert_2 \log n`.
    """
    size, count = q.shape[-1], last - first + 1
    n = next_fast_len(size + count - 1, real=True)
    lag_kernel = _gaussian_(torch.arange(first - lo - size + 1, last - lo + 1, dtype=q.dtype, device=q.device), scale.unsqueeze(-1))
    conv = torch.fft.irfft(torch.fft.rfft(q, n) * torch.fft.rfft(lag_kernel, n), n)
    return conv[..., size - 1 : size - 1 + count]


def lattice_self(p: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_{j,k} p_j q_k K(j,k)` per row; ``p, q`` are ``[..., S]`` on a support of consecutive integers, ``h`` broadcasts to ``[...]``.

    :math:`= \sum_j p_j\, g(j)` with :math:`g` the smoothed ``q`` of :func:`_smoothed` on the support:
    :math:`O(S\log S)` time and :math:`O(S)` memory per row instead of an :math:`S\times S` Gram matrix.
    """
    size = p.shape[-1]
    return (p * _smoothed(q, 0, _kernel_scale(torch.as_tensor(h, dtype=p.dtype)), 0, size - 1)).sum(-1)


def _lattice_cross(dp: torch.Tensor, j: torch.Tensor, y: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`-2\sum_m w_m \sum_j dp_j K(j, y_m)` per coordinate: ``dp [d, S]``, ``y [M, d]``, ``w [M]``, the kernel's ``scale`` scalar or ``[d]``.

    The kernel table ``[M, d, S]`` (:func:`_gaussian_`) is summed over the samples first, one
    matrix-vector product. Cost :math:`O(MSd)`.
    """
    kern = _gaussian_(y[..., None] - j, _per_coordinate(scale))
    return -2 * torch.linalg.vecdot((w @ kern.flatten(1)).view_as(dp), dp)


def _poisson_terms(
    lo: int, lattice: Lattice, z: torch.Tensor, z_tilde: torch.Tensor, w: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Moved gradient and curvature of Poisson coordinates (:func:`moved_gradient`, :func:`mmd_metric`) on a lattice starting at ``lo``, sharing one smoothing of :math:`\partial p`.

    With :math:`g(t) = \sum_j \partial p_j K(j, t)` (:func:`_smoothed`) on every integer the lattice
    and the drawn samples span, the curvature is :math:`2\sum_j \partial p_j\, g(j)` and the cross term
    of the drawn (integer) samples is :math:`-2\sum_n w_n g(z_n)`; only the moved samples need the kernel
    table (:func:`_lattice_cross`). Samples ``z`` that are not integer-valued, or integers spread over more
    points than their table has entries, go through the table too.
    """
    j, _, dp = lattice
    hi = lo + j.shape[0] - 1
    scale = _kernel_scale(h).reshape(-1)
    drawn = z.detach().cpu().numpy()
    index = drawn.T.astype(np.int64)
    first, last = min(lo, int(index.min())), max(hi, int(index.max()))
    # the correlation spans every integer between the samples: worth it unless they spread wider than their table
    integral = bool((index == drawn.T).all()) and last - first < z.shape[0] * j.shape[0]
    if not integral:
        first, last = lo, hi
    g = _smoothed(dp, lo, scale, first, last)  # [d, last - first + 1]
    curvature = 2 * torch.linalg.vecdot(dp, g[:, lo - first : hi - first + 1])
    if integral:
        unmoved = -2 * (g.gather(-1, torch.from_numpy(index - first)) @ w)
    else:
        unmoved = _lattice_cross(dp, j, z, w, scale)
    return _lattice_cross(dp, j, z_tilde, w, scale) - unmoved, curvature


def vertex_kernel(y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`K(e_a, y_m)` for one-hot vertices :math:`e_a`, using :math:`\lVert e_a - y\rVert^2 = \lVert y\rVert^2 - 2y_a + 1`: ``[M, d, K]``."""
    sq = y.square().sum(-1, keepdim=True) - 2 * y + 1
    return sq.clamp_(min=0).mul_(-0.5 / _per_coordinate(h) ** 2).exp_()


def _samples_self(y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac{1}{N^2}\sum_{n,n'} K(y_n, y_{n'})` per coordinate (the term that does not depend on :math:`\theta`)."""
    diff = y[:, None] - y[None, :]
    sq = diff**2 if y.ndim == 2 else diff.pow(2).sum(-1)
    return torch.exp(-sq / (2 * h.reshape(-1) ** 2)).mean((0, 1))


def _check_samples(family: str, theta: torch.Tensor, z_tilde: torch.Tensor) -> None:
    if not isinstance(z_tilde, torch.Tensor):
        raise ValueError(f"z_tilde must be a torch.Tensor, got {type(z_tilde).__name__}")
    want = tuple(theta.shape)
    if z_tilde.ndim != len(want) + 1 or tuple(z_tilde.shape[1:]) != want or z_tilde.shape[0] < 1:
        shape = "[N, d, K]" if family == "categorical" else "[N, d]"
        raise ValueError(f"z_tilde for {family!r} with theta of shape {want} must have shape {shape} with N >= 1, got {tuple(z_tilde.shape)}")
    check_finite(z_tilde, "z_tilde")


def mmd_squared(family: str, theta: torch.Tensor, z_tilde: torch.Tensor, bandwidth: Bandwidth = 1.0, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""Per-coordinate :math:`\Delta^2(\mu_{\theta_i}, \{\tilde z_{n,i}\})`, shape ``[d]``, differentiable in ``theta``.

    Categorical probabilities enter through the scale-invariant extension :math:`\theta/\sum_k\theta_k`
    (the convention of :mod:`pwgf.families`). The value is the paper's empirical MMD of Section 2.2 with
    the exact model expectation (Poisson truncated as stated in the module docstring).
    """
    validate_theta(family, theta)
    _check_samples(family, theta, z_tilde)
    y = z_tilde.to(theta.dtype)
    h = resolve_bandwidth(bandwidth, y)
    if family == "categorical":
        probs = theta / theta.sum(-1, keepdim=True)
        kappa = torch.exp(-1 / h.reshape(-1) ** 2)
        model = kappa + (1 - kappa) * probs.pow(2).sum(-1)
        cross = (vertex_kernel(y, h) * probs).sum(-1).mean(0)
    else:
        if family == "bernoulli":
            j = torch.tensor([0.0, 1.0], dtype=theta.dtype, device=theta.device)
            p = torch.stack([1 - theta, theta], dim=-1)
        else:
            j, p, _ = poisson_lattice(theta, tail)
        model = lattice_self(p, p, h)
        cross = (rbf_kernel(y[..., None], j, _per_coordinate(h)) * p).sum(-1).mean(0)
    return model + _samples_self(y, h) - 2 * cross


def mmd_squared_grad_bernoulli(p: torch.Tensor, z_tilde: torch.Tensor, bandwidth: Bandwidth = 1.0) -> torch.Tensor:
    r"""Closed-form :math:`\partial \Delta^2 / \partial p_i` for :math:`\mu = \Bern(p_i)`, per coordinate, ``[d]``.

    .. math::
        \frac{\partial \Delta^2}{\partial p} = 2\Big[(2p-1)\,(1-K(1,0)) - \frac1N\sum_n \big(K(1,\tilde z_n) - K(0,\tilde z_n)\big)\Big].

    Appendix D prints :math:`(1-2p)` for the first factor: a sign error (at :math:`\tilde z_n \sim \Bern(p)`
    the expected gradient must vanish, which holds only with :math:`2p-1`).
    """
    validate_theta("bernoulli", p)
    _check_samples("bernoulli", p, z_tilde)
    y = z_tilde.to(p.dtype)
    h = resolve_bandwidth(bandwidth, y)
    one_minus_k = -torch.expm1(-1 / (2 * h**2))
    w = _sample_weights(y.shape[0], None, p)
    return 2 * (2 * p.detach() - 1) * one_minus_k + _bernoulli_cross(y, w, h)


def _bernoulli_cross(y: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`-2\sum_m w_m (K(1,y_m) - K(0,y_m))` per coordinate."""
    return -2 * torch.einsum("m,md->d", w, rbf_kernel(y, 1.0, h) - rbf_kernel(y, 0.0, h))


def mmd_squared_grad_poisson(lam: torch.Tensor, z_tilde: torch.Tensor, bandwidth: Bandwidth = 1.0, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""Closed-form :math:`\partial \Delta^2 / \partial \lambda_i` for :math:`\mu = \Pois(\lambda_i)`, per coordinate, ``[d]``.

    .. math::
        \frac{\partial \Delta^2}{\partial \lambda} = 2\sum_{j,k} \partial_\lambda p_j\, p_k K(j,k)
            - \frac{2}{N}\sum_n \sum_j \partial_\lambda p_j\, K(j, \tilde z_n),
        \qquad \partial_\lambda p_j = p_j\Big(\frac{j}{\lambda} - 1\Big),

    with the support truncated as in :func:`poisson_lattice` (error at most ``20 * tail`` per coordinate).
    Cost :math:`O((N + S) S)` per coordinate for a support of size :math:`S`.
    """
    validate_theta("poisson", lam)
    _check_samples("poisson", lam, z_tilde)
    y = z_tilde.to(lam.dtype)
    h = resolve_bandwidth(bandwidth, y)
    j, p, dp = poisson_lattice(lam.detach(), tail)
    w = _sample_weights(y.shape[0], None, lam)
    return 2 * lattice_self(dp, p, h) + _lattice_cross(dp, j, y, w, _kernel_scale(h))


def mmd_squared_grad_categorical(probs: torch.Tensor, z_tilde: torch.Tensor, bandwidth: Bandwidth = 1.0) -> torch.Tensor:
    r"""Closed-form gradient of :math:`\Delta^2` in the categorical parameter, ``[d, K]``.

    With :math:`G_{ab} = K(e_a, e_b) = \kappa + (1-\kappa)\delta_{ab}`, :math:`\kappa = e^{-1/h^2}`,

    .. math::
        g_a = \frac{\partial \Delta^2}{\partial p_a} = 2\big(\kappa + (1-\kappa) p_a\big) - \frac2N \sum_n K(e_a, \tilde z_n),
        \qquad
        \frac{\partial \Delta^2}{\partial \theta_b} = g_b - \sum_a p_a g_a,

    the second form being the chain rule through :math:`p = \theta/\sum_k \theta_k` at a valid ``theta``.
    """
    validate_theta("categorical", probs)
    _check_samples("categorical", probs, z_tilde)
    y = z_tilde.to(probs.dtype)
    h = resolve_bandwidth(bandwidth, y)
    p = probs.detach()
    kappa = torch.exp(-1 / _per_coordinate(h) ** 2)
    w = _sample_weights(y.shape[0], None, p)
    return _categorical_chain(p, 2 * (kappa + (1 - kappa) * p) + _categorical_cross(y, w, h))


def _categorical_cross(y: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`-2\sum_m w_m K(e_a, y_m)`, ``[d, K]``."""
    return -2 * torch.einsum("m,mdk->dk", w, vertex_kernel(y, h))


def _categorical_chain(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Gradient in :math:`p` to gradient in :math:`\theta` through :math:`p = \theta/\sum\theta`: :math:`g - \langle p, g\rangle`."""
    return g - (p * g).sum(-1, keepdim=True)


def mmd_squared_grad(family: str, theta: torch.Tensor, z_tilde: torch.Tensor, bandwidth: Bandwidth = 1.0, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    """Dispatch to the closed-form gradient of ``family``; same shape as ``theta``."""
    check_choice(family, FAMILIES, "family")
    if family == "bernoulli":
        return mmd_squared_grad_bernoulli(theta, z_tilde, bandwidth)
    if family == "poisson":
        return mmd_squared_grad_poisson(theta, z_tilde, bandwidth, tail=tail)
    return mmd_squared_grad_categorical(theta, z_tilde, bandwidth)


def _sample_weights(n: int, weights: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The sample weights :math:`w_n` in the dtype and on the device of ``like``: ``weights``, or :math:`1/N` each."""
    return torch.full((n,), 1 / n, dtype=like.dtype, device=like.device) if weights is None else weights.to(like)


def moved_gradient(
    family: str,
    mean: torch.Tensor,
    z: torch.Tensor,
    z_tilde: torch.Tensor,
    h: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    tail: float = POISSON_TAIL,
    lattice: Lattice | None = None,
) -> torch.Tensor:
    r"""Control-variate projection gradient :math:`\nabla_m\Delta^2(\mu_m,\{\tilde z_n\}) - \nabla_m\Delta^2(\mu_m,\{z_n\})` in the mean parameter.

    The model-model term cancels, leaving the cross terms only,
    :math:`-2\sum_n w_n\sum_j \partial_m p_j\,[K(j,\tilde z_n) - K(j, z_n)]`, computed in one pass
    over the stacked samples (Poisson: :func:`_poisson_terms`). ``mean`` is :math:`m` per coordinate: ``p [d]`` (Bernoulli),
    ``lambda [d]`` (Poisson), or the probability vectors ``[d, K]`` (categorical; the gradient is then
    in :math:`p` itself, before any chain rule through a normalization). ``z`` are the drawn samples,
    ``z_tilde`` the moved ones, ``weights`` the sample weights :math:`w_n` (default :math:`1/N`; a pmf
    over enumerated states gives the expectation over :math:`z \sim \mu_\theta`, the result being
    linear in them), ``h`` a resolved bandwidth (:func:`resolve_bandwidth`); ``mean`` is assumed valid.
    A Poisson ``lattice`` from :func:`poisson_lattice` may be passed to avoid recomputing it.
    """
    w = _sample_weights(z.shape[0], weights, mean)
    if family == "poisson":
        lo, lattice = (int(lattice[0][0]), lattice) if lattice else _lattice(mean.detach(), tail)
        return _poisson_terms(lo, lattice, z.to(mean.dtype), z_tilde.to(mean.dtype), w, h)[0]
    y = torch.cat([z_tilde, z]).to(mean.dtype)
    w = torch.cat([w, -w])
    if family == "bernoulli":
        return _bernoulli_cross(y, w, h)
    return _categorical_cross(y, w, h)


def mmd_metric(family: str, theta: torch.Tensor, h: torch.Tensor, *, tail: float = POISSON_TAIL, lattice: Lattice | None = None) -> torch.Tensor:
    r"""Curvature :math:`C_i = \partial^2_{\theta_i} \Delta^2(\mu_{\theta}, \mu_{\theta'})|_{\theta'=\theta}` per coordinate, ``[d]``.

    :math:`\Delta^2(\mu_\theta,\mu_{\theta'}) = \sum_{j,k}(p_j-p'_j)(p_k-p'_k)K(j,k)`, so
    :math:`C = 2\sum_{j,k}\partial p_j\,\partial p_k\,K(j,k)`: :math:`4(1-K(1,0))` for Bernoulli,
    the truncated double sum for Poisson, and :math:`2(1-\kappa)` for a categorical coordinate (the
    metric restricted to directions :math:`v` with :math:`\sum_a v_a = 0`, where
    :math:`v^\top G v = (1-\kappa)\lVert v\rVert^2`). It is the Gauss-Newton curvature of the projection
    objective at the current parameter; ``h`` is a resolved bandwidth broadcastable to ``[d]``; a
    Poisson ``lattice`` may be passed as in :func:`moved_gradient`.
    """
    d = theta.shape[0]
    if family == "bernoulli":
        return (-4 * torch.expm1(-1 / (2 * h**2))).expand(d)
    if family == "poisson":
        _, _, dp = lattice or poisson_lattice(theta.detach(), tail)
        return 2 * lattice_self(dp, dp, h)
    return (-2 * torch.expm1(-1 / h**2)).expand(d)


def gauss_newton_terms(
    family: str, mean: torch.Tensor, z: torch.Tensor, z_tilde: torch.Tensor, h: torch.Tensor, *, weights: torch.Tensor | None = None, tail: float = POISSON_TAIL
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":func:`moved_gradient` and :func:`mmd_metric` together, the numerator and curvature of the Gauss-Newton step of :func:`pwgf.projection.pwgf_mmd`.

    Arguments as in :func:`moved_gradient`. Poisson coordinates build one lattice and share one
    correlation of :math:`\partial_\lambda p` with the kernel between the two (:func:`_poisson_terms`).
    """
    if family == "poisson":
        w = _sample_weights(z.shape[0], weights, mean)
        return _poisson_terms(*_lattice(mean.detach(), tail), z.to(mean.dtype), z_tilde.to(mean.dtype), w, h)
    return moved_gradient(family, mean, z, z_tilde, h, weights=weights), mmd_metric(family, mean, h)
