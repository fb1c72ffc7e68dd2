r"""The Wasserstein gradient flow of :math:`F[\mu]=\mathbb{E}_\mu[f]` on particles, and the exact projected step.

Otto calculus (the paper's Appendix B) gives :math:`\nabla_{\tilde{\mathcal M}} F[\mu] = \nabla f`, so one
explicit Euler step of the flow pushes :math:`\mu` forward by :math:`\mathrm{id} - \varepsilon\nabla f`:

.. math::
    \tilde\mu = (\mathrm{id} - \varepsilon \nabla f)_\# \mu, \qquad z \mapsto z - \varepsilon \nabla f(z)

(:func:`wgf_step` on samples). For the Bernoulli and Poisson families the step can be taken *exactly*
on the law instead of on samples: :func:`pushforward` moves every support point of :math:`p_\theta`
with its probability, and :func:`mean_projection` projects back by matching each coordinate's mean
(the projection the ST derivation of Section 2.1 uses). :func:`projected_step` composes the two;
it is the deterministic map :math:`\theta \mapsto \theta - \varepsilon\,\mathbb{E}_{p_\theta}[\nabla f]`
whose first- and second-order behaviour Theorem C.2 is about.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf._validate import check_choice
from pwgf.families import POISSON_TAIL, log_prob, support
from pwgf.projection import costs_and_grad

__all__ = [
    "grad_field",
    "wgf_step",
    "pushforward",
    "mean_projection",
    "projected_step",
]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: Families whose parameter is the coordinate-wise mean, so that mean matching is a projection onto them.
MEAN_FAMILIES: tuple[str, ...] = ("bernoulli", "poisson")


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0.0 or eps == float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return eps


def grad_field(f: Cost, z: torch.Tensor) -> torch.Tensor:
    r"""The vector field :math:`\nabla f` evaluated at every particle: ``z`` ``[n, d]`` -> ``[n, d]`` (see :func:`costs_and_grad`)."""
    return costs_and_grad(f, z)[1]


def wgf_step(z: torch.Tensor, f: Cost, eps: float) -> torch.Tensor:
    r"""One explicit Euler step of the Wasserstein gradient flow of :math:`\mathbb{E}_\mu[f]`: :math:`z - \varepsilon\nabla f(z)`."""
    return z.detach() - _check_eps(eps) * grad_field(f, z)


def pushforward(
    family: str, theta: torch.Tensor, f: Cost, eps: float, *, tail: float = POISSON_TAIL
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Atoms ``[S, d]`` and weights ``[S]`` of :math:`(\mathrm{id}-\varepsilon\nabla f)_\# p_\theta`, exactly.

    Every state :math:`z` of the support (Poisson truncated, leaving out at most ``tail`` mass per
    coordinate) moves to :math:`z - \varepsilon\nabla f(z)` and keeps its probability :math:`p_\theta(z)`.
    """
    check_choice(family, MEAN_FAMILIES, "family")
    states = support(family, theta, tail=tail)
    weights = log_prob(family, theta.detach(), states).exp()
    return wgf_step(states, f, eps), weights


def mean_projection(family: str, atoms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""Mean-matching projection onto the family: :math:`\theta_i = \sum_s w_s\, \tilde z_{s,i}`.

    For Bernoulli and Poisson the parameter is the mean, so this is the member of the family with the
    same coordinate means (the minimizer of the Theorem 2.2 lower bound
    :math:`\sum_i|\mathbb{E}_\mu z_i - \mathbb{E}_{\tilde\mu}\tilde z_i|^2`). Bernoulli means are clipped to
    :math:`[0,1]` (the nearest admissible mean); a non-positive Poisson mean raises ValueError.
    """
    check_choice(family, MEAN_FAMILIES, "family")
    theta = (weights / weights.sum()) @ atoms
    if family == "bernoulli":
        return theta.clamp(0.0, 1.0)
    if (theta <= 0).any():
        raise ValueError(f"the pushed-forward means must be > 0 to define Poisson rates, got {theta.tolist()}; reduce eps")
    return theta


def projected_step(family: str, theta: torch.Tensor, f: Cost, eps: float, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    r"""The exact pWGF step with mean-matching projection: :math:`\theta^+ = \theta - \varepsilon\,\mathbb{E}_{p_\theta}[\nabla f]` (before clipping)."""
    return mean_projection(family, *pushforward(family, theta, f, eps, tail=tail))
