r"""The pWGF gradient estimators: straight-through (ST), ST as a projection (pWGF-ST) and the MMD projection (pWGF-MMD).

One step of the paper's scheme (Section 2, Appendix B) from :math:`\mu_\theta`:

(A) draw :math:`z_n \sim \mu_\theta`; (B) move them along the Wasserstein gradient flow of
:math:`F[\mu] = \E_\mu f`, :math:`\tilde z_n = z_n - \varepsilon \nabla f(z_n)`; (C) project,
:math:`\theta_{k+1} = \argmin_\theta D(\theta; \{\tilde z_n\})`, with :math:`D` either the squared
difference of means (Section 2.1) or the squared MMD (Section 2.2), per coordinate (Theorem 2.1).

As a *gradient estimator* usable with any optimizer, the projection is read as one Gauss-Newton step
from the current :math:`\theta`: its displacement is :math:`-C^{-1}\nabla_\theta D`, with
:math:`C = \partial^2_\theta D(\mu_\theta, \mu_{\theta'})|_{\theta'=\theta}` the curvature of the
projection objective, and the estimate is that displacement per unit :math:`\varepsilon`,

.. math::
    \hat g = \frac{\nabla_\theta D(\theta; \{\tilde z_n\}) - \nabla_\theta D(\theta; \{z_n\})}{\varepsilon\, C}.

Subtracting :math:`\nabla_\theta D(\theta;\{z_n\})` (the gradient towards the *unmoved* samples, zero
in expectation) is the paper's control variate: for the mean objective it is exactly the step
:math:`p - \bar{\tilde z} \approx \bar z - \bar{\tilde z}` of Section 2.1. For the mean objective
:math:`C = 2` and :math:`\hat g` equals the multi-sample ST estimate for every :math:`\varepsilon`.

Every builder has the signature of the estimator contract, ``fn(family, theta, f, n_samples, *,
generator, **options) -> scalar``: the gradient of the returned surrogate with respect to ``theta``
is the estimate, its gradient with respect to parameters of ``f`` is the sample mean of
:math:`\nabla f` at the drawn samples, and its value is the sample mean of :math:`f`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf import flow, mmd
from pwgf._validate import check_positive, check_positive_int
from pwgf.families import POISSON_TAIL, costs, log_prob, sample, support, validate_theta

__all__ = ["mean_parameter", "wgf_step", "mean_matching", "st", "st_expectation", "pwgf_st", "pwgf_mmd", "pwgf_mmd_expectation", "DEFAULT_EPS_MMD"]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: Default WGF step of :func:`pwgf_mmd`, in units of the lattice spacing per unit of :math:`\nabla f`.
DEFAULT_EPS_MMD: float = 0.1


def mean_parameter(family: str, theta: torch.Tensor) -> torch.Tensor:
    r""":math:`\E_{p_\theta}[z]` per coordinate: :math:`p` (Bernoulli), :math:`\lambda` (Poisson), :math:`\theta/\sum_k\theta_k` (categorical)."""
    if family == "categorical":
        return theta / theta.sum(-1, keepdim=True)
    return theta


def _draw(family: str, theta: torch.Tensor, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    validate_theta(family, theta)
    return sample(family, theta.detach(), check_positive_int(n_samples, "n_samples"), generator)


def wgf_step(f: Cost, z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Step (B): :math:`\tilde z_n = z_n - \varepsilon\nabla f(z_n)` (Appendix B), and the costs :math:`f(z_n)`.

    The moved samples are detached (they are data for the projection); the costs keep their graph to
    the parameters of ``f`` (:func:`pwgf.flow.costs_and_grad`). Raises ValueError if ``f`` is not
    differentiable in ``z``.
    """
    check_positive(eps, "eps")
    fz, grad_z = flow.costs_and_grad(f, z)
    return (z - eps * grad_z).detach(), fz


def mean_matching(family: str, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Section 2.1's projection objective :math:`\sum_i \lVert \E_{\theta_i} z - \bar y_i \rVert^2` for samples ``y`` ``[N, d]`` (``[N, d, K]``)."""
    return (mean_parameter(family, theta) - y.mean(0)).pow(2).sum()


def _surrogate(fz: torch.Tensor, theta_term: torch.Tensor) -> torch.Tensor:
    """Mean cost (value and gradient for f's parameters) plus a zero-valued term carrying the theta gradient."""
    return fz.mean() + (theta_term - theta_term.detach())


def st(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Multi-sample straight-through surrogate :math:`\frac1N\sum_n f(z_n + m(\theta) - \operatorname{sg} m(\theta))`.

    :math:`m(\theta) = \E_\theta z` (:func:`mean_parameter`), so the gradient in ``theta`` is
    :math:`\frac1N\sum_n \nabla f(z_n)^\top \partial m/\partial\theta`: ST's identity Jacobian
    :math:`\partial z/\partial p = I` of :cite:`bengio2013estimating` (chain rule through the normalization
    for categorical).
    """
    z = _draw(family, theta, n_samples, generator)
    m = mean_parameter(family, theta)
    return costs(f, z + (m - m.detach())).mean()


def st_expectation(family: str, theta: torch.Tensor, f: Cost, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""The mean of the ST estimate, :math:`\E_{z\sim p_\theta}[\nabla f(z)]^\top \partial m/\partial\theta`, by enumeration (float64).

    It does not depend on the number of samples; ST's bias is this minus :func:`pwgf.exact.gradient`.
    Poisson supports are truncated as in :func:`pwgf.families.support` (``tail`` per coordinate).
    """
    validate_theta(family, theta)
    states = support(family, theta, tail=tail).requires_grad_(True)
    weights = log_prob(family, theta.detach(), states.detach()).exp()
    with torch.enable_grad():
        (grad_z,) = torch.autograd.grad(costs(f, states).sum(), states)
        mean_grad = torch.einsum("s,s...->...", weights, grad_z)
        leaf = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(mean_parameter(family, leaf), leaf, mean_grad)
    return grad


def pwgf_st(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None, eps: float = 1.0) -> torch.Tensor:
    r"""pWGF with the mean-matching projection (Section 2.1): the estimate is :math:`\nabla_\theta[D(\tilde z) - D(z)]/(2\varepsilon)`.

    :math:`D(y) = \lVert m(\theta) - \bar y\rVert^2` (:func:`mean_matching`) is differentiated by autograd;
    its control-variate gradient is :math:`2(\bar z - \bar{\tilde z})\,\partial m/\partial\theta =
    2\varepsilon\,\overline{\nabla f(z)}\,\partial m/\partial\theta`, so the estimate equals :func:`st` for any
    ``eps`` up to the rounding of :math:`\tilde z` (relative error about
    :math:`10^{-16}\max|z| / (\varepsilon|\nabla f|)`, so it shrinks as ``eps`` grows; the default ``eps = 1``
    keeps it at the level of the rounding of the samples themselves).
    """
    z = _draw(family, theta, n_samples, generator)
    z_tilde, fz = wgf_step(f, z, eps)
    objective = (mean_matching(family, theta, z_tilde) - mean_matching(family, theta, z)) / (2 * eps)
    return _surrogate(fz, objective)


def pwgf_mmd(
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eps: float = DEFAULT_EPS_MMD,
    bandwidth: mmd.Bandwidth = "median",
    tail: float = POISSON_TAIL,
) -> torch.Tensor:
    r"""pWGF with the MMD projection (Section 2.2): estimate :math:`[\nabla_\theta\Delta^2(\tilde z) - \nabla_\theta\Delta^2(z)]/(\varepsilon C)`.

    The gradients are the closed forms of :mod:`pwgf.mmd` (:func:`pwgf.mmd.moved_gradient`), :math:`C`
    is the curvature :func:`pwgf.mmd.mmd_metric`, so that the estimate is the Gauss-Newton displacement
    of the projection per unit step. ``bandwidth`` is the RBF width :math:`h`: a positive number, a
    per-coordinate tensor, or ``"median"`` (default; :func:`pwgf.mmd.median_bandwidth` of the moved
    samples, never below the lattice spacing). The median follows the spread of the samples, about
    :math:`\sqrt\lambda` for a Poisson coordinate, where a fixed :math:`h = 1` makes the estimate's
    variance grow with the rate (chapter *The MMD projection*); for Bernoulli coordinates it is 1.
    ``eps`` is the WGF step; the default 0.1 moves a sample by a tenth of the lattice spacing per unit
    of :math:`\nabla f`, where the kernel is close to linear; when :math:`\varepsilon|\nabla f|`
    exceeds :math:`h` the kernel saturates and the estimate shrinks. Poisson supports are truncated with ``tail`` (see :mod:`pwgf.mmd`).
    """
    z = _draw(family, theta, n_samples, generator)
    z_tilde, fz = wgf_step(f, z, eps)
    h = mmd.resolve_bandwidth(bandwidth, z_tilde)
    return _surrogate(fz, (_mmd_step(family, theta.detach(), z, z_tilde, h, eps, tail) * theta).sum())


def _mmd_step(
    family: str, theta: torch.Tensor, z: torch.Tensor, z_tilde: torch.Tensor, h: torch.Tensor, eps: float, tail: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    r"""The pWGF-MMD estimate :math:`[\nabla_\theta\Delta^2(\tilde z) - \nabla_\theta\Delta^2(z)]/(\varepsilon C)` for given samples."""
    lattice = mmd.poisson_lattice(theta, tail) if family == "poisson" else None
    grad = mmd.moved_gradient(family, theta, z, z_tilde, h, weights=weights, lattice=lattice)
    curvature = mmd.mmd_metric(family, theta, h, lattice=lattice)
    return grad / (eps * (curvature[:, None] if family == "categorical" else curvature))


def pwgf_mmd_expectation(
    family: str, theta: torch.Tensor, f: Cost, *, bandwidth: float | torch.Tensor, eps: float = DEFAULT_EPS_MMD, tail: float = POISSON_TAIL
) -> torch.Tensor:
    r"""The mean of the :func:`pwgf_mmd` estimate for a fixed bandwidth, by enumeration of every state (float64).

    With a fixed :math:`h` the estimate is an average of per-sample terms, so its mean is the same for
    every :math:`N` and equals the per-sample term summed against :math:`p_\theta`. (The median
    heuristic couples the samples and has no such closed form.)
    """
    validate_theta(family, theta)
    if isinstance(bandwidth, str):
        raise ValueError("bandwidth must be a fixed positive number or [d] tensor here; the median heuristic depends on the whole batch")
    t = theta.detach()
    states = support(family, t, tail=tail)
    weights = log_prob(family, t, states).exp()
    z_tilde, _ = wgf_step(f, states, eps)
    h = mmd.resolve_bandwidth(bandwidth, z_tilde)
    return _mmd_step(family, t, states, z_tilde, h, eps, tail, weights)
