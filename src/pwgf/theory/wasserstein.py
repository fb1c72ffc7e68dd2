r"""Exact 2-Wasserstein distances used by the theory of the paper (Theorems 2.1, 2.2, Remark 2.2, Lemma C.3).

Every function works in float64 on discrete measures given by atoms and (optional) weights; inputs
may be numpy arrays or torch tensors. In one dimension the optimal coupling for the cost
:math:`|x-y|^2` is the *quantile coupling*, so

.. math::
    W_2^2(\mu, \nu) = \int_0^1 \bigl(F_\mu^{-1}(u) - F_\nu^{-1}(u)\bigr)^2 \,\mathrm{d}u,
    \qquad F^{-1}(u) = \inf\{x : F(x) \ge u\},

and for discrete measures the integrand is piecewise constant, so the integral is an exact finite sum
(:func:`w2_squared_1d`). Product measures reduce to their marginals (Theorem 2.1,
:func:`w2_squared_factorized`); the Bernoulli cases are closed forms (Remark 2.2 and the general form
of Lemma C.3: :func:`w2_squared_bernoulli`, :func:`w2_squared_bernoulli_to`,
:func:`project_to_bernoulli`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pwgf._validate import as_float64, check_probabilities, check_weights

__all__ = [
    "w2_squared_1d",
    "w2_squared_bernoulli",
    "w2_squared_bernoulli_to",
    "project_to_bernoulli",
    "w2_squared_factorized",
    "product_measure",
    "mean_bound",
]


def _measure(
    values: Any, weights: Any, name: str, weights_name: str, *, ndims: tuple[int, ...] = (1,)
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 atoms (array with ``ndim`` in ``ndims``, one atom per row) and weights ``[n]`` (uniform when None)."""
    x = as_float64(values, name)
    if x.ndim not in ndims:
        allowed = " or ".join(f"{k}-dimensional" for k in ndims)
        raise ValueError(f"{name} must be {allowed} (one atom per row), got shape {x.shape}")
    n = x.shape[0]
    if weights is None:
        return x, np.full(n, 1.0 / n)
    w = as_float64(weights, weights_name)
    check_weights(w, n, weights_name)
    return x, w


def _quantile_steps(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted atoms and their cumulative weights; the last cumulative weight is set to exactly 1."""
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    cum[-1] = 1.0
    return x[order], cum


def _quantile(sorted_x: np.ndarray, cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    r"""Left-continuous quantile :math:`F^{-1}(u) = \inf\{x: F(x)\ge u\}` of a discrete measure, vectorized in ``u``."""
    return sorted_x[np.minimum(np.searchsorted(cum, u, side="left"), len(sorted_x) - 1)]


def w2_squared_1d(x: Any, y: Any, x_weights: Any = None, y_weights: Any = None) -> float:
    r"""Exact :math:`W_2^2(\mu,\nu)` between :math:`\mu=\sum_i a_i\delta_{x_i}` and :math:`\nu=\sum_j b_j\delta_{y_j}` on :math:`\mathbb{R}`.

    Uses the quantile coupling (optimal in one dimension for convex costs; Villani 2008, Thm 2.18):
    with :math:`0=u_0<u_1<\dots<u_m=1` the union of the cumulative weights of both measures,

    .. math::
        W_2^2(\mu,\nu) = \sum_{k=1}^m (u_k-u_{k-1})\,
        \bigl(F_\mu^{-1}(\bar u_k) - F_\nu^{-1}(\bar u_k)\bigr)^2,
        \qquad \bar u_k = \tfrac12(u_{k-1}+u_k).

    Ties and zero weights are allowed; weights default to uniform. ``x`` and ``y`` are 1-D.
    """
    xs, a = _measure(x, x_weights, "x", "x_weights")
    ys, b = _measure(y, y_weights, "y", "y_weights")
    xs, ca = _quantile_steps(xs, a)
    ys, cb = _quantile_steps(ys, b)
    u = np.concatenate(([0.0], np.unique(np.concatenate((ca, cb)))))
    mid = 0.5 * (u[:-1] + u[1:])
    diff = _quantile(xs, ca, mid) - _quantile(ys, cb, mid)
    return float(np.sum(np.diff(u) * diff**2))


def w2_squared_bernoulli(p: Any, q: Any) -> np.ndarray | float:
    r""":math:`W_2^2(\mathrm{Bern}(p), \mathrm{Bern}(q)) = |p - q|` (the paper's Remark 2.2, Eq. (15)); broadcasts."""
    p_arr = as_float64(p, "p")
    q_arr = as_float64(q, "q")
    check_probabilities(p_arr, "p")
    check_probabilities(q_arr, "q")
    out = np.abs(p_arr - q_arr)
    return float(out) if out.ndim == 0 else out


def w2_squared_bernoulli_to(p: Any, values: Any, weights: Any = None) -> np.ndarray | float:
    r"""Exact :math:`W_2^2(\mathrm{Bern}(p), \nu)` for a discrete 1-D measure :math:`\nu` (general form of Lemma C.3).

    The quantile function of :math:`\mathrm{Bern}(p)` is :math:`\mathbf 1\{u > 1-p\}`, so

    .. math::
        W_2^2(\mathrm{Bern}(p),\nu) = \int_0^{1-p} F_\nu^{-1}(u)^2\,\mathrm{d}u
            + \int_{1-p}^1 \bigl(F_\nu^{-1}(u)-1\bigr)^2\,\mathrm{d}u
        = \mathbb{E}_\nu[y^2] + p - 2\int_{1-p}^1 F_\nu^{-1}(u)\,\mathrm{d}u .

    This holds for every :math:`\nu` with a second moment, atoms (ties) included: an atom of
    :math:`\nu` at the split point :math:`F_\nu^{-1}(1-p)` is shared between the two terms, which the
    paper's Eq. (16) leaves undefined. ``p`` may be an array (vectorized); ``values`` is 1-D.
    """
    p_arr = as_float64(p, "p")
    check_probabilities(p_arr, "p")
    ys, w = _measure(values, weights, "values", "weights")
    ys, cum = _quantile_steps(ys, w)
    lower = np.concatenate(([0.0], cum[:-1]))
    # Length of [lower_j, cum_j] intersected with [1 - p, 1], for every p (last axis: atoms).
    overlap = np.clip(cum - np.maximum(lower, 1.0 - p_arr[..., None]), 0.0, None)
    upper_mean = overlap @ ys
    # max(., 0) only removes float64 cancellation below zero when nu is itself Bern(p).
    out = np.maximum((cum - lower) @ ys**2 + p_arr - 2.0 * upper_mean, 0.0)
    return float(out) if out.ndim == 0 else out


def project_to_bernoulli(values: Any, weights: Any = None) -> tuple[float, float]:
    r"""The set :math:`\arg\min_{p\in[0,1]} W_2^2(\mathrm{Bern}(p), \nu)` as an interval ``(p_lo, p_hi)``.

    :math:`\varphi(p) = W_2^2(\mathrm{Bern}(p),\nu)` is convex with derivative
    :math:`\varphi'(p) = 1 - 2F_\nu^{-1}(1-p)` almost everywhere, so the minimizers are

    .. math::
        [\,\nu((\tfrac12, \infty)),\ \nu([\tfrac12, \infty))\,],

    a single point unless :math:`\nu` has an atom at exactly :math:`1/2`. In words: the W2 projection
    onto Bernoulli measures *rounds* every atom to the nearer of 0 and 1.
    """
    ys, w = _measure(values, weights, "values", "weights")
    # Weights sum to 1 only up to rounding: clip so that the masses are probabilities.
    return float(np.clip(np.sum(w[ys > 0.5]), 0.0, 1.0)), float(np.clip(np.sum(w[ys >= 0.5]), 0.0, 1.0))


def w2_squared_factorized(
    xs: Sequence[Any], x_weights: Sequence[Any] | None, ys: Sequence[Any], y_weights: Sequence[Any] | None
) -> float:
    r""":math:`W_2^2(\mu,\nu) = \sum_{i=1}^d W_2^2(\mu_i,\nu_i)` for product measures :math:`\mu=\otimes_i\mu_i`, :math:`\nu=\otimes_i\nu_i` (Theorem 2.1).

    ``xs[i]`` / ``ys[i]`` are the atoms of the i-th marginals, ``x_weights[i]`` / ``y_weights[i]`` their
    weights (``None``, or a sequence with ``None`` entries, for uniform weights). For measures that are
    not products the right-hand side is only a lower bound (see the proof of Theorem 2.1).
    """
    d = len(xs)
    if d == 0:
        raise ValueError("xs must hold at least one marginal")
    if len(ys) != d:
        raise ValueError(f"ys must hold as many marginals as xs ({d}), got {len(ys)}")
    xw = [None] * d if x_weights is None else list(x_weights)
    yw = [None] * d if y_weights is None else list(y_weights)
    if len(xw) != d or len(yw) != d:
        raise ValueError(f"x_weights and y_weights must hold {d} entries, got {len(xw)} and {len(yw)}")
    return float(sum(w2_squared_1d(xs[i], ys[i], xw[i], yw[i]) for i in range(d)))


def product_measure(marginals: Sequence[Any], weights: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""Atoms ``[N, d]`` and weights ``[N]`` of :math:`\otimes_i \mu_i` from its marginals (:math:`N=\prod_i n_i`)."""
    d = len(marginals)
    if d == 0:
        raise ValueError("marginals must hold at least one marginal")
    ws = [None] * d if weights is None else list(weights)
    if len(ws) != d:
        raise ValueError(f"weights must hold {d} entries, got {len(ws)}")
    pairs = [_measure(marginals[i], ws[i], f"marginals[{i}]", f"weights[{i}]") for i in range(d)]
    grids = np.meshgrid(*[x for x, _ in pairs], indexing="ij")
    wgrids = np.meshgrid(*[w for _, w in pairs], indexing="ij")
    points = np.stack([g.ravel() for g in grids], axis=1)
    return points, np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1)


def mean_bound(x: Any, y: Any, x_weights: Any = None, y_weights: Any = None) -> float:
    r"""The lower bound of Theorem 2.2: :math:`\|\mathbb{E}_\mu - \mathbb{E}_\nu\| \le W_1(\mu,\nu) \le W_2(\mu,\nu)`.

    ``x`` and ``y`` are atoms of shape ``[n]`` (1-D, as in the paper) or ``[n, d]`` (Euclidean norm of
    the mean difference; the bound holds in any dimension).
    """
    xs, a = _measure(x, x_weights, "x", "x_weights", ndims=(1, 2))
    ys, b = _measure(y, y_weights, "y", "y_weights", ndims=(1, 2))
    if xs.shape[1:] != ys.shape[1:]:
        raise ValueError(f"x and y must have atoms of the same dimension, got shapes {xs.shape} and {ys.shape}")
    return float(np.linalg.norm(np.atleast_1d(a @ xs - b @ ys)))
