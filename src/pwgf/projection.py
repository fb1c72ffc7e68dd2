r"""The pWGF gradient estimators: ST, pWGF-ST, the paper's MMD step (pWGF-MMD-argmin) and the book's (pWGF-MMD).

One step of the paper's scheme (Section 2, Appendix B) from :math:`\mu_\theta`:

(A) draw :math:`z_n \sim \mu_\theta`; (B) move them along the Wasserstein gradient flow of
:math:`F[\mu] = \E_\mu f`, :math:`\tilde z_n = z_n - \varepsilon \nabla f(z_n)`; (C) project,
:math:`\theta' = \argmin_\theta D(\theta; \{\tilde z_n\})`, with :math:`D` either the squared
difference of means (Section 2.1) or the squared MMD (Section 2.2), per coordinate (Theorem 2.1).

**The paper's step** is (C) itself. As a gradient estimate usable with any optimizer it is the
displacement per unit step, :math:`\hat g = (m(\theta) - m(\theta'))/\varepsilon` in the mean parameter
:math:`m` (probabilities or rates), so that one SGD step of size :math:`\varepsilon` on the mean parameter is
exactly the paper's update (:func:`pwgf_mmd_argmin` for the MMD). Nothing is subtracted: the estimate
keeps the zero-mean term :math:`(m(\theta) - \argmin D(\cdot;\{z_n\}))/\varepsilon` of the unmoved samples,
of order :math:`1/(\varepsilon\sqrt N)`.

**The book's step** (:func:`pwgf_mmd`) linearizes the projection around the current :math:`\theta`: one
Gauss-Newton step, with :math:`C = \partial^2_\theta D(\mu_\theta, \mu_{\theta'})|_{\theta'=\theta}` the
curvature of the projection objective (:func:`pwgf.mmd.mmd_metric`), and it subtracts the gradient
towards the *unmoved* samples,

.. math::
    \hat g = \frac{\nabla_\theta D(\theta; \{\tilde z_n\}) - \nabla_\theta D(\theta; \{z_n\})}{\varepsilon\, C}.

The subtraction is the book's control variate. It mirrors what Section 2.1 does for the mean objective
(the paper replaces the sample mean :math:`\bar z` by :math:`p`, which is exactly this subtraction, and
with :math:`C = 2` it gives the multi-sample ST estimate for every :math:`\varepsilon`), but for the MMD
the paper makes no such subtraction: Appendix D keeps the model term. In expectation over
:math:`z_n \sim \mu_\theta` the second-derivative terms of the subtracted gradient cancel those of the
model term, leaving the curvature :math:`C`.

Every builder has the signature of the estimator contract of :mod:`pwgf.estimators`,
``fn(q, f, n_samples, *, generator, **options)`` with ``q`` a :class:`pwgf.discrete.Discrete`, and
returns a surrogate of shape ``batch_shape``: its gradient in the distribution's parameter is the
estimate (an estimate :math:`\hat g` in the mean parameter reaches a logits parameter by the chain rule
:math:`\partial m/\partial\ell`, so ST's gradient with respect to a Bernoulli logit is
:math:`\nabla f(z)\,p(1-p)`), its gradient with respect to parameters of ``f`` is the sample mean of
:math:`\nabla f` at the drawn samples, and its value is the sample mean of :math:`f`. The MMD projections
act on each coordinate of each example separately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from scipy.optimize import brentq

from pwgf import mmd
from pwgf._validate import check_finite, check_positive
from pwgf.discrete import POISSON_TAIL, Discrete, as_discrete, poisson_truncation
from pwgf.families import costs, distribution, resolve, resolve_leaf

__all__ = [
    "mean_parameter",
    "wgf_step",
    "mean_matching",
    "st",
    "st_point",
    "st_expectation",
    "pwgf_st",
    "pwgf_mmd",
    "pwgf_mmd_expectation",
    "pwgf_mmd_argmin",
    "mmd_argmin",
    "DEFAULT_EPS_MMD",
    "bernoulli_reversal_move",
    "reversed_moves",
    "costs_and_grad",
    "sparsemax",
]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: Default WGF step of :func:`pwgf_mmd` and :func:`pwgf_mmd_argmin`, in units of the lattice spacing per unit of :math:`\nabla f`.
DEFAULT_EPS_MMD: float = 0.1


def _check_tensor(x: torch.Tensor, name: str, min_ndim: int = 1) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty tensor with at least {min_ndim} axes, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite (got NaN or inf)")


def sparsemax(w: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""Euclidean projection of :math:`w/\tau` onto the simplex (last axis) :cite:`martins2016softmax`.

    :math:`\operatorname{sparsemax}(w) = \argmax_{z\in\Delta} w^\top z - \tfrac12\|z\|^2
    = \argmin_{z\in\Delta}\|z - w\|^2 = (w - \nu)_+`, where, with :math:`w_{(1)} \ge \dots \ge w_{(K)}`
    sorted, the support size is :math:`k^\star = \max\{k : 1 + k w_{(k)} > \sum_{j\le k} w_{(j)}\}` and
    :math:`\nu = (\sum_{j\le k^\star} w_{(j)} - 1)/k^\star`. Differentiable almost everywhere (autograd
    through the sort gives its Jacobian :math:`\operatorname{diag}(s) - s s^\top/|s|`, :math:`s` the support).
    """
    _check_tensor(w, "w")
    check_positive(temperature, "temperature")
    x = w / temperature
    srt = x.sort(dim=-1, descending=True).values
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    cums = srt.cumsum(-1)
    support = 1 + k * srt > cums
    k_star = support.sum(-1, keepdim=True)  # the condition holds exactly for k = 1..k_star
    nu = (cums.gather(-1, k_star - 1) - 1) / k_star.to(x.dtype)
    return (x - nu).clamp_min(0)


def costs_and_grad(f: Cost, z: torch.Tensor, batch_shape: tuple[int, ...] | torch.Size = ()) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The costs :math:`f(z_n)` and the vector field :math:`\nabla f(z_n)` at every particle (autograd).

    ``z`` is ``[n, ...]`` (``[n, d]``, or one-hot ``[n, d, K]``; with examples,
    ``[n, *batch_shape, *event_shape]``) and ``f`` maps it to costs ``[n, *batch_shape]``; particles
    (and examples) do not interact, so the gradient of :math:`\sum_n f(z_n)` with respect to ``z`` is
    :math:`\nabla f(z_n)` row by row. The costs keep their graph to the parameters of ``f`` (a
    training loop can still differentiate them); the field is detached. Raises ValueError if ``f`` is
    not differentiable in ``z`` or its gradient is not finite.
    """
    if not isinstance(z, torch.Tensor) or z.ndim < 1 or z.shape[0] == 0:
        raise ValueError(f"z must be a non-empty torch.Tensor of shape [n, ...], got {getattr(z, 'shape', type(z))}")
    check_finite(z, "z")
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        values = costs(f, z, batch_shape)
        grad = torch.autograd.grad(values.sum(), z, retain_graph=True, allow_unused=True)[0] if values.requires_grad else None
    if grad is None:
        raise ValueError("f must be differentiable in z (grad f(z) is needed)")
    check_finite(grad, "grad f(z)")
    return values, grad


def mean_parameter(family: str, theta: torch.Tensor) -> torch.Tensor:
    r""":math:`\E_{p_\theta}[z]` per coordinate: :math:`p` (Bernoulli), :math:`\lambda` (Poisson), :math:`\theta/\sum_k\theta_k` (categorical)."""
    return as_discrete(distribution(family, theta)).mean


def wgf_step(f: Cost, z: torch.Tensor, eps: float, batch_shape: tuple[int, ...] | torch.Size = ()) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Step (B): :math:`\tilde z_n = z_n - \varepsilon\nabla f(z_n)` (Appendix B), and the costs :math:`f(z_n)`.

    The moved samples are detached (they are data for the projection); the costs keep their graph to
    the parameters of ``f`` (:func:`pwgf.projection.costs_and_grad`). Raises ValueError if ``f`` is not
    differentiable in ``z``.
    """
    check_positive(eps, "eps")
    fz, grad_z = costs_and_grad(f, z, batch_shape)
    return (z - eps * grad_z).detach(), fz


def _mean_matching(q: Discrete, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_i \lVert m_i(\theta) - \bar y_i \rVert^2` per example, ``[*batch_shape]``."""
    return q.sum_event((q.mean - y.mean(0)).pow(2))


def mean_matching(dist: Any, *args: Any) -> torch.Tensor:
    r"""Section 2.1's projection objective :math:`\sum_i \lVert \E_{\theta_i} z - \bar y_i \rVert^2` for samples ``y``.

    ``mean_matching(dist, y)`` per example, or ``mean_matching(family, theta, y)`` with ``y`` of shape
    ``[N, d]`` (``[N, d, K]``); differentiable in the parameter.
    """
    q, (y,) = resolve(dist, args, ("y",))
    return _mean_matching(q, y)


def st(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Multi-sample straight-through surrogate :math:`\frac1N\sum_n f(z_n + m(\theta) - \operatorname{sg} m(\theta))`.

    :math:`m(\theta) = \E_\theta z` (probabilities or rates), so the gradient is
    :math:`\frac1N\sum_n \nabla f(z_n)^\top \partial m/\partial\theta`: ST's identity Jacobian
    :math:`\partial z/\partial p = I` of :cite:`bengio2013estimating`, carried to logits by the chain rule
    (:math:`p(1-p)` for a Bernoulli logit, :math:`J(p) = \operatorname{diag}(p) - pp^\top` for categorical logits).
    """
    return q.costs(f, st_point(q, n_samples, generator)).mean(0)


def st_point(q: Discrete, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The straight-through point of :func:`st`: samples :math:`z + m(\theta) - \operatorname{sg} m(\theta)`, the value of :math:`z`, the Jacobian of the mean."""
    z = q.sample(n_samples, generator)
    m = q.mean
    return z + (m - m.detach())


def st_expectation(dist: Any, *args: Any, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""The mean of the ST estimate, :math:`\E_{z\sim p_\theta}[\nabla f(z)]^\top \partial m/\partial\theta`, by enumeration (float64).

    ``st_expectation(dist, f)`` (shape of the distribution's parameter) or ``st_expectation(family,
    theta, f)`` (shape of ``theta``). It does not depend on the number of samples; ST's bias is this
    minus :func:`pwgf.exact.gradient`. Poisson supports are truncated as in :func:`pwgf.families.support`.
    """
    q, leaf, (f,) = resolve_leaf(dist, args, ("f",))
    states = q.support(tail)
    shape = (states.shape[0], *q.batch_shape, *q.event_shape)
    states = states.reshape(states.shape[0], *[1] * len(q.batch_shape), *q.event_shape).expand(shape)
    weights = q.log_prob(states).exp().detach()
    _, grad_z = costs_and_grad(f, states, q.batch_shape)
    mean_grad = (q.per_example(weights) * grad_z).sum(0)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(q.mean, leaf, mean_grad)
    return grad


def pwgf_st(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None, eps: float = 1.0) -> torch.Tensor:
    r"""pWGF with the mean-matching projection (Section 2.1): the estimate is :math:`\nabla_\theta[D(\tilde z) - D(z)]/(2\varepsilon)`.

    :math:`D(y) = \lVert m(\theta) - \bar y\rVert^2` (:func:`mean_matching`) is differentiated by autograd;
    its control-variate gradient is :math:`2(\bar z - \bar{\tilde z})\,\partial m/\partial\theta =
    2\varepsilon\,\overline{\nabla f(z)}\,\partial m/\partial\theta`, so the estimate equals :func:`st` for any
    ``eps`` up to the rounding of :math:`\tilde z` (relative error about
    :math:`10^{-16}\max|z| / (\varepsilon|\nabla f|)`, so it shrinks as ``eps`` grows; the default ``eps = 1``
    keeps it at the level of the rounding of the samples themselves).
    """
    z = q.sample(n_samples, generator)
    z_tilde, fz = wgf_step(f, z, eps, q.batch_shape)
    objective = (_mean_matching(q, z_tilde) - _mean_matching(q, z)) / (2 * eps)
    return fz.mean(0) + (objective - objective.detach())


# ---- the MMD projection, per coordinate --------------------------------------------------------


def _coordinates(q: Discrete, x: torch.Tensor) -> torch.Tensor:
    """Samples ``[n, *coordinate_shape(, K)]`` as ``[n, C]`` (``[n, C, K]``): one column per coordinate of every example."""
    tail = x.shape[-1:] if q.kind == "categorical" else ()
    return x.reshape(x.shape[0], -1, *tail)


def _flat_mean(q: Discrete) -> torch.Tensor:
    """The detached mean parameter, one row per coordinate: ``[C]`` (``[C, K]``)."""
    m = q.mean.detach()
    return m.reshape(-1, m.shape[-1]) if q.kind == "categorical" else m.reshape(-1)


def _bandwidth(q: Discrete, bandwidth: mmd.Bandwidth, y: torch.Tensor) -> torch.Tensor:
    """A number, ``"median"``, or a tensor broadcastable to ``coordinate_shape``, as a per-coordinate ``[C]`` (or scalar) tensor."""
    if isinstance(bandwidth, torch.Tensor) and bandwidth.ndim > 0:
        try:
            bandwidth = bandwidth.expand(q.coordinate_shape).reshape(-1)
        except RuntimeError as err:
            raise ValueError(f"bandwidth must be a number, 'median', or a tensor broadcastable to {tuple(q.coordinate_shape)}, got {tuple(bandwidth.shape)}") from err
    return mmd.resolve_bandwidth(bandwidth, y)


def _surrogate(q: Discrete, fz: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Mean cost plus the zero-valued :math:`\\sum_{\\text{event}} \\hat g \\cdot (m - \\operatorname{sg} m)`: its gradient is ``estimate`` (given in the mean parameter, flat) through :math:`m(\\theta)`."""
    m = q.mean
    return fz.mean(0) + q.sum_event(estimate.reshape(m.shape) * (m - m.detach()))


def pwgf_mmd(
    q: Discrete,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eps: float = DEFAULT_EPS_MMD,
    bandwidth: mmd.Bandwidth = "median",
    tail: float = POISSON_TAIL,
) -> torch.Tensor:
    r"""The book's pWGF-MMD step (module docstring): :math:`[\nabla_m\Delta^2(\tilde z) - \nabla_m\Delta^2(z)]/(\varepsilon C)` in the mean parameter.

    The gradients are the closed forms of :mod:`pwgf.mmd` (:func:`pwgf.mmd.moved_gradient`), :math:`C`
    is the curvature :func:`pwgf.mmd.mmd_metric`. ``bandwidth`` is the RBF width :math:`h`: a positive
    number, a tensor broadcastable to the coordinates, or ``"median"`` (default;
    :func:`pwgf.mmd.median_bandwidth` of each coordinate's moved samples, never below the lattice
    spacing). The median follows the spread of the samples, about :math:`\sqrt\lambda` for a Poisson
    coordinate, where a fixed :math:`h = 1` makes the estimate's variance grow with the rate (chapter
    *The MMD projection*); for Bernoulli coordinates it is 1. ``eps`` is the WGF step; the default 0.1
    moves a sample by a tenth of the lattice spacing per unit of :math:`\nabla f`, where the kernel is
    close to linear. Beyond that the estimate is not monotone in the move: for a Bernoulli
    coordinate a sample's term is proportional to :math:`\phi(\tilde z) - \phi(z)`,
    :math:`\phi(u) = K(1, u) - K(0, u)`, which grows with an inward move until the kernel saturates and
    then flattens, and for an outward move (past 0 or 1) rises, peaks and falls, changing sign once the
    move exceeds :func:`bernoulli_reversal_move` (about 1.2 at :math:`h = 1`, 3.7 at :math:`h = 2`): there
    the sample pushes the parameter the wrong way (:func:`reversed_moves`). Poisson supports are
    truncated with ``tail`` (see :mod:`pwgf.mmd`).
    """
    z = q.sample(n_samples, generator)
    z_tilde, fz = wgf_step(f, z, eps, q.batch_shape)
    y, y_tilde = _coordinates(q, z), _coordinates(q, z_tilde)
    h = _bandwidth(q, bandwidth, y_tilde)
    return _surrogate(q, fz, _gauss_newton_step(q.kind, _flat_mean(q), y, y_tilde, h, eps, tail))


def _bernoulli_profile(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    r""":math:`\phi(u) = K(1, u) - K(0, u)`: a Bernoulli sample's term of :func:`pwgf.mmd.moved_gradient` is :math:`-2 w\,\phi`."""
    return mmd.rbf_kernel(u, 1.0, h) - mmd.rbf_kernel(u, 0.0, h)


def reversed_moves(z: torch.Tensor, z_tilde: torch.Tensor, bandwidth: float | torch.Tensor) -> torch.Tensor:
    r"""Where a Bernoulli sample's pWGF-MMD term points against its move: :math:`(\phi(\tilde z) - \phi(z))(\tilde z - z) < 0`.

    ``z`` (binary) and ``z_tilde`` (moved) broadcast against ``bandwidth`` :math:`h`. For a small move the
    term has the sign of the move (the ST direction); it reverses exactly for outward moves longer than
    :func:`bernoulli_reversal_move` (inward moves never reverse: :math:`\phi` increases on :math:`[0, 1]` and
    is negative below 0, positive above 1). Boolean tensor of the broadcast shape.
    """
    h = torch.as_tensor(bandwidth, dtype=z_tilde.dtype, device=z_tilde.device)
    z = z.to(z_tilde.dtype)
    return (_bernoulli_profile(z_tilde, h) - _bernoulli_profile(z, h)) * (z_tilde - z) < 0


def bernoulli_reversal_move(bandwidth: float) -> float:
    r"""The outward move :math:`t^\ast(h)` beyond which a Bernoulli sample's pWGF-MMD term changes sign: the root in :math:`t > 0` of :math:`\phi(1 + t) = \phi(1)`.

    :math:`\phi(1 + t) - \phi(1)` is positive for small :math:`t` (:math:`\phi'(1) = e^{-1/(2h^2)}/h^2 > 0`) and tends to
    :math:`-\phi(1) < 0`, and it has one root (float64, ``scipy.optimize.brentq`` to :math:`10^{-12}`); by the
    symmetry :math:`\phi(1 - u) = -\phi(u)` the same :math:`t^\ast` holds for a move below 0.
    """
    check_positive(float(bandwidth), "bandwidth")
    h = torch.tensor(float(bandwidth), dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)

    def gap(t: float) -> float:
        return float(_bernoulli_profile(one + t, h) - _bernoulli_profile(one, h))

    high = 1.0
    while gap(high) > 0:
        high *= 2
    return float(brentq(gap, 1e-9, high, xtol=1e-12))


def _gauss_newton_step(
    kind: str, mean: torch.Tensor, y: torch.Tensor, y_tilde: torch.Tensor, h: torch.Tensor, eps: float, tail: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`[\nabla_m\Delta^2(\tilde z) - \nabla_m\Delta^2(z)]/(\varepsilon C)` per coordinate, for flat samples and mean."""
    grad, curvature = mmd.gauss_newton_terms(kind, mean, y, y_tilde, h, weights=weights, tail=tail)
    return grad / (eps * (curvature[:, None] if kind == "categorical" else curvature))


def pwgf_mmd_expectation(
    dist: Any, *args: Any, bandwidth: mmd.Bandwidth, eps: float = DEFAULT_EPS_MMD, tail: float = POISSON_TAIL
) -> torch.Tensor:
    r"""The mean of the :func:`pwgf_mmd` estimate for a fixed bandwidth, by enumeration of every state (float64).

    ``pwgf_mmd_expectation(family, theta, f, bandwidth=...)`` (shape of ``theta``; one example). With a
    fixed :math:`h` the estimate is an average of per-sample terms, so its mean is the same for every
    :math:`N` and equals the per-sample term summed against :math:`p_\theta`. (The median heuristic
    couples the samples and has no such closed form.)
    """
    q, leaf, (f,) = resolve_leaf(dist, args, ("f",))
    if isinstance(bandwidth, str):
        raise ValueError("bandwidth must be a fixed positive number or tensor here; the median heuristic depends on the whole batch")
    if q.batch_shape:
        raise ValueError(f"pwgf_mmd_expectation takes a single example (batch_shape []), got batch_shape {tuple(q.batch_shape)}")
    states = q.support(tail)
    weights = q.log_prob(states).exp().detach()
    z_tilde, _ = wgf_step(f, states, eps)
    y, y_tilde = _coordinates(q, states), _coordinates(q, z_tilde)
    h = _bandwidth(q, bandwidth, y_tilde)
    step = _gauss_newton_step(q.kind, _flat_mean(q), y, y_tilde, h, eps, tail, weights)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(q.mean, leaf, step.reshape(q.mean.shape))
    return grad


def mmd_argmin(kind: str, mean: torch.Tensor, y_tilde: torch.Tensor, h: torch.Tensor, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""The paper's projection :math:`m' = \argmin_m \Delta^2(\mu_m, \{\tilde y_n\})` per coordinate, in the mean parameter.

    ``mean`` is ``[C]`` (``[C, K]``), ``y_tilde`` the moved samples ``[N, C]`` (``[N, C, K]``), ``h`` a
    resolved bandwidth. With :math:`c_j = \frac1N\sum_n K(j, \tilde y_n)`:

    * Bernoulli: :math:`\Delta^2(p) = 1 - 2p(1-p)(1-\kappa) - 2[(1-p)c_0 + p c_1] + \text{const}`,
      :math:`\kappa = K(0,1)`, a convex quadratic minimized at
      :math:`p' = \tfrac12 + (c_1 - c_0)/(2(1-\kappa))`, clipped to :math:`[0, 1]`;
    * categorical: on the simplex :math:`p^\top G p = \kappa + (1-\kappa)\lVert p\rVert^2`
      (:math:`\kappa = K(e_a, e_b)`, :math:`a \ne b`), so :math:`\Delta^2 = (1-\kappa)\lVert p - c/(1-\kappa)\rVert^2 + \text{const}`
      and :math:`p'` is the Euclidean projection of :math:`c/(1-\kappa)` onto the simplex (:func:`pwgf.projection.sparsemax`);
    * Poisson: a one-dimensional minimization over the rate, :func:`_poisson_argmin`.
    """
    if kind == "bernoulli":
        kappa = torch.exp(-1 / (2 * h**2))
        c1, c0 = mmd.rbf_kernel(y_tilde, 1.0, h).mean(0), mmd.rbf_kernel(y_tilde, 0.0, h).mean(0)
        return (0.5 + (c1 - c0) / (2 * (1 - kappa))).clamp(0.0, 1.0)
    if kind == "categorical":
        one_minus_kappa = -torch.expm1(-1 / h**2).reshape(-1, 1)
        c = mmd.vertex_kernel(y_tilde, h).mean(0)
        return sparsemax(c / one_minus_kappa)
    return _poisson_argmin(mean, y_tilde, h, tail)


#: Grid points of the Poisson projection's first search (in :math:`\sqrt\lambda`), of each zoom, and the number of zooms.
_POISSON_GRID, _ZOOM_GRID, _ZOOMS = 64, 33, 11


def _poisson_argmin(lam: torch.Tensor, y_tilde: torch.Tensor, h: torch.Tensor, tail: float) -> torch.Tensor:
    r""":math:`\argmin_{\lambda > 0} \Delta^2(\mathrm{Poisson}(\lambda), \{\tilde y_n\})` per coordinate, vectorized.

    :math:`\Delta^2` is smooth in :math:`\lambda` but need not be convex, so a grid of
    ``_POISSON_GRID`` rates equally spaced in :math:`\sqrt\lambda` over :math:`[\lambda_{\min}, \lambda_{\max}]`
    locates the basin of the global minimum; then ``_ZOOMS`` times, a grid of ``_ZOOM_GRID`` points on
    the two cells around the best point replaces the bracket by the two cells around its best point,
    shrinking it by :math:`(\text{\_ZOOM\_GRID} - 1)/2 = 16` each time: :math:`16^{11} \approx 2\cdot10^{13}`
    in all. :math:`\lambda_{\max} = 2(\max(\lambda, \max_n \tilde y_n) + h) + 1` lies beyond every
    sample by more than a bandwidth, past which moving the rate further only loses kernel mass;
    :math:`\lambda_{\min} = 10^{-6}` stands in for the boundary :math:`\lambda \to 0` (a cloud left of
    0 is best matched by the point mass at 0). The pmfs share one lattice :math:`\{0,\dots,J\}`,
    :math:`J` the ``tail`` quantile of :math:`\lambda_{\max}`.
    """
    dtype = lam.dtype
    high = 2 * (torch.maximum(lam, y_tilde.max(0).values) + h) + 1
    low = torch.full_like(high, 1e-6)
    j = torch.arange(poisson_truncation(high.max(), tail) + 1, dtype=dtype)
    cross = mmd.rbf_kernel(y_tilde[..., None], j, h.reshape(-1, 1)).mean(0)  # [C, S]: c_j per coordinate

    def objective(rate: torch.Tensor) -> torch.Tensor:  # rate [C, G] -> Delta^2 up to the sample-sample constant
        pmf = torch.exp(j * torch.log(rate[..., None]) - rate[..., None] - torch.lgamma(j + 1))
        return mmd.lattice_self(pmf, pmf, h.reshape(-1, 1)) - 2 * (pmf * cross[:, None]).sum(-1)

    def best_cells(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two grid cells around each row's best point, as a bracket ``(a, b)``."""
        best = objective(points).argmin(-1, keepdim=True)
        last = points.shape[-1] - 1
        return points.gather(-1, (best - 1).clamp(min=0))[:, 0], points.gather(-1, (best + 1).clamp(max=last))[:, 0]

    roots = torch.linspace(0, 1, _POISSON_GRID, dtype=dtype)
    a, b = best_cells((low.sqrt()[:, None] + roots * (high.sqrt() - low.sqrt())[:, None]).square())
    zoom = torch.linspace(0, 1, _ZOOM_GRID, dtype=dtype)
    for _ in range(_ZOOMS):
        a, b = best_cells(a[:, None] + zoom * (b - a)[:, None])
    return (a + b) / 2


def pwgf_mmd_argmin(
    q: Discrete,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eps: float = DEFAULT_EPS_MMD,
    bandwidth: mmd.Bandwidth = "median",
    tail: float = POISSON_TAIL,
) -> torch.Tensor:
    r"""The paper's pWGF-MMD step (Section 2.2): :math:`\hat g = (m - m')/\varepsilon` with :math:`m' = \argmin \Delta^2(\mu_{m'}, \{\tilde z_n\})`.

    :math:`\tilde z_n = z_n - \varepsilon\nabla f(z_n)` and the projection :func:`mmd_argmin` is solved per
    coordinate, with no control variate: an SGD step of size ``eps`` on a Bernoulli or Poisson mean
    parameter is exactly the paper's update. (For categorical probabilities the chain rule through the
    normalization :math:`\theta/\sum_k\theta_k` adds a multiple of the all-ones vector per coordinate,
    the direction the normalization ignores.) The estimate keeps the zero-mean term of the unmoved
    samples, of order :math:`1/(\varepsilon\sqrt N)`, which :func:`pwgf_mmd` subtracts: it has more variance
    than :func:`pwgf_mmd` at small ``eps`` and can have less at large ``eps``. ``bandwidth`` as in
    :func:`pwgf_mmd`.
    """
    z = q.sample(n_samples, generator)
    z_tilde, fz = wgf_step(f, z, eps, q.batch_shape)
    y_tilde = _coordinates(q, z_tilde)
    h = _bandwidth(q, bandwidth, y_tilde)
    mean = _flat_mean(q)
    return _surrogate(q, fz, (mean - mmd_argmin(q.kind, mean, y_tilde, h, tail=tail)) / eps)
