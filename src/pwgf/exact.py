r"""Exact expectations and gradients by enumeration: the reference every estimator is measured against.

For a product family :math:`p_\theta` on a finite (or truncated) support :math:`\mathcal{Z}`,

.. math::
    L(\theta) = \mathbb{E}_{z\sim p_\theta}[f(z)] = \sum_{z\in\mathcal{Z}} p_\theta(z) f(z),
    \qquad
    \nabla_\theta L(\theta) = \sum_{z\in\mathcal{Z}} \nabla_\theta p_\theta(z)\, f(z),

the paper's Eq. (1) and the sum it calls intractable in high dimension. Here the sum is computed
exactly (float64, autograd through :math:`\log p_\theta`), which is feasible for small ``d``.

Poisson supports are truncated at :math:`K` = :func:`pwgf.families.poisson_truncation`, leaving out at
most ``tail`` mass per coordinate; for :math:`|f| \le B` the truncated expectation is within
:math:`d \cdot B \cdot \mathrm{tail}` of the true one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf.families import POISSON_TAIL, costs, log_prob, support

__all__ = ["expectation", "gradient"]

Cost = Callable[[torch.Tensor], torch.Tensor]


def expectation(family: str, theta: torch.Tensor, f: Cost, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    """:math:`\\mathbb{E}_{p_\\theta}[f(z)]` summed over every state; differentiable in ``theta``.

    ``f`` maps a batch of states ``[S, d]`` (one-hot ``[S, d, K]`` for categorical) to costs ``[S]``.
    """
    states = support(family, theta, tail=tail)
    weights = log_prob(family, theta, states).exp()
    return (weights * costs(f, states)).sum()


def gradient(family: str, theta: torch.Tensor, f: Cost, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    """:math:`\\nabla_\\theta \\mathbb{E}_{p_\\theta}[f(z)]` by autograd through the enumerated sum; same shape as ``theta``."""
    theta = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(expectation(family, theta, lambda z: f(z).detach(), tail=tail), theta)
    return grad
