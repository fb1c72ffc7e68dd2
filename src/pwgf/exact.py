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

from collections.abc import Callable
from typing import Any

import torch

from pwgf.discrete import POISSON_TAIL, Discrete
from pwgf.families import resolve, resolve_leaf

__all__ = ["expectation", "gradient", "expectation_of"]

Cost = Callable[[torch.Tensor], torch.Tensor]


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
