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

from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch import distributions as D

from pwgf._validate import check_choice, check_finite, check_positive, check_probabilities

__all__ = [
    "FAMILIES",
    "validate_theta",
    "distribution",
    "sample",
    "log_prob",
    "poisson_truncation",
    "support",
    "costs",
    "POISSON_TAIL",
]

FAMILIES: tuple[str, ...] = ("bernoulli", "poisson", "categorical")

#: Default bound on the probability mass a truncated Poisson support leaves out, per coordinate.
POISSON_TAIL: float = 1e-12

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
    """Draw ``n`` samples ``[n, d]`` (``[n, d, K]``) from :math:`p_\\theta`, seeded by ``generator``.

    ``torch.distributions`` has no generator argument, so the draw runs under a fork of the global
    RNG seeded from ``generator``: the global stream is left untouched and results are reproducible.
    """
    dist = distribution(family, theta.detach())
    if generator is None:
        return dist.sample((n,)).to(theta.dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also initialise every accelerator backend.
        torch.random.default_generator.manual_seed(seed)
        return dist.sample((n,)).to(theta.dtype)


def log_prob(family: str, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log p_\\theta(z)` for a batch ``z`` of shape ``[n, d]`` (``[n, d, K]``), differentiable in ``theta``."""
    return distribution(family, theta).log_prob(z)


def poisson_truncation(rate: torch.Tensor | np.ndarray | float, tail: float = POISSON_TAIL) -> int:
    r"""Smallest :math:`K` with :math:`P(Z > K) \le` ``tail`` for :math:`Z \sim \mathrm{Poisson}(\lambda)`, for every given rate.

    Computed from the exact Poisson survival function (``scipy.stats.poisson.isf``), so the bound holds
    for rates near 0 (where :math:`K` can be 0 or 1) and for rates in the hundreds alike (where
    :math:`K \approx \lambda + c\sqrt{\lambda}`); no normal or Chernoff approximation is involved.
    """
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must lie in (0, 1), got {tail!r}")
    rates = np.asarray(rate.detach().cpu().numpy() if isinstance(rate, torch.Tensor) else rate, dtype=np.float64)
    check_positive(rates, "rate")
    k = stats.poisson.isf(tail, rates.max())
    return int(k)


def support(family: str, theta: torch.Tensor, *, tail: float = POISSON_TAIL, max_states: int = 2_000_000) -> torch.Tensor:
    """Every joint state of the family as a tensor ``[S, d]`` (``[S, d, K]``), Poisson truncated by :func:`poisson_truncation`.

    The number of states grows exponentially in ``d``; more than ``max_states`` raises ValueError.
    """
    validate_theta(family, theta)
    d = theta.shape[0]
    if family == "bernoulli":
        values = torch.tensor([0.0, 1.0], dtype=theta.dtype)
    elif family == "poisson":
        values = torch.arange(poisson_truncation(theta, tail) + 1, dtype=theta.dtype)
    else:
        values = torch.eye(theta.shape[1], dtype=theta.dtype)
    n_states = len(values) ** d
    if n_states > max_states:
        raise ValueError(f"enumerating {family} with d={d} needs {len(values)}**{d} states > max_states={max_states}")
    axes = torch.meshgrid(*[torch.arange(len(values))] * d, indexing="ij")
    index = torch.stack(axes, dim=-1).reshape(n_states, d)
    return values[index].reshape((n_states, d) + values.shape[1:])


def costs(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """``f(z)`` for a batch ``z`` of ``n`` samples or states, checked to be one cost per row (shape ``[n]``)."""
    values = f(z)
    if not isinstance(values, torch.Tensor) or values.shape != z.shape[:1]:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"f must map a batch of {z.shape[0]} samples to costs of shape [{z.shape[0]}], got {shape}")
    return values
