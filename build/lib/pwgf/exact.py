r"""Exact expectations and gradients by enumeration: the reference every estimator is measured against.

For a product family :math:`p_\theta` on a finite (or truncated) support :math:`\mathcal{Z}`,

.. math::
    L(\theta) = \mathbb{E}_{z\sim p_\theta}[f(z)] = \sum_{z\in\mathcal{Z}} p_\theta(z) f(z),
    \qquad
    \nabla_\theta L(\theta) = \sum_{z\in\mathcal{Z}} \nabla_\theta p_\theta(z)\, f(z),

the paper's Eq. (1) and the sum it calls intractable in high dimension. Here the sum is computed
exactly (float64, autograd through :math:`\log p_\theta`), which is feasible for small ``d``.

Both entry points take either a distribution (:mod:`pwgf.discrete`; one expectation per example, the
states of one example's event enumerated and shared by all examples) or the family form
``(family, theta, f)``. Poisson supports are truncated at :math:`K` =
:func:`pwgf.families.poisson_truncation` of the largest rate, leaving out at most ``tail`` mass per
coordinate; for :math:`|f| \le B` the truncated expectation is within :math:`d \cdot B \cdot
\mathrm{tail}` of the true one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pwgf.discrete import POISSON_TAIL, Discrete
from pwgf.families import resolve, resolve_leaf

__all__ = ["expectation", "gradient", "expectation_of", "importance_weighted_bound"]

Cost = Callable[[torch.Tensor], torch.Tensor]

# q summed over its states must be 1 up to float32 rounding of a few dozen terms.
_MASS_ATOL = 1e-6


def expectation_of(q: Discrete, f: Cost, *, tail: float = POISSON_TAIL) -> torch.Tensor:
    """:math:`\\mathbb{E}_{p_\\theta}[f(z)]` per example, ``[*batch_shape]``, summed over every state; differentiable in the parameter.

    ``f`` receives every state for every example at once, ``[S, *batch_shape, *event_shape]``.
    """
    states = q.support(tail)
    shape = (states.shape[0], *q.batch_shape, *q.event_shape)
    states = states.reshape(states.shape[0], *[1] * len(q.batch_shape), *q.event_shape).expand(shape)
    weights = q.log_prob(states).exp()
    return (weights * q.costs(f, states)).sum(0)


def expectation(dist: Any, *args: Any, tail: float = POISSON_TAIL) -> torch.Tensor:
    """:math:`\\mathbb{E}_{p_\\theta}[f(z)]`: ``expectation(dist, f)`` per example, or ``expectation(family, theta, f)`` (a scalar).

    ``f`` maps states ``[S, *batch_shape, *event_shape]`` (family form: ``[S, d]``, one-hot ``[S, d, K]``)
    to costs ``[S, *batch_shape]``.
    """
    q, (f,) = resolve(dist, args, ("f",))
    return expectation_of(q, f, tail=tail)


def gradient(dist: Any, *args: Any, tail: float = POISSON_TAIL) -> torch.Tensor:
    """:math:`\\nabla_\\theta \\mathbb{E}_{p_\\theta}[f(z)]` by autograd through the enumerated sum, with the shape of the parameter.

    ``gradient(dist, f)`` differentiates the sum of the examples' expectations with respect to the
    distribution's parameter (``logits``, ``probs`` or ``rate``, as it was built); ``gradient(family,
    theta, f)`` with respect to ``theta``. The parameters of ``f`` are not differentiated.
    """
    q, leaf, (f,) = resolve_leaf(dist, args, ("f",))
    with torch.enable_grad():
        total = expectation_of(q, lambda z: f(z).detach(), tail=tail).sum()
        (grad,) = torch.autograd.grad(total, leaf)
    return grad


def importance_weighted_bound(log_q: torch.Tensor, log_joint: torch.Tensor, k: int, *, max_tuples: int = 2_000_000) -> torch.Tensor:
    r""":math:`\mathcal{L}_k = \E\big[\log \frac{1}{k}\sum_{s=1}^k w(z_s)\big]`, :math:`z_1,\dots,z_k \sim q` i.i.d., summed over every :math:`k`-tuple of states.

    ``log_q`` and ``log_joint`` ``[S, ...]`` hold :math:`\log q(z)` and :math:`\log p(x, z)` at every
    state :math:`z` of a finite latent space (``...`` are batch dimensions, e.g. one entry per image
    :math:`x`), and :math:`w = p(x, z) / q(z)`. The :math:`S^k` tuples are enumerated, so the bound of
    :cite:`burda2016importance` is exact for small :math:`S^k` (more than ``max_tuples`` raises
    ValueError); ``k = 1`` gives the ELBO.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    if log_q.shape != log_joint.shape or log_q.ndim < 1:
        raise ValueError(f"log_q and log_joint must have the same shape [S, ...], got {tuple(log_q.shape)} and {tuple(log_joint.shape)}")
    if not (torch.isfinite(log_q).all() and torch.isfinite(log_joint).all()):
        raise ValueError("log_q and log_joint must be finite: q must put mass on every state")
    if (torch.logsumexp(log_q, dim=0).abs() > _MASS_ATOL).any():
        raise ValueError(f"exp(log_q) must sum to 1 over the states (dimension 0) within {_MASS_ATOL:g}")
    n_states = log_q.shape[0]
    if n_states**k > max_tuples:
        raise ValueError(f"enumerating k={k} draws from {n_states} states needs {n_states}**{k} tuples > max_tuples={max_tuples}")
    index = torch.cartesian_prod(*[torch.arange(n_states)] * k).reshape(n_states**k, k)
    log_w = (log_joint - log_q)[index]
    log_prob = log_q[index].sum(1)
    return (log_prob.exp() * (torch.logsumexp(log_w, dim=1) - math.log(k))).sum(0)
