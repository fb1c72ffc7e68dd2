r"""Exact moments of the straight-through estimators, by enumeration of the states and quadrature over the noise.

Every estimator of the straight-through family evaluates ``f`` at the exact sample :math:`D` and puts a
Jacobian :math:`A` in the backward pass (:mod:`pwgf.straight_through`, :func:`pwgf.projection.st`):
:math:`\hat g = \frac1n\sum_i A_i^\top\nabla f(D_i)` in the logits :math:`\ell`. For a product of
Bernoulli coordinates :math:`A` is diagonal, one weight :math:`w_k` per coordinate that depends on
:math:`\ell_k`, on :math:`D_k` and, for the Gumbel estimators, on the noise given :math:`D_k`. Hence, for
one sample,

.. math::
    \E[\hat g_k] = \sum_z p_\theta(z)\,\E[w_k \mid z_k]\,\partial_k f(z), \qquad
    \E[\hat g_k^2] = \sum_z p_\theta(z)\,\E[w_k^2 \mid z_k]\,(\partial_k f(z))^2,

two sums over the :math:`2^d` states once the conditional moments of the weight are known; with
:math:`n` samples the variance is divided by :math:`n`. With :math:`p = \sigma(\ell)`,
:math:`\sigma'(x) = \sigma(x)\sigma(-x)` and the options of :func:`pwgf.estimators.options`:

=====================  ===========================================================================  =================================
estimator              :math:`\E[w \mid D]`                                                          :math:`\E[w^2 \mid D]`
=====================  ===========================================================================  =================================
``st``, ``pwgf_st``    :math:`p(1-p)`                                                                its square
``reinmax``            :math:`2\pi(1-\pi) - \tfrac12 p(1-p)`, :math:`\pi = \tfrac12(\sigma(\ell/\tau) + D)`  its square
``gapped_st``          :math:`\sigma'(\tilde\ell/\tau)/\tau`, :math:`\tilde\ell = \max(\ell,\kappa)` if :math:`D=1`, else :math:`\min(\ell,-\kappa)`  its square
``st_gumbel_softmax``  :math:`m_1(D) = \E[\sigma'(X/\tau)/\tau \mid D]`, :math:`X = \ell + L`           :math:`m_2(D) = \E[(\sigma'(X/\tau)/\tau)^2 \mid D]`
``gumbel_rao``         :math:`m_1(D)`                                                                :math:`m_1^2 + (m_2 - m_1^2)/K`
=====================  ===========================================================================  =================================

The Gumbel moments are one-dimensional integrals over the logistic noise :math:`L` given
:math:`D = \ind[X > 0]`. With :math:`y = X/\tau`, then :math:`v = \sigma(y)`, and :math:`\rho(x) =
\sigma'(x)` the logistic density,

.. math::
    P(D{=}1)\, m_1(1) = \int_{1/2}^{1} \rho(\tau\operatorname{logit} v - \ell)\,\dd v, \qquad
    P(D{=}1)\, m_2(1) = \frac1\tau\int_{1/2}^{1} \rho(\tau\operatorname{logit} v - \ell)\, v(1-v)\,\dd v,

and over :math:`(0, \tfrac12)` for :math:`D = 0`. The integrands are bounded by :math:`\tfrac14` (divided
by :math:`P(D)` in log space, so saturated logits keep their relative accuracy), and adaptive
Gauss-Kronrod quadrature (:func:`scipy.integrate.quad_vec`, all coordinates at once) reaches an
absolute error below :data:`QUADRATURE_TOLERANCE` times the largest moment for every :math:`\tau`.

For a categorical coordinate :math:`A` is the :math:`K\times K` matrix of :mod:`pwgf.straight_through`'s
table, deterministic given :math:`D` for ``st``, ``pwgf_st``, ``reinmax`` and ``gapped_st``; :func:`mean`
sums it over the :math:`K^d` states. (The Gumbel estimators would need :math:`(K-1)`-dimensional
integrals there.)

The formulas are written here from the papers' definitions, independently of the estimators' code,
so that the estimators can be checked against them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import integrate, special

from pwgf import estimators, projection
from pwgf._validate import check_choice, check_positive, check_positive_int
from pwgf.discrete import Discrete
from pwgf.families import resolve_leaf

__all__ = ["BERNOULLI", "CATEGORICAL", "QUADRATURE_TOLERANCE", "weight_moments", "mean", "variance", "Edges", "edges"]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: Estimators whose moments are available for products of Bernoulli coordinates.
BERNOULLI: tuple[str, ...] = ("st", "pwgf_st", "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax")
#: Estimators whose mean is available for products of categorical coordinates (a Jacobian deterministic given the sample).
CATEGORICAL: tuple[str, ...] = ("st", "pwgf_st", "gapped_st", "reinmax")
#: Relative tolerance of the Gumbel quadratures (of the largest conditional moment).
QUADRATURE_TOLERANCE: float = 1e-12


def _options(name: str, allowed: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    """The estimator's options with the library's defaults filled in; ValueError for unknown names or options."""
    check_choice(name, allowed, "estimator")
    defaults = estimators.options(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for estimator {name!r}; valid: {', '.join(sorted(defaults)) or 'none'}")
    merged = {**defaults, **options}
    for key in ("temperature", "gap"):
        if key in merged:
            check_positive(float(merged[key]), key)
    if "n_conditional" in merged:
        check_positive_int(merged["n_conditional"], "n_conditional")
    return merged


def _sigma_prime(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x) * torch.sigmoid(-x)


@functools.lru_cache(maxsize=512)
def _gumbel_quadrature(ell: tuple[float, ...], tau: float) -> np.ndarray:
    """``[D, moment, coordinate]`` array of :math:`m_1` and :math:`m_2`; cached, since a chapter asks for the same logits and temperature many times."""
    ell_np = np.asarray(ell, dtype=np.float64)
    # log P(D = 0) and log P(D = 1), per coordinate
    log_mass = np.stack([-np.logaddexp(0.0, ell_np), -np.logaddexp(0.0, -ell_np)])

    def integrand(v: float, side: int) -> np.ndarray:
        y = np.abs(tau * special.logit(v) - ell_np)
        conditional_density = np.exp(-y - 2 * np.log1p(np.exp(-y)) - log_mass[side])
        return np.stack([conditional_density, conditional_density * v * (1 - v) / tau])

    scale = max(1.0, 1.0 / tau)
    bounds = [(0.0, 0.5), (0.5, 1.0)]
    return np.stack([
        integrate.quad_vec(lambda v, side=side: integrand(v, side), lo, hi, epsabs=QUADRATURE_TOLERANCE * scale / 4, epsrel=QUADRATURE_TOLERANCE, norm="max")[0]
        for side, (lo, hi) in enumerate(bounds)
    ])


def _gumbel_moments(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`m_1(D)` and :math:`m_2(D)` for :math:`D = 0, 1`, each ``[2, *logits.shape]``, by quadrature (module docstring)."""
    ell = tuple(logits.detach().cpu().to(torch.float64).reshape(-1).tolist())
    stacked = torch.tensor(_gumbel_quadrature(ell, float(temperature)), dtype=torch.float64)  # a copy of the cached [D, moment, C]
    shape = (2, *logits.shape)
    return stacked[:, 0].reshape(shape).to(logits.dtype), stacked[:, 1].reshape(shape).to(logits.dtype)


def weight_moments(name: str, logits: torch.Tensor, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Conditional moments :math:`\E[w \mid D]` and :math:`\E[w^2 \mid D]` of a Bernoulli estimator's logit weight (module table).

    ``logits`` has any shape; each result is ``[2, *logits.shape]``, row :math:`D = 0` then :math:`D = 1`.
    ``options`` are the estimator's (:func:`pwgf.estimators.options`), with the same defaults.
    """
    opts = _options(name, BERNOULLI, options)
    ell = logits.detach()
    p = torch.sigmoid(ell)
    hard = torch.tensor([0.0, 1.0], dtype=ell.dtype).reshape(2, *[1] * ell.ndim)
    if name in ("st", "pwgf_st"):
        first = (p * (1 - p)).expand(2, *ell.shape)
    elif name == "reinmax":
        pi = 0.5 * (torch.sigmoid(ell / opts["temperature"]) + hard)
        first = 2 * pi * (1 - pi) - 0.5 * p * (1 - p)
    elif name == "gapped_st":
        tau, gap = opts["temperature"], opts["gap"]
        moved = torch.where(hard > 0, ell.clamp(min=gap), ell.clamp(max=-gap))
        first = _sigma_prime(moved / tau) / tau
    else:
        first, second = _gumbel_moments(ell, opts["temperature"])
        if name == "gumbel_rao":
            second = first**2 + (second - first**2) / opts["n_conditional"]
        return first, second
    return first, first**2


def _jacobians(name: str, logits: torch.Tensor, states: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    r"""The categorical Jacobian :math:`A(D)` at every state: ``states`` ``[S, *coords, K]`` -> ``[S, *coords, K, K]``."""

    def jac(v: torch.Tensor) -> torch.Tensor:  # diag(v) - v v^T
        return torch.diag_embed(v) - v.unsqueeze(-1) * v.unsqueeze(-2)

    p = torch.softmax(logits, -1).expand(states.shape)
    if name in ("st", "pwgf_st"):
        return jac(p)
    tau = opts["temperature"]
    if name == "reinmax":
        return 2 * jac(0.5 * (torch.softmax(logits / tau, -1) + states)) - 0.5 * jac(p)
    # Gapped ST: the sampled category is raised to the largest logit, the others lowered to at most that minus the gap.
    top = logits.max(-1, keepdim=True).values
    moved = torch.where(states > 0, top, torch.minimum(logits, top - opts["gap"]))
    return jac(torch.softmax(moved / tau, -1)) / tau


@dataclass(frozen=True)
class _Enumeration:
    q: Discrete
    leaf: torch.Tensor
    logits: torch.Tensor  # differentiable in the leaf
    states: torch.Tensor  # [S, *event]
    weights: torch.Tensor  # p(z) broadcastable against states
    slopes: torch.Tensor  # grad f at every state, [S, *event]


def _enumerate(dist: Any, args: tuple[Any, ...]) -> _Enumeration:
    q, leaf, (f,) = resolve_leaf(dist, args, ("f",))
    if q.kind not in ("bernoulli", "categorical"):
        raise ValueError(f"the straight-through moments apply to bernoulli and categorical distributions, got {q.kind}")
    if q.batch_shape:
        raise ValueError(f"the moments take a single example (batch_shape []), got batch_shape {tuple(q.batch_shape)}")
    states = q.support()
    with torch.no_grad():
        weights = q.log_prob(states).exp()
    _, slopes = projection.costs_and_grad(f, states)
    weights = weights.reshape(-1, *[1] * (states.ndim - 1))
    with torch.enable_grad():
        logits = q.logits
    return _Enumeration(q, leaf, logits, states, weights, slopes)


def _to_parameter(e: _Enumeration, in_logits: torch.Tensor) -> torch.Tensor:
    """A gradient given in the logits, carried to the distribution's parameter by the chain rule."""
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(e.logits, e.leaf, in_logits, retain_graph=True)
    return grad


def mean(name: str, dist: Any, *args: Any, **options: Any) -> torch.Tensor:
    r"""The exact mean :math:`\E[\hat g]` of estimator ``name`` (any number of samples), with the shape of the parameter: ``mean(name, dist, f)`` or ``mean(name, family, theta, f)``.

    By enumeration of every state of one example (float64 for float64 parameters); Bernoulli: every
    estimator of :data:`BERNOULLI` (the Gumbel ones with quadrature), categorical: :data:`CATEGORICAL`.
    The gradient is taken with respect to the parameter as given (logits or probabilities), as
    :func:`pwgf.estimators.estimate` does.
    """
    e = _enumerate(dist, args)
    if e.q.kind == "bernoulli":
        first, _ = weight_moments(name, e.logits, **options)
        per_state = torch.where(e.states > 0, first[1], first[0]) * e.slopes
    else:
        opts = _options(name, CATEGORICAL, options)
        per_state = (_jacobians(name, e.logits.detach(), e.states, opts) @ e.slopes.unsqueeze(-1)).squeeze(-1)
    return _to_parameter(e, (e.weights * per_state).sum(0))


def variance(name: str, dist: Any, *args: Any, n_samples: int = 1, **options: Any) -> torch.Tensor:
    r"""The exact variance of each coordinate of the ``n_samples``-sample estimate of a Bernoulli estimator: ``variance(name, dist, f)`` or the family form.

    :math:`\Var(\hat g_k) = \frac1n\bigl(\sum_z p_\theta(z)\E[w_k^2 \mid z_k](\partial_k f(z))^2 - \E[\hat g_k]^2\bigr)`
    in the logits, times :math:`(\partial\ell_k/\partial\theta_k)^2` for a probability parameter.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    e = _enumerate(dist, args)
    if e.q.kind != "bernoulli":
        raise ValueError("variance is available for Bernoulli distributions only (categorical Jacobians are matrices)")
    first, second = weight_moments(name, e.logits, **options)
    mean_logits = (e.weights * torch.where(e.states > 0, first[1], first[0]) * e.slopes).sum(0)
    square = (e.weights * torch.where(e.states > 0, second[1], second[0]) * e.slopes**2).sum(0)
    scale = _to_parameter(e, torch.ones_like(e.logits))  # d logit_k / d theta_k: the chain rule is diagonal
    return (square - mean_logits**2) / n_samples * scale**2


@dataclass(frozen=True)
class Edges:
    r"""The data of a cost on the edges of the cube :math:`\{0,1\}^d`: for coordinate :math:`k` (column) and each state of the others (row),

    ``difference`` :math:`f(z_{k\leftarrow1}) - f(z_{k\leftarrow0})`, ``slope_at_0`` :math:`\partial_k f(z_{k\leftarrow0})`
    and ``slope_at_1`` :math:`\partial_k f(z_{k\leftarrow1})`, each ``[2**(d-1), d]``. Rows list the states of the
    other coordinates in increasing binary order (the first coordinate most significant).
    """

    difference: torch.Tensor
    slope_at_0: torch.Tensor
    slope_at_1: torch.Tensor

    @property
    def euler_error(self) -> torch.Tensor:
        r""":math:`\max(|\partial_k f(z_{k\leftarrow0}) - \Delta|, |\partial_k f(z_{k\leftarrow1}) - \Delta|)` per edge: zero iff the forward Euler rule is exact from both ends."""
        return torch.maximum((self.slope_at_0 - self.difference).abs(), (self.slope_at_1 - self.difference).abs())

    @property
    def trapezoid_error(self) -> torch.Tensor:
        r""":math:`\tfrac12(\partial_k f(z_{k\leftarrow0}) + \partial_k f(z_{k\leftarrow1})) - \Delta` per edge: zero iff the trapezoid rule is exact."""
        return 0.5 * (self.slope_at_0 + self.slope_at_1) - self.difference

    @property
    def size(self) -> torch.Tensor:
        """The largest absolute value of the edge data: zero iff the cost is constant on the states with zero slopes there."""
        return torch.stack([self.difference.abs().max(), self.slope_at_0.abs().max(), self.slope_at_1.abs().max()]).max()


def edges(f: Cost, d: int, dtype: torch.dtype = torch.float64) -> Edges:
    r"""The edge data (:class:`Edges`) of a cost ``f`` on :math:`\{0,1\}^d`, from one evaluation of ``f`` and :math:`\nabla f` at the :math:`2^d` states."""
    d = check_positive_int(d, "d")
    if d > 20:
        raise ValueError(f"d must be at most 20 (2**d states are enumerated), got {d}")
    index = torch.arange(2**d)
    bits = d - 1 - torch.arange(d)  # the bit of coordinate k in a state's index
    states = ((index[:, None] >> bits) & 1).to(dtype)
    values, slopes = projection.costs_and_grad(f, states)
    low = ((index[None, :] >> bits[:, None]) & 1) == 0  # [d, S]: state has z_k = 0
    lower = index.expand(d, -1)[low].reshape(d, -1).T  # [S/2, d]
    upper = lower + (1 << bits)
    column = torch.arange(d)
    values = values.detach()
    return Edges(values[upper] - values[lower], slopes[lower, column], slopes[upper, column])
