r"""The discrete families :math:`\mathcal{M} = \{p_\theta\}` of the paper (Section 2), as ``torch.distributions``.

Every family is a product over ``d`` independent coordinates:

* ``"bernoulli"``: :math:`\theta = p \in [0,1]^d`, :math:`z \in \{0,1\}^d`;
* ``"poisson"``: :math:`\theta = \lambda \in (0,\infty)^d`, :math:`z \in \mathbb{N}^d`;
* ``"categorical"``: :math:`\theta \in \Delta_{K-1}^d` (rows are probability vectors, shape ``[d, K]``),
  samples are one-hot, shape ``[d, K]``.

Samples are returned as floating tensors so that a cost ``f`` can be differentiated in ``z``.

Categorical convention: ``torch.distributions`` normalizes ``probs`` by their row sums, so
:math:`p_\theta = \theta / \sum_k \theta_k` and every gradient with respect to ``theta`` in this
package (exact or estimated) is the gradient of that scale-invariant extension. By Euler's identity
each row :math:`g` of it satisfies :math:`\sum_k \theta_k g_k = 0`, and along any direction :math:`v`
inside the simplex (:math:`\sum_k v_k = 0`) it gives the same directional derivative as any other
differentiable extension.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import distributions as D

from pwgf._validate import check_choice, check_finite, check_positive, check_probabilities
from pwgf.discrete import POISSON_TAIL, Discrete, as_discrete, costs, poisson_truncation

__all__ = [
    "FAMILIES",
    "validate_theta",
    "distribution",
    "sample",
    "log_prob",
    "poisson_truncation",
    "support",
    "costs",
    "resolve",
    "resolve_leaf",
    "POISSON_TAIL",
]

FAMILIES: tuple[str, ...] = ("bernoulli", "poisson", "categorical")

#: Row sums of categorical probabilities must equal 1 within this float64 tolerance.
_ROW_SUM_ATOL = 1e-6


def validate_theta(family: str, theta: torch.Tensor) -> None:
    """Raise ValueError unless ``theta`` is a valid parameter of ``family`` (see module docstring)."""
    check_choice(family, FAMILIES, "family")
    if not isinstance(theta, torch.Tensor):
        raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    if theta.numel() == 0:
        raise ValueError("theta must not be empty")
    check_finite(theta, "theta")
    t = theta.detach()
    if family == "bernoulli":
        if t.ndim != 1:
            raise ValueError(f"theta for 'bernoulli' must have shape [d], got {tuple(t.shape)}")
        check_probabilities(t, "theta (Bernoulli probabilities p)")
    elif family == "poisson":
        if t.ndim != 1:
            raise ValueError(f"theta for 'poisson' must have shape [d], got {tuple(t.shape)}")
        check_positive(t, "theta (Poisson rates lambda)")
    else:
        if t.ndim != 2 or t.shape[1] < 2:
            raise ValueError(f"theta for 'categorical' must have shape [d, K] with K >= 2, got {tuple(t.shape)}")
        check_probabilities(t, "theta (categorical probabilities)")
        sums = t.sum(-1)
        if ((sums - 1).abs() > _ROW_SUM_ATOL).any():
            raise ValueError(f"theta rows for 'categorical' must sum to 1, got sums in [{sums.min():.6g}, {sums.max():.6g}]")


def distribution(family: str, theta: torch.Tensor) -> D.Distribution:
    """The product distribution :math:`p_\\theta` with event shape ``[d]`` (``[d, K]`` for categorical)."""
    validate_theta(family, theta)
    if family == "bernoulli":
        return D.Independent(D.Bernoulli(probs=theta, validate_args=False), 1)
    if family == "poisson":
        return D.Independent(D.Poisson(rate=theta, validate_args=False), 1)
    return D.Independent(D.OneHotCategorical(probs=theta, validate_args=False), 1)


def sample(family: str, theta: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` samples ``[n, d]`` (``[n, d, K]``) from :math:`p_\\theta`, seeded by ``generator`` (:meth:`pwgf.discrete.Discrete.sample`)."""
    return as_discrete(distribution(family, theta.detach())).sample(n, generator)


def log_prob(family: str, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log p_\\theta(z)` for a batch ``z`` of shape ``[n, d]`` (``[n, d, K]``), differentiable in ``theta``."""
    return distribution(family, theta).log_prob(z)


def support(family: str, theta: torch.Tensor, *, tail: float = POISSON_TAIL, max_states: int = 2_000_000) -> torch.Tensor:
    """Every joint state of the family as a tensor ``[S, d]`` (``[S, d, K]``), Poisson truncated by :func:`poisson_truncation`.

    The number of states grows exponentially in ``d``; more than ``max_states`` raises ValueError.
    """
    return as_discrete(distribution(family, theta)).support(tail, max_states)


def resolve(
    first: Any, args: tuple[Any, ...], names: tuple[str, ...], keywords: dict[str, Any] | None = None
) -> tuple[Discrete, tuple[Any, ...]]:
    """Both call forms of the estimator entry points: ``(dist, *rest)`` or the family form ``(family, theta, *rest)``.

    The family form is :func:`distribution`, an ``Independent`` product over the coordinates of
    ``theta`` (batch shape ``[]``, event shape ``theta.shape``). ``names`` are the remaining
    arguments; trailing ones not given by position are taken (and removed) from ``keywords``, so that
    ``surrogate("st", dist, f=cost, n_samples=4)`` works as well.
    """
    if isinstance(first, str):
        check_choice(first, FAMILIES, "family")
        if not args:
            raise ValueError(f"the family form needs theta after the family name: (family, theta, {', '.join(names)})")
        q, rest = as_discrete(distribution(first, args[0])), args[1:]
    else:
        q, rest = as_discrete(first), args
    if keywords is not None:
        rest = (*rest, *(keywords.pop(name) for name in names[len(rest):] if name in keywords))
    if len(rest) != len(names):
        raise ValueError(f"expected ({', '.join(names)}) after the distribution, got {len(rest)} of them")
    return q, rest


def resolve_leaf(
    first: Any, args: tuple[Any, ...], names: tuple[str, ...], keywords: dict[str, Any] | None = None
) -> tuple[Discrete, torch.Tensor, tuple[Any, ...]]:
    """As :func:`resolve`, around a detached leaf copy of the parameter (``theta`` in the family form) to differentiate against.

    Returns the view, the leaf (``requires_grad``) and the remaining arguments.
    """
    q, rest = resolve(first, args, names, keywords)
    if isinstance(first, str):
        leaf = args[0].detach().clone().requires_grad_(True)
        return as_discrete(distribution(first, leaf)), leaf, rest
    leaf = q.parameter.detach().clone().requires_grad_(True)
    return q.with_parameter(leaf), leaf, rest
