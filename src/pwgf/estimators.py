r"""Gradient estimators for :math:`\nabla_\theta L(\theta)`, :math:`L(\theta) = \E_{z\sim p_\theta}[f(z)]` (the paper's Eq. 1).

**The model-facing contract.** Every estimator is a *surrogate builder*:

.. code-block:: python

    loss = surrogate(name, dist, f, n_samples, generator=None, **options)   # shape dist.batch_shape
    loss.mean().backward()

``dist`` is a ``torch.distributions`` ``Bernoulli``, ``OneHotCategorical`` or ``Poisson``, optionally
wrapped in ``Independent``, with any batch shape and parameterized by ``logits`` or ``probs``
(``rate`` for Poisson) that may be the output of a network (:mod:`pwgf.discrete`). ``f`` maps samples
``[n, *batch_shape, *event_shape]`` to costs ``[n, *batch_shape]``; it must treat the examples (batch
elements) independently, as a per-example decoder does. For each example the result's

(i) gradient with respect to the tensors that parameterize ``dist`` (and through them the network that
    produced them) is that example's estimate of :math:`\nabla_\theta \E f`;
(ii) gradient with respect to any parameter of ``f`` is the sample mean of that example's
     :math:`\nabla f` at its samples;
(iii) value is the Monte Carlo estimate of :math:`\E f` (zero-valued terms such as
      :math:`\log p - \operatorname{stop}(\log p)` carry the gradients).

Baselines and control variates are per example: leave-one-out over that example's ``n`` draws,
MuProp's Taylor expansion at that example's mean, REBAR/RELAX's relaxations of that example's noise.
Every estimator keeps its meaning whatever the parameterization: ST's Jacobian is
:math:`\partial z/\partial p = I` in the mean, so its gradient with respect to a Bernoulli logit is
:math:`\nabla f(z)\,p(1-p)`; the relaxations work with logits, read from ``dist`` directly, so that a
logit of 40 in float32 (where :math:`\sigma` rounds to 1) still gives finite gradients.

**The family form** ``surrogate(name, family, theta, f, n_samples, ...)``, used by the theory
chapters, is the same code path on :func:`pwgf.families.distribution` (one example, ``theta`` its
parameter, ``f`` mapping ``[n, d]`` to ``[n]``). :func:`estimate`, :func:`estimates`, :func:`measure`
and :func:`tune` take either form.

==========================  ===========================  =========  ==========================================
name                        families                     unbiased   reference
==========================  ===========================  =========  ==========================================
``exact``                   all three                    exact      enumeration, :mod:`pwgf.exact`
``reinforce``               all three                    yes        :cite:`williams1992simple,kool2019buy`
``st``                      all three                    no         :cite:`bengio2013estimating`
``pwgf_st``                 all three                    no         :cite:`cheng2018straight` (Sec. 2.1)
``pwgf_mmd``                all three                    no         the book's Gauss-Newton form of Sec. 2.2
``pwgf_mmd_argmin``         all three                    no         :cite:`cheng2018straight` (Sec. 2.2)
``muprop``                  all three                    yes        :cite:`gu2016muprop`
``gumbel_softmax``          bernoulli, categorical       no         :cite:`jang2017categorical,maddison2017concrete`
``st_gumbel_softmax``       bernoulli, categorical       no         :cite:`jang2017categorical`
``gumbel_rao``              bernoulli, categorical       no         :cite:`paulus2021raoblackwellizing`
``gapped_st``               bernoulli, categorical       no         :cite:`fan2022training`
``reinmax``                 bernoulli, categorical       no         :cite:`liu2023bridging`
``arm``                     bernoulli                    yes        :cite:`yin2019arm`
``disarm``                  bernoulli                    yes        :cite:`dong2020disarm`
``rebar``                   bernoulli, categorical       yes        :cite:`tucker2017rebar`
``relax``                   bernoulli, categorical       yes        :cite:`grathwohl2018relax`
==========================  ===========================  =========  ==========================================

**Layered latents.** A cost may itself sample further stochastic layers: ``f(z1)`` builds the
distribution of the next layer from ``z1`` (batch shape ``[n, *batch_shape]``) and returns
``surrogate(name2, q2, f2, 1)``. Its value is an unbiased single-sample estimate of
:math:`\E_{z_2}[f_2 \mid z_1]`, its gradient in the parameters of ``q2`` and ``f2`` is the inner
estimator's, and its gradient in a real-valued ``z1`` is the inner estimator's estimate of
:math:`\nabla_{z_1}\E[f_2\mid z_1]` plus the pathwise term. So the outer estimator sees a cost that is
an unbiased estimate of the exact conditional cost, made with noise independent of its own: the
score-function estimators (REINFORCE, ARM, DisARM) stay unbiased because they use ``f``'s values only;
MuProp and REBAR/RELAX stay unbiased when the inner estimator is unbiased, because their control
variates enter twice with matching expectations (they need ``f`` and its gradient at real-valued
points, which a linear next-layer map provides); ST, the relaxations and the pWGF estimators were
biased already and stay so. Every estimator's gradient in the inner layer's parameters is the sample
mean of the inner estimates, by contract (ii).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributions as D

from pwgf import exact as enumeration
from pwgf import projection, straight_through
from pwgf._validate import check_choice, check_positive, check_positive_int
from pwgf.discrete import POISSON_TAIL, CostError, Discrete, as_discrete
from pwgf.families import FAMILIES, resolve, resolve_leaf

__all__ = [
    "ESTIMATORS", "UNBIASED", "MIN_SAMPLES", "REBAR_ETA", "REBAR_TEMPERATURE", "SE_FLOOR", "Cost", "Distribution",
    "ENTRY_POINTS", "surrogate", "estimate", "estimates", "options", "measure", "tune",
    "exact", "reinforce", "st", "pwgf_st", "pwgf_mmd", "pwgf_mmd_argmin", "muprop", "gumbel_softmax",
    "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "arm", "disarm", "rebar", "relax",
]

Cost = Callable[[torch.Tensor], torch.Tensor]


#: ``builder(q, f, n_samples, *, generator=None, **options)``: a :class:`~pwgf.discrete.Discrete` view in, the surrogate out.
SurrogateBuilder = Callable[..., torch.Tensor]


#: REBAR's initial control-variate scale and temperature (Tucker et al. 2017 start from eta = 1, lambda = 0.5).
REBAR_ETA: float = 1.0
REBAR_TEMPERATURE: float = 0.5
#: :func:`measure` leaves out of ``z_max`` the coordinates whose standard error is at most this fraction of the largest one.
SE_FLOOR: float = 1e-6


# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------


def _score(weights: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    r"""Zero-valued :math:`\frac1n\sum_i w_i(\log p_i - \operatorname{stop}\log p_i)` per example: its gradient is :math:`\frac1n\sum_i w_i\nabla\log p_i`.

    ``weights`` and ``logp`` are ``[n, *batch_shape]``; ``weights`` must not depend on the distribution's
    parameter; they may depend on other parameters (a learned control variate), which then receive
    exactly zero gradient from this term.
    """
    return (weights * (logp - logp.detach())).mean(0)


def _pathwise(q: Discrete, c: Cost, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Values :math:`c(s_i)`, slopes :math:`\nabla_s c(s_i)` and a zero-valued per-example term whose gradient is :math:`\frac1n\sum_i \nabla_s c(s_i)\,\partial s_i/\partial\theta`.

    The slope :math:`\nabla_s c` is taken at a detached copy of ``s`` with ``create_graph=True``, and the
    term is :math:`\frac1n\sum_i \nabla_s c(s_i)\cdot(s_i - \operatorname{stop} s_i)`: parameters of
    ``c`` get exactly zero gradient from it (contract (ii)), yet a training loop that differentiates the
    estimate itself (RELAX's variance objective) still sees how the slope depends on them.
    """
    point = s.detach().requires_grad_(True)
    with torch.enable_grad():
        values = q.relaxed_costs(c, point)
        if values.requires_grad:
            (slope,) = torch.autograd.grad(values.sum(), point, create_graph=True, materialize_grads=True)
        else:
            slope = torch.zeros_like(point)
    term = q.sum_event(slope * (s - s.detach())).mean(0)
    return values, slope, term


def _leave_one_out(values: torch.Tensor) -> torch.Tensor:
    r"""Baselines :math:`b_i = \frac{1}{n-1}\sum_{j\ne i} v_j` over the draws (axis 0) of each example (Kool et al. 2019); needs :math:`n \ge 2`."""
    return (values.sum(0) - values) / (values.shape[0] - 1)


# --------------------------------------------------------------------------------------------------
# surrogate builders
# --------------------------------------------------------------------------------------------------


def _exact(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The exact expectation :math:`\sum_z p_\theta(z) f(z)` per example (:func:`pwgf.exact.expectation_of`); ``n_samples`` and ``generator`` are unused.

    Its gradients are exact in both the parameter and the parameters of ``f``; the cost is one
    evaluation of ``f`` per state of one example's (truncated, for Poisson) support, for all examples at once.
    """
    return enumeration.expectation_of(q, f)


def _reinforce(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Score function with the leave-one-out baseline :cite:`williams1992simple,kool2019buy`.

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \bigl(f(z_i) - b_i\bigr)\nabla_\theta\log p_\theta(z_i)
        = \frac{1}{n-1}\sum_{i=1}^n \bigl(f(z_i) - \bar f\bigr)\nabla_\theta\log p_\theta(z_i),
        \qquad b_i = \frac{1}{n-1}\sum_{j\ne i} f(z_j).

    Unbiased because :math:`b_i` is independent of :math:`z_i` and :math:`\E\nabla\log p_\theta = 0`.
    Needs :math:`n \ge 2`.
    """
    z = q.sample(n_samples, generator)
    values = q.costs(f, z)
    centred = values.detach() - _leave_one_out(values.detach())
    return values.mean(0) + _score(centred, q.log_prob(z))


def _muprop(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""MuProp :cite:`gu2016muprop`: a first-order Taylor control variate around the mean :math:`\bar z = \E_{p_\theta}[z]`.

    With :math:`h(z) = f(\bar z) + \nabla f(\bar z)^\top (z - \bar z)`, whose expectation is
    :math:`f(\bar z)` and whose gradient is analytic, :math:`\nabla_\theta \E h = J_{\bar z}(\theta)^\top\nabla f(\bar z)`:

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \bigl(f(z_i) - h(z_i) - b_i\bigr)\nabla_\theta\log p_\theta(z_i)
        + J_{\bar z}(\theta)^\top \nabla f(\bar z),

    where :math:`b_i` is the leave-one-out mean of the residuals :math:`f(z_j) - h(z_j)` for
    :math:`n\ge2` (the multi-sample form of MuProp's additional baseline) and 0 for :math:`n = 1`.
    :math:`\bar z` is ``p`` (Bernoulli), ``lambda`` (Poisson) or the probability vectors (categorical),
    so ``f`` must accept that real-valued point (as a batch of one sample). Unbiased for any
    :math:`\bar z`, since :math:`h` is linear in :math:`z`. Cost: :math:`n + 1` evaluations of ``f`` and
    one gradient of ``f``.
    """
    z = q.sample(n_samples, generator)
    values = q.costs(f, z)
    mean = q.mean.unsqueeze(0)
    f_mean, slope, analytic = _pathwise(q, f, mean)
    taylor = f_mean.detach() + q.sum_event(slope.detach() * (z - mean.detach()))
    residual = values.detach() - taylor
    if n_samples >= 2:
        residual = residual - _leave_one_out(residual)
    return values.mean(0) + _score(residual, q.log_prob(z)) + analytic


def _antithetic_pair(q: Discrete, n_samples: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""ARM's pair from one logistic draw :math:`L = \operatorname{logit} u`: :math:`b = \ind[u < p] = \ind[L < \ell]`, :math:`\tilde b = \ind[1-u < p] = \ind[-L < \ell]`, and :math:`u`.

    Thresholds are taken in logit space (noise in float64), so both members are exact
    :math:`\Bern(p)` samples even where :math:`p` rounds to 0 or 1 in the parameter's dtype.
    """
    u = q.uniform(n_samples, generator)
    noise = (torch.log(u) - torch.log1p(-u)).to(q.dtype)
    logits = q.logits.detach()
    return (noise < logits).to(q.dtype), (-noise < logits).to(q.dtype), u.to(q.dtype)


def _arm(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Augment-REINFORCE-merge :cite:`yin2019arm` with :math:`n` independent antithetic pairs.

    With logits :math:`\phi` and :math:`u_i \sim \mathcal U(0,1)^d`,

    .. math::
        \hat g_\phi = \frac1n\sum_{i=1}^n \bigl(f(\ind[u_i > 1 - p]) - f(\ind[u_i < p])\bigr)\,(u_i - \tfrac12),

    unbiased for :math:`\nabla_\phi L` (Yin and Zhou 2019, Theorem 1); a ``probs`` parameter receives it
    by the chain rule through :math:`\phi(p)`. Both members of a pair are exact :math:`\Bern(p)` samples.
    Cost: :math:`2n` evaluations of ``f``.
    """
    lower, upper, u = _antithetic_pair(q, n_samples, generator)
    logits = q.logits
    values_upper, values_lower = q.costs(f, upper), q.costs(f, lower)
    weights = q.per_example((values_upper - values_lower).detach()) * (u - 0.5)
    return 0.5 * (values_upper.mean(0) + values_lower.mean(0)) + q.sum_event(weights * (logits - logits.detach())).mean(0)


def _disarm(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""DisARM :cite:`dong2020disarm`: ARM's antithetic pair :math:`b = \ind[u < p]`, :math:`\tilde b = \ind[1 - u < p]`, integrated over :math:`u` given the pair.

    .. math::
        (\hat g_\phi)_k = \frac1n\sum_{i=1}^n \tfrac12\bigl(f(b_i) - f(\tilde b_i)\bigr)
        (-1)^{\tilde b_{ik}}\,\ind[b_{ik} \ne \tilde b_{ik}]\,\sigma(|\phi_k|),

    the conditional expectation of ARM given :math:`(b, \tilde b)`; unbiased and never of higher
    variance than ARM. Cost: :math:`2n` evaluations of ``f``.
    """
    b, b_anti, _ = _antithetic_pair(q, n_samples, generator)
    logits = q.logits
    values, values_anti = q.costs(f, b), q.costs(f, b_anti)
    sign = (1 - 2 * b_anti) * (b != b_anti).to(q.dtype) * torch.sigmoid(logits.detach().abs())
    weights = 0.5 * q.per_example((values - values_anti).detach()) * sign
    return 0.5 * (values.mean(0) + values_anti.mean(0)) + q.sum_event(weights * (logits - logits.detach())).mean(0)


def _control_variate(q: Discrete, f: Cost, eta: float | torch.Tensor, temperature: float | torch.Tensor, control: Cost | None) -> Cost:
    r""":math:`c(x) = \eta\, f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))` of the perturbed logits :math:`x`, with :math:`\sigma_\lambda` the tempered sigmoid / softmax."""

    # A fixed eta of 0 (RELAX with its learned control alone) needs no evaluation of f at relaxed points.
    uses_f = isinstance(eta, torch.Tensor) or eta != 0

    def c(x: torch.Tensor) -> torch.Tensor:
        soft = torch.sigmoid(x / temperature) if q.kind == "bernoulli" else torch.softmax(x / temperature, dim=-1)
        if control is None:
            return eta * q.costs(f, soft) if uses_f else torch.zeros(soft.shape[: soft.ndim - len(q.event_shape)], dtype=soft.dtype)
        value = q.costs(control, soft)
        return eta * q.costs(f, soft) + value if uses_f else value

    return c


def _relax(
    q: Discrete,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eta: float | torch.Tensor = REBAR_ETA,
    temperature: float | torch.Tensor = REBAR_TEMPERATURE,
    control: Cost | None = None,
) -> torch.Tensor:
    r"""RELAX :cite:`grathwohl2018relax` with the control variate :math:`c(x) = \eta f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))`.

    Draw the perturbed logits :math:`x = \ell + \text{noise}` (logistic for Bernoulli, Gumbel for
    categorical), the sample :math:`b = H(x)` (threshold / argmax), and :math:`\tilde x \sim p(x \mid b)`
    reparameterized (:func:`pwgf.straight_through.conditional_noise`). Then

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \Bigl[\bigl(f(b_i) - c(\tilde x_i)\bigr)\nabla_\theta\log p_\theta(b_i)
        + \nabla_\theta c(x_i) - \nabla_\theta c(\tilde x_i)\Bigr],

    unbiased for every :math:`c` because :math:`\E[\nabla_\theta c(x)] = \nabla_\theta\E[c(\tilde x)]
    = \E[c(\tilde x)\nabla_\theta\log p_\theta(b)] + \E[\nabla_\theta c(\tilde x)]`.

    ``control`` is the learned part :math:`r`, any differentiable callable from relaxed samples
    ``[n, *batch_shape, *event_shape]`` to ``[n, *batch_shape]``; ``eta`` and ``temperature`` may be
    tensors that require grad. In a single call they are fixed: with ``control=None`` RELAX is REBAR at
    the given :math:`(\eta,\lambda)`. The surrogate gives :math:`\eta`, :math:`\lambda` and the
    parameters of :math:`r` exactly zero gradient; RELAX trains them on the variance of the whole
    batch, by differentiating the estimate itself, with respect to them alone: in a training loop with
    :class:`pwgf.control_variates.RelaxControl`, at a fixed distribution with :func:`tune`. Cost: :math:`3n` evaluations of ``f`` (plus :math:`2n` of ``control``)
    and :math:`2n` gradients.
    """
    check_positive(temperature if isinstance(temperature, torch.Tensor) else float(temperature), "temperature")
    logits = q.logits
    noise = q.noise(n_samples, generator)
    x = logits + noise
    b = q.threshold(noise)
    x_cond = logits + straight_through.conditional_noise(q, b, q.uniform(n_samples, generator), reparameterized=True)
    c = _control_variate(q, f, eta, temperature, control)
    values = q.costs(f, b)
    _, _, relaxed = _pathwise(q, c, x)
    c_cond, _, relaxed_cond = _pathwise(q, c, x_cond)
    return values.mean(0) + _score(values.detach() - c_cond, q.log_prob(b)) + relaxed - relaxed_cond


def _rebar(
    q: Discrete,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eta: float | torch.Tensor = REBAR_ETA,
    temperature: float | torch.Tensor = REBAR_TEMPERATURE,
) -> torch.Tensor:
    r"""REBAR :cite:`tucker2017rebar`: :func:`RELAX <_relax>` with the control variate :math:`c(x) = \eta f(\sigma_\lambda(x))` alone.

    Defaults :math:`\eta = 1`, :math:`\lambda = 0.5`; Tucker et al. adapt both online by minimizing the
    variance (pass tensors and train them as described for ``relax``).
    """
    return _relax(q, f, n_samples, generator=generator, eta=eta, temperature=temperature)


# --------------------------------------------------------------------------------------------------
# registry and entry points
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    builder: SurrogateBuilder
    kinds: frozenset[str]
    unbiased: bool
    min_samples: int = 1


_ALL = frozenset(FAMILIES)
_RELAXABLE = frozenset({"bernoulli", "categorical"})

_REGISTRY: dict[str, _Spec] = {
    "exact": _Spec(_exact, _ALL, True),
    "reinforce": _Spec(_reinforce, _ALL, True, min_samples=2),
    "st": _Spec(projection.st, _ALL, False),
    "pwgf_st": _Spec(projection.pwgf_st, _ALL, False),
    "pwgf_mmd": _Spec(projection.pwgf_mmd, _ALL, False),
    "pwgf_mmd_argmin": _Spec(projection.pwgf_mmd_argmin, _ALL, False),
    "muprop": _Spec(_muprop, _ALL, True),
    "gumbel_softmax": _Spec(straight_through.gumbel_softmax, _RELAXABLE, False),
    "st_gumbel_softmax": _Spec(straight_through.st_gumbel_softmax, _RELAXABLE, False),
    "gumbel_rao": _Spec(straight_through.gumbel_rao, _RELAXABLE, False),
    "gapped_st": _Spec(straight_through.gapped_st, _RELAXABLE, False),
    "reinmax": _Spec(straight_through.reinmax, _RELAXABLE, False),
    "arm": _Spec(_arm, frozenset({"bernoulli"}), True),
    "disarm": _Spec(_disarm, frozenset({"bernoulli"}), True),
    "rebar": _Spec(_rebar, _RELAXABLE, True),
    "relax": _Spec(_relax, _RELAXABLE, True),
}

#: Estimator name -> the families (kinds of distribution) it applies to.
ESTIMATORS: dict[str, frozenset[str]] = {name: spec.kinds for name, spec in _REGISTRY.items()}
#: The estimators whose expectation is exactly :math:`\nabla_\theta L(\theta)` (``exact`` is deterministic).
UNBIASED: frozenset[str] = frozenset(name for name, spec in _REGISTRY.items() if spec.unbiased)
#: The fewest samples per example each estimator needs (REINFORCE's leave-one-out baseline needs two).
MIN_SAMPLES: dict[str, int] = {name: spec.min_samples for name, spec in _REGISTRY.items()}


# --------------------------------------------------------------------------------------------------
# one typed entry point per estimator (each docstring: the builder's math, then the options)
# --------------------------------------------------------------------------------------------------

Generator = torch.Generator | None
Temperature = float | torch.Tensor
#: A ``torch.distributions`` distribution the estimators accept (:mod:`pwgf.discrete`), or its validated view.
Distribution = D.Distribution | Discrete


def _entry(name: str, dist: Distribution, f: Cost, n_samples: int, generator: Generator, **opts: Any) -> torch.Tensor:
    return _run(name, dist if isinstance(dist, Discrete) else as_discrete(dist), f, n_samples, generator, opts)


def exact(dist: Distribution, f: Cost, n_samples: int = 1, *, generator: Generator = None) -> torch.Tensor:
    """Options: none. ``n_samples`` and ``generator`` are accepted for a uniform signature and unused;
    ``dist`` must have a support small enough to enumerate (:meth:`pwgf.discrete.Discrete.support`).
    """
    return _entry("exact", dist, f, n_samples, generator)


def reinforce(dist: Distribution, f: Cost, n_samples: int, *, generator: Generator = None) -> torch.Tensor:
    """Options: none; ``n_samples`` must be at least 2 (the leave-one-out baseline). ``generator`` seeds the draws."""
    return _entry("reinforce", dist, f, n_samples, generator)


def st(dist: Distribution, f: Cost, n_samples: int, *, generator: Generator = None) -> torch.Tensor:
    """Options: none. ``generator`` seeds the draws."""
    return _entry("st", dist, f, n_samples, generator)


def pwgf_st(dist: Distribution, f: Cost, n_samples: int, *, eps: float = 1.0, generator: Generator = None) -> torch.Tensor:
    """Options: ``eps`` (> 0, default 1) is the Wasserstein-gradient-flow step :math:`\\varepsilon`; the estimate
    equals ST's for every ``eps`` up to rounding, which shrinks as ``eps`` grows. ``generator`` seeds the draws.
    """
    return _entry("pwgf_st", dist, f, n_samples, generator, eps=eps)


def pwgf_mmd(
    dist: Distribution,
    f: Cost,
    n_samples: int,
    *,
    eps: float = projection.DEFAULT_EPS_MMD,
    bandwidth: float | torch.Tensor | str = "median",
    tail: float = POISSON_TAIL,
    generator: Generator = None,
) -> torch.Tensor:
    """Options: ``eps`` (> 0) is the flow step :math:`\\varepsilon` in lattice units per unit of :math:`\\nabla f`;
    ``bandwidth`` the RBF width :math:`h` (a positive number, a tensor broadcastable to the coordinates, or
    ``"median"``: the median heuristic per coordinate, floored at the lattice spacing); ``tail`` the
    probability mass a truncated Poisson lattice may leave out per coordinate. ``generator`` seeds the draws.
    """
    return _entry("pwgf_mmd", dist, f, n_samples, generator, eps=eps, bandwidth=bandwidth, tail=tail)


def pwgf_mmd_argmin(
    dist: Distribution,
    f: Cost,
    n_samples: int,
    *,
    eps: float = projection.DEFAULT_EPS_MMD,
    bandwidth: float | torch.Tensor | str = "median",
    tail: float = POISSON_TAIL,
    generator: Generator = None,
) -> torch.Tensor:
    """Options: as :func:`pwgf_mmd` (``eps``, ``bandwidth``, ``tail``); an SGD step of size ``eps`` on a
    Bernoulli or Poisson mean parameter is exactly the paper's update. ``generator`` seeds the draws.
    """
    return _entry("pwgf_mmd_argmin", dist, f, n_samples, generator, eps=eps, bandwidth=bandwidth, tail=tail)


def muprop(dist: Distribution, f: Cost, n_samples: int, *, generator: Generator = None) -> torch.Tensor:
    """Options: none. ``f`` must accept the mean :math:`\\bar z` (probabilities or rates) as one sample.
    ``generator`` seeds the draws.
    """
    return _entry("muprop", dist, f, n_samples, generator)


def gumbel_softmax(dist: Distribution, f: Cost, n_samples: int, *, temperature: Temperature = 0.5, generator: Generator = None) -> torch.Tensor:
    """Options: ``temperature`` :math:`\\tau > 0` (default 0.5) of the relaxation: smaller is less biased
    and noisier. ``f`` is evaluated at relaxed points (a ``torch.distributions`` object built inside ``f``
    needs no change; one built outside must have ``validate_args=False``). ``generator`` seeds the noise.
    """
    return _entry("gumbel_softmax", dist, f, n_samples, generator, temperature=temperature)


def st_gumbel_softmax(dist: Distribution, f: Cost, n_samples: int, *, temperature: Temperature = 0.5, generator: Generator = None) -> torch.Tensor:
    """Options: ``temperature`` :math:`\\tau > 0` (default 0.5) of the relaxation whose Jacobian is used.
    ``generator`` seeds the noise.
    """
    return _entry("st_gumbel_softmax", dist, f, n_samples, generator, temperature=temperature)


def gumbel_rao(
    dist: Distribution, f: Cost, n_samples: int, *, temperature: Temperature = 0.5, n_conditional: int = 10, generator: Generator = None
) -> torch.Tensor:
    """Options: ``temperature`` :math:`\\tau > 0` (default 0.5); ``n_conditional`` :math:`K \\ge 1` (default 10),
    the draws of the noise given each sample over which the Jacobian is averaged (cost: :math:`K`
    relaxations, one evaluation of ``f``). ``generator`` seeds the noise.
    """
    return _entry("gumbel_rao", dist, f, n_samples, generator, temperature=temperature, n_conditional=n_conditional)


def gapped_st(
    dist: Distribution, f: Cost, n_samples: int, *, temperature: Temperature = 1.0, gap: float = 1.0, generator: Generator = None
) -> torch.Tensor:
    """Options: ``temperature`` :math:`\\tau > 0` (default 1); ``gap`` :math:`\\kappa > 0` (default 1), the
    margin by which the deterministic perturbation makes the sampled category the largest. ``generator``
    seeds the draws.
    """
    return _entry("gapped_st", dist, f, n_samples, generator, temperature=temperature, gap=gap)


def reinmax(dist: Distribution, f: Cost, n_samples: int, *, temperature: Temperature = 1.0, generator: Generator = None) -> torch.Tensor:
    """Options: ``temperature`` :math:`\\tau > 0` (default 1, where it is exact for quadratic ``f``) of the
    softmax in :math:`\\pi`. ``generator`` seeds the draws.
    """
    return _entry("reinmax", dist, f, n_samples, generator, temperature=temperature)


def arm(dist: Distribution, f: Cost, n_samples: int, *, generator: Generator = None) -> torch.Tensor:
    """Options: none (Bernoulli only). ``generator`` seeds the uniforms of the antithetic pairs."""
    return _entry("arm", dist, f, n_samples, generator)


def disarm(dist: Distribution, f: Cost, n_samples: int, *, generator: Generator = None) -> torch.Tensor:
    """Options: none (Bernoulli only). ``generator`` seeds the uniforms of the antithetic pairs."""
    return _entry("disarm", dist, f, n_samples, generator)


def rebar(
    dist: Distribution, f: Cost, n_samples: int, *, eta: float | torch.Tensor = REBAR_ETA, temperature: Temperature = REBAR_TEMPERATURE,
    generator: Generator = None,
) -> torch.Tensor:
    """Options: ``eta`` :math:`\\eta` (default 1), the scale of the relaxed control variate, and ``temperature``
    :math:`\\lambda > 0` (default 0.5); both may be tensors that require grad, trained on the variance by
    :class:`pwgf.control_variates.RelaxControl`. ``f`` is evaluated at relaxed points (see
    :func:`gumbel_softmax`). ``generator`` seeds the noise.
    """
    return _entry("rebar", dist, f, n_samples, generator, eta=eta, temperature=temperature)


def relax(
    dist: Distribution,
    f: Cost,
    n_samples: int,
    *,
    eta: float | torch.Tensor = REBAR_ETA,
    temperature: Temperature = REBAR_TEMPERATURE,
    control: Cost | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    """Options: ``eta`` :math:`\\eta` (default 1), ``temperature`` :math:`\\lambda > 0` (default 0.5) and
    ``control`` :math:`r` (default None: REBAR), a differentiable map from relaxed samples
    ``[n, *batch_shape, *event_shape]`` to ``[n, *batch_shape]``. Train them in a training loop with
    :class:`pwgf.control_variates.RelaxControl`. ``f`` is evaluated at relaxed points unless ``eta`` is
    a fixed 0 (see :func:`gumbel_softmax`). ``generator`` seeds the noise.
    """
    return _entry("relax", dist, f, n_samples, generator, eta=eta, temperature=temperature, control=control)


#: Estimator name -> its typed entry point.
ENTRY_POINTS: dict[str, Callable[..., torch.Tensor]] = {
    "exact": exact, "reinforce": reinforce, "st": st, "pwgf_st": pwgf_st, "pwgf_mmd": pwgf_mmd,
    "pwgf_mmd_argmin": pwgf_mmd_argmin, "muprop": muprop, "gumbel_softmax": gumbel_softmax,
    "st_gumbel_softmax": st_gumbel_softmax, "gumbel_rao": gumbel_rao, "gapped_st": gapped_st, "reinmax": reinmax,
    "arm": arm, "disarm": disarm, "rebar": rebar, "relax": relax,
}

for _name, _function in ENTRY_POINTS.items():
    # The builder's docstring carries the math and the citations; the entry point's, its options.
    _function.__doc__ = f"{(_REGISTRY[_name].builder.__doc__ or '').strip()}\n\n    {(_function.__doc__ or '').strip()}\n"


def _keyword_options(builder: SurrogateBuilder) -> dict[str, Any]:
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "generator"}


_OPTIONS: dict[str, dict[str, Any]] = {name: _keyword_options(spec.builder) for name, spec in _REGISTRY.items()}


def options(name: str) -> dict[str, Any]:
    """The keyword options of estimator ``name`` and their defaults (``generator`` excluded)."""
    check_choice(name, tuple(_REGISTRY), "estimator")
    return dict(_OPTIONS[name])


def _checked(name: str, q: Discrete, n_samples: Any, generator: Any, opts: dict[str, Any]) -> tuple[_Spec, int]:
    """Validate everything but the cost before any sampling; ValueError naming the argument and the allowed values."""
    spec = _REGISTRY[name]
    if q.kind not in spec.kinds:
        valid = sorted(n for n, s in _REGISTRY.items() if q.kind in s.kinds)
        raise ValueError(
            f"estimator {name!r} does not apply to a {q.kind} distribution (it applies to {', '.join(sorted(spec.kinds))}); "
            f"estimators for {q.kind}: {', '.join(valid)}"
        )
    allowed = _OPTIONS[name]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for estimator {name!r}; valid: {', '.join(sorted(allowed)) or 'none'}")
    n_samples = check_positive_int(n_samples, "n_samples")
    if n_samples < spec.min_samples:
        raise ValueError(f"n_samples must be >= {spec.min_samples} for estimator {name!r}, got {n_samples}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return spec, n_samples


def _run(name: str, q: Discrete, f: Cost, n_samples: Any, generator: Any, opts: dict[str, Any]) -> torch.Tensor:
    """Validate, then build estimator ``name``'s surrogate on the view ``q``; a :class:`~pwgf.discrete.CostError` is raised again naming the estimator."""
    spec, n_samples = _checked(name, q, n_samples, generator, opts)
    try:
        with torch.enable_grad():
            return spec.builder(q, f, n_samples, generator=generator, **opts)
    except CostError as err:
        raise type(err)(f"estimator {name!r}: {err}") from None


def surrogate(name: str, dist: Any, *args: Any, generator: torch.Generator | None = None, **opts: Any) -> torch.Tensor:
    """Surrogate loss of estimator ``name``, shape ``batch_shape``: ``surrogate(name, dist, f, n_samples)`` or ``surrogate(name, family, theta, f, n_samples)``.

    Dispatches to the estimator's own entry point (:func:`reinmax`, :func:`relax`, ...), whose
    docstring gives its options. Per example, its gradient in the distribution's parameter is the
    estimate of :math:`\\nabla_\\theta\\E_{p_\\theta} f`, its gradient in the parameters of ``f`` is the
    sample mean of theirs and its value is a Monte Carlo estimate of :math:`\\E_{p_\\theta} f` (module
    docstring). Unknown names, unsupported distributions, options an estimator does not take and too
    few samples raise ValueError listing the valid values, before any sampling; a cost of the wrong
    shape, or one that returns NaN, raises ValueError naming the estimator at its first evaluation.
    """
    check_choice(name, tuple(_REGISTRY), "estimator")
    q, (f, n_samples) = resolve(dist, args, ("f", "n_samples"), opts)
    if opts.keys() - _OPTIONS[name].keys():  # a ValueError listing the valid options, not the entry point's TypeError
        _checked(name, q, n_samples, generator, opts)
    return ENTRY_POINTS[name](q, f, n_samples, generator=generator, **opts)


def estimate(name: str, dist: Any, *args: Any, generator: torch.Generator | None = None, **opts: Any) -> torch.Tensor:
    """Estimate of :math:`\\nabla_\\theta \\E_{z\\sim p_\\theta}[f(z)]` with the shape of the parameter: ``estimate(name, dist, f, n_samples)`` or ``estimate(name, family, theta, f, n_samples)``.

    ``torch.autograd.grad`` of the summed :func:`surrogate` at a detached leaf copy of the parameter
    (the distribution's ``logits``, ``probs`` or ``rate`` as it was built; ``theta`` in the family
    form), so row ``b`` is example ``b``'s estimate; the parameters of ``f`` receive no gradient.
    """
    check_choice(name, tuple(_REGISTRY), "estimator")
    q, leaf, (f, n_samples) = resolve_leaf(dist, args, ("f", "n_samples"), opts)
    with torch.enable_grad():
        loss = _run(name, q, f, n_samples, generator, opts).sum()
        (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True, materialize_grads=True)
    return grad.detach()


def estimates(name: str, dist: Any, *args: Any, generator: torch.Generator | None = None, **opts: Any) -> torch.Tensor:
    """``replicates`` independent calls of :func:`estimate` stacked into ``[replicates, *parameter.shape]``: ``estimates(name, dist, f, n_samples, replicates)`` or the family form."""
    _, (f, n_samples, replicates) = resolve(dist, args, ("f", "n_samples", "replicates"), opts)
    replicates = check_positive_int(replicates, "replicates")
    head = (dist, *args[:1]) if isinstance(dist, str) else (dist,)
    return torch.stack([estimate(name, *head, f, n_samples, generator=generator, **opts) for _ in range(replicates)])


def measure(
    name: str,
    dist: Any,
    *args: Any,
    reference: torch.Tensor,
    generator: torch.Generator | None = None,
    batched: bool = False,
    **opts: Any,
) -> dict[str, float]:
    r"""Bias, variance, MSE and cost of estimator ``name`` from ``replicates`` independent estimates: ``measure(name, dist, f, n_samples, replicates, reference=g)`` or the family form.

    With estimates :math:`\hat g_1,\dots,\hat g_R` and the exact gradient :math:`g` (``reference``):
    ``bias2`` :math:`=\lVert\bar g - g\rVert^2`, ``variance`` :math:`=\sum_k \widehat{\Var}(\hat g_k)`
    (unbiased sample variances, summed over coordinates), ``mse`` :math:`=\frac1R\sum_r\lVert\hat g_r - g\rVert^2`,
    ``z_max`` :math:`=\max_k |\bar g_k - g_k| / (\hat\sigma_k/\sqrt R)` (the statistic of the
    4-standard-error test; errors within float64 rounding, :math:`10^{-12}(1+|g_k|)`, count as 0, so a
    deterministic estimator scores 0 when exact and ``inf`` when not). The maximum is taken over the
    coordinates the replicates informed, those with :math:`\hat\sigma_k > ` :data:`SE_FLOOR`
    :math:`\cdot\max_j\hat\sigma_j`: a coordinate whose estimates did not vary beyond rounding (a category
    no replicate sampled, whose REINFORCE estimates are exactly the zero-sum of the leave-one-out weights)
    carries no information for a test built on the central limit theorem, and would otherwise divide an
    error of order one by a standard error of order :math:`10^{-20}`. ``uninformed`` counts the
    coordinates so left out (all are kept when none varied, as for a deterministic estimator).
    ``points``: points at which ``f`` is evaluated per estimate (rows of its input batches, all calls
    counted), ``seconds``: wall-clock time per estimate.

    With ``batched=True`` the replicates are drawn in one call, as independent copies of the example
    along a new leading batch axis (``f`` must broadcast over leading axes, as a per-example decoder
    does): far faster, with the same statistics; ``seconds`` is then the time of that call divided by
    ``replicates``, an amortized cost, not the latency of one estimate.
    """
    q, (f, n_samples, replicates) = resolve(dist, args, ("f", "n_samples", "replicates"), opts)
    replicates = check_positive_int(replicates, "replicates")
    if replicates < 2:
        raise ValueError(f"replicates must be >= 2 to estimate a variance, got {replicates}")
    if not isinstance(batched, bool):
        raise ValueError(f"batched must be True or False, got {batched!r}")
    if reference.shape != q.parameter.shape:
        raise ValueError(f"reference must have the shape of the parameter {tuple(q.parameter.shape)}, got {tuple(reference.shape)}")
    points = 0

    def counted(z: torch.Tensor) -> torch.Tensor:
        nonlocal points
        points += z.shape[0]
        return f(z)

    head = (dist, *args[:1]) if isinstance(dist, str) else (dist,)
    start = time.perf_counter()
    if batched:
        draws = estimate(name, q.replicated(replicates).dist, counted, n_samples, generator=generator, **opts)
    else:
        draws = estimates(name, *head, counted, n_samples, replicates, generator=generator, **opts)
    seconds = (time.perf_counter() - start) / replicates
    reference = reference.detach().to(draws.dtype)
    error = draws.mean(0) - reference
    se = draws.std(0) / replicates**0.5
    # A deterministic estimator (exact) has se = 0: its error counts as zero up to float64 rounding.
    rounding = 1e-12 * (1 + reference.abs())
    z = torch.where(error.abs() <= rounding, torch.zeros_like(error), error.abs() / se)
    # Coordinates no replicate informed (a class never sampled: observed spread of rounding size) are left
    # out, unless no coordinate varied at all.
    informed = se > SE_FLOOR * se.max()
    if informed.any():
        z = z[informed]
    return {
        "bias2": float(error.pow(2).sum()),
        "variance": float(draws.var(0).sum()),
        "mse": float((draws - reference).pow(2).flatten(1).sum(1).mean()),
        "z_max": float(z.max()),
        "uninformed": int((~informed).sum()) if informed.any() else 0,
        "points": points if batched else points / replicates,
        "seconds": seconds,
    }


def tune(
    name: str,
    dist: Any,
    *args: Any,
    steps: int = 200,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> list[float]:
    r"""Fit the control-variate ``parameters`` of an estimator by Adam on :math:`\E\lVert\hat g\rVert^2`, as REBAR and RELAX do: ``tune(name, dist, f, n_samples, parameters)`` or the family form.

    For an unbiased estimator :math:`\E\lVert\hat g\rVert^2 = \sum_k\Var(\hat g_k) + \lVert\nabla_\theta L\rVert^2`
    and the second term does not depend on the control variate, so each step descends the variance
    (:cite:`grathwohl2018relax`, Section 3.3); with a batch of examples the objective sums over the
    whole batch. ``parameters`` are tensors that ``opts`` uses (``eta``, the weights of ``control``);
    each step draws fresh samples at the fixed parameter of the distribution, differentiates the
    single-call estimate with ``create_graph=True`` and sets only the gradients of ``parameters``
    (those of ``f`` are left untouched). Returns :math:`\lVert\hat g\rVert^2` per step. To train the
    control variate while the model trains, use :class:`pwgf.control_variates.RelaxControl`.
    """
    check_choice(name, tuple(_REGISTRY), "estimator")
    q, leaf, (f, n_samples, parameters) = resolve_leaf(dist, args, ("f", "n_samples", "parameters"), opts)
    steps = check_positive_int(steps, "steps")
    check_positive(float(lr), "lr")
    if not parameters or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in parameters):
        raise ValueError("parameters must be a non-empty list of tensors that require grad")
    _checked(name, q, n_samples, generator, opts)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            (g,) = torch.autograd.grad(_run(name, q, f, n_samples, generator, opts).sum(), leaf, create_graph=True)
            objective = g.pow(2).sum()
            grads = torch.autograd.grad(objective, parameters, allow_unused=True, materialize_grads=True)
        for p, grad in zip(parameters, grads, strict=True):
            p.grad = grad
        optimizer.step()
        history.append(float(objective.detach()))
    return history
