r"""Gradient estimators for :math:`\nabla_\theta L(\theta)`, :math:`L(\theta) = \E_{z\sim p_\theta}[f(z)]` (the paper's Eq. 1).

One design serves both uses. Every estimator is a *surrogate builder*

.. code-block:: python

    fn(family, theta, f, n_samples, *, generator=None, **options) -> scalar Tensor

such that (i) the gradient of the surrogate with respect to ``theta`` is the estimator's estimate of
:math:`\nabla_\theta L(\theta)`, and (ii) its gradient with respect to any parameter of ``f`` is the
sample mean of :math:`\nabla f` at the drawn samples. Its *value* is the Monte Carlo estimate of
:math:`L(\theta)` (zero-valued terms such as :math:`\log p - \operatorname{stop}(\log p)` carry the
gradients). ``theta`` may be the output of a network: the path from ``theta`` is never detached, so a
training loop calls ``surrogate(...).backward()``. :func:`estimate` differentiates the surrogate with
respect to a detached leaf copy of ``theta``, leaving the parameters of ``f`` untouched.

``f`` maps a float batch ``[n, d]`` (one-hot ``[n, d, K]`` for categorical) to costs ``[n]``.
Estimators marked *pathwise* or *relaxed* evaluate ``f`` (or its gradient) at real-valued points, so
``f`` must then be defined and differentiable on real inputs.

========================  ===========================  =========  ==========================================
name                      families                     unbiased   reference
========================  ===========================  =========  ==========================================
``exact``                 all three                    exact      enumeration, :mod:`pwgf.exact`
``reinforce``             all three                    yes        :cite:`williams1992simple,kool2019buy`
``st``                    all three                    no         :cite:`bengio2013estimating`
``pwgf_st``               all three                    no         :cite:`cheng2018straight` (Sec. 2.1)
``pwgf_mmd``              all three                    no         :cite:`cheng2018straight` (Sec. 2.2)
``muprop``                all three                    yes        :cite:`gu2016muprop`
``gumbel_softmax``        bernoulli, categorical       no         :cite:`jang2017categorical,maddison2017concrete`
``st_gumbel_softmax``     bernoulli, categorical       no         :cite:`jang2017categorical`
``arm``                   bernoulli                    yes        :cite:`yin2019arm`
``disarm``                bernoulli                    yes        :cite:`dong2020disarm`
``rebar``                 bernoulli, categorical       yes        :cite:`tucker2017rebar`
``relax``                 bernoulli, categorical       yes        :cite:`grathwohl2018relax`
========================  ===========================  =========  ==========================================

``st``, ``pwgf_st`` and ``pwgf_mmd`` are the projected Wasserstein gradient flow estimators of
:mod:`pwgf.projection`; the relaxations use the noise helpers of :mod:`pwgf.relax`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from pwgf import exact, projection, relax
from pwgf._validate import check_choice, check_positive, check_positive_int
from pwgf.families import FAMILIES, costs, log_prob, sample, validate_theta

__all__ = ["ESTIMATORS", "UNBIASED", "surrogate", "estimate", "estimates", "options", "measure", "tune"]

Cost = Callable[[torch.Tensor], torch.Tensor]


class SurrogateBuilder(Protocol):
    def __call__(
        self, family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = ..., **options: Any
    ) -> torch.Tensor: ...


#: REBAR's initial control-variate scale and temperature (Tucker et al. 2017 start from eta = 1, lambda = 0.5).
REBAR_ETA: float = 1.0
REBAR_TEMPERATURE: float = 0.5


# --------------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------------


def _score(weights: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    r"""Zero-valued :math:`\frac1n\sum_i w_i(\log p_i - \operatorname{stop}\log p_i)`: its gradient is :math:`\frac1n\sum_i w_i\nabla\log p_i`.

    ``weights`` must not depend on ``theta``; they may depend on other parameters (a learned control
    variate), which then receive exactly zero gradient from this term.
    """
    return (weights * (logp - logp.detach())).mean()


def _pathwise(c: Cost, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Values :math:`c(s_i)`, slopes :math:`\nabla_s c(s_i)` and a zero-valued term whose ``theta``-gradient is :math:`\frac1n\sum_i \nabla_s c(s_i)\,\partial s_i/\partial\theta`.

    The slope :math:`\nabla_s c` is taken at a detached copy of ``s`` with ``create_graph=True``, and the
    term is :math:`\frac1n\sum_i \nabla_s c(s_i)\cdot(s_i - \operatorname{stop} s_i)`: parameters of
    ``c`` get exactly zero gradient from it (contract (ii)), yet a training loop that differentiates the
    estimate itself (RELAX's variance objective) still sees how the slope depends on them.
    """
    point = s.detach().requires_grad_(True)
    with torch.enable_grad():
        values = costs(c, point)
        if values.requires_grad:
            (slope,) = torch.autograd.grad(values.sum(), point, create_graph=True, materialize_grads=True)
        else:
            slope = torch.zeros_like(point)
    term = (slope * (s - s.detach())).flatten(1).sum(1).mean()
    return values, slope, term


def _logits(family: str, theta: torch.Tensor) -> torch.Tensor:
    r"""Logits of :math:`p_\theta`: :math:`\log p - \log(1-p)` (Bernoulli) or :math:`\log\theta_k` (categorical; softmax ignores a shift)."""
    bad = (theta.detach() <= 0) | ((theta.detach() >= 1) if family == "bernoulli" else torch.zeros_like(theta, dtype=torch.bool))
    if bad.any():
        allowed = "(0, 1)" if family == "bernoulli" else "(0, 1] with no zero category"
        raise ValueError(f"this estimator uses the logits of theta, so theta must lie in {allowed}")
    return torch.log(theta) - torch.log1p(-theta) if family == "bernoulli" else torch.log(theta)


def _leave_one_out(values: torch.Tensor) -> torch.Tensor:
    r"""Baselines :math:`b_i = \frac{1}{n-1}\sum_{j\ne i} v_j` (Kool et al. 2019); needs :math:`n \ge 2`."""
    n = values.shape[0]
    return (values.sum() - values) / (n - 1)


# --------------------------------------------------------------------------------------------------
# surrogate builders
# --------------------------------------------------------------------------------------------------


def _exact(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The exact expectation :math:`\sum_z p_\theta(z) f(z)` (:func:`pwgf.exact.expectation`); ``n_samples`` and ``generator`` are unused.

    Its gradients are exact in both ``theta`` and the parameters of ``f``; the cost is one evaluation of
    ``f`` per state of the (truncated, for Poisson) support.
    """
    return exact.expectation(family, theta, f)


def _reinforce(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Score function with the leave-one-out baseline :cite:`williams1992simple,kool2019buy`.

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \bigl(f(z_i) - b_i\bigr)\nabla_\theta\log p_\theta(z_i)
        = \frac{1}{n-1}\sum_{i=1}^n \bigl(f(z_i) - \bar f\bigr)\nabla_\theta\log p_\theta(z_i),
        \qquad b_i = \frac{1}{n-1}\sum_{j\ne i} f(z_j).

    Unbiased because :math:`b_i` is independent of :math:`z_i` and :math:`\E\nabla\log p_\theta = 0`.
    Needs :math:`n \ge 2`.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for the leave-one-out baseline of 'reinforce', got {n_samples}")
    z = sample(family, theta, n_samples, generator)
    values = costs(f, z)
    centred = values.detach() - _leave_one_out(values.detach())
    return values.mean() + _score(centred, log_prob(family, theta, z))


def _muprop(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""MuProp :cite:`gu2016muprop`: a first-order Taylor control variate around the mean :math:`\bar z = \E_{p_\theta}[z]`.

    With :math:`h(z) = f(\bar z) + \nabla f(\bar z)^\top (z - \bar z)`, whose expectation is
    :math:`f(\bar z)` and whose gradient is analytic, :math:`\nabla_\theta \E h = J_{\bar z}(\theta)^\top\nabla f(\bar z)`:

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \bigl(f(z_i) - h(z_i) - b_i\bigr)\nabla_\theta\log p_\theta(z_i)
        + J_{\bar z}(\theta)^\top \nabla f(\bar z),

    where :math:`b_i` is the leave-one-out mean of the residuals :math:`f(z_j) - h(z_j)` for
    :math:`n\ge2` (the multi-sample form of MuProp's additional baseline) and 0 for :math:`n = 1`.
    :math:`\bar z` is ``p`` (Bernoulli), ``lambda`` (Poisson) or the probability vectors (categorical),
    so ``f`` must accept that real-valued point. Unbiased for any :math:`\bar z`, since :math:`h` is linear
    in :math:`z`. Cost: :math:`n + 1` evaluations of ``f`` and one gradient of ``f``.
    """
    z = sample(family, theta, n_samples, generator)
    values = costs(f, z)
    mean = projection.mean_parameter(family, theta).unsqueeze(0)
    f_mean, slope, analytic = _pathwise(f, mean)
    taylor = f_mean.detach() + (slope.detach() * (z - mean.detach())).flatten(1).sum(1)
    residual = values.detach() - taylor
    if n_samples >= 2:
        residual = residual - _leave_one_out(residual)
    return values.mean() + _score(residual, log_prob(family, theta, z)) + analytic


def _gumbel_softmax(
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float | torch.Tensor = 0.5,
) -> torch.Tensor:
    r"""Gumbel-Softmax / Concrete :cite:`jang2017categorical,maddison2017concrete`: :math:`\frac1n\sum_i \nabla_\theta f(s_i)`.

    :math:`s = \operatorname{softmax}((\log\theta + g)/\tau)` (categorical) or
    :math:`s = \sigma((\operatorname{logit} p + L)/\tau)` (Bernoulli, binary Concrete). Biased: it is the
    exact gradient of the relaxed objective :math:`\E f(s)`, which tends to :math:`L` as :math:`\tau\to0`
    while the variance grows like :math:`1/\tau`.
    """
    return costs(f, _relaxed(family, theta, n_samples, generator, temperature)[1]).mean()


def _st_gumbel_softmax(
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float | torch.Tensor = 0.5,
) -> torch.Tensor:
    r"""Straight-through Gumbel-Softmax :cite:`jang2017categorical`: ``f`` at the exact discrete sample, gradient of the relaxation.

    :math:`\hat g = \frac1n\sum_i \nabla f(b_i)^\top \partial s_i/\partial\theta` with :math:`b_i` the hard
    (Gumbel-max / thresholded) sample and :math:`s_i` its Concrete relaxation. Biased.
    """
    hard, soft = _relaxed(family, theta, n_samples, generator, temperature)
    return costs(f, relax.straight_through(hard, soft)).mean()


def _relaxed(
    family: str, theta: torch.Tensor, n: int, generator: torch.Generator | None, temperature: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard samples of :math:`p_\\theta` and their Concrete relaxations at ``temperature``, both ``[n, *theta.shape]``."""
    logits = _logits(family, theta)
    if family == "bernoulli":
        noise = relax.sample_logistic((n, *theta.shape), generator=generator, dtype=theta.dtype)
        hard = ((logits + noise) > 0).to(theta.dtype)
        return hard, relax.binary_concrete(logits, noise, temperature)
    noise = relax.sample_gumbel((n, *theta.shape), generator=generator, dtype=theta.dtype)
    return relax.gumbel_argmax(logits, noise), relax.gumbel_softmax(logits, noise, temperature)


def _arm(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Augment-REINFORCE-merge :cite:`yin2019arm` with :math:`n` independent antithetic pairs.

    With logits :math:`\phi = \operatorname{logit} p` and :math:`u_i \sim \mathcal U(0,1)^d`,

    .. math::
        \hat g_\phi = \frac1n\sum_{i=1}^n \bigl(f(\ind[u_i > 1 - p]) - f(\ind[u_i < p])\bigr)\,(u_i - \tfrac12),

    unbiased for :math:`\nabla_\phi L` (Yin and Zhou 2019, Theorem 1); the chain rule through
    :math:`\phi(p)` gives :math:`\nabla_p L`. Both members of a pair are exact :math:`\Bern(p)` samples.
    Cost: :math:`2n` evaluations of ``f``.
    """
    logits = _logits(family, theta)
    u = relax.sample_uniform((n_samples, *theta.shape), generator=generator, dtype=theta.dtype)
    p = theta.detach()
    upper, lower = costs(f, (u > 1 - p).to(theta.dtype)), costs(f, (u < p).to(theta.dtype))
    weights = (upper - lower).detach().unsqueeze(1) * (u - 0.5)
    return 0.5 * (upper.mean() + lower.mean()) + (weights * (logits - logits.detach())).sum(1).mean()


def _disarm(family: str, theta: torch.Tensor, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""DisARM :cite:`dong2020disarm`: ARM's antithetic pair :math:`b = \ind[u < p]`, :math:`\tilde b = \ind[1 - u < p]`, integrated over :math:`u` given the pair.

    .. math::
        (\hat g_\phi)_k = \frac1n\sum_{i=1}^n \tfrac12\bigl(f(b_i) - f(\tilde b_i)\bigr)
        (-1)^{\tilde b_{ik}}\,\ind[b_{ik} \ne \tilde b_{ik}]\,\sigma(|\phi_k|),

    the conditional expectation of ARM given :math:`(b, \tilde b)`; unbiased and never of higher
    variance than ARM. Cost: :math:`2n` evaluations of ``f``.
    """
    logits = _logits(family, theta)
    u = relax.sample_uniform((n_samples, *theta.shape), generator=generator, dtype=theta.dtype)
    p = theta.detach()
    b, b_anti = (u < p).to(theta.dtype), (1 - u < p).to(theta.dtype)
    values, values_anti = costs(f, b), costs(f, b_anti)
    sign = (1 - 2 * b_anti) * (b != b_anti).to(theta.dtype) * torch.sigmoid(logits.detach().abs())
    weights = 0.5 * (values - values_anti).detach().unsqueeze(1) * sign
    return 0.5 * (values.mean() + values_anti.mean()) + (weights * (logits - logits.detach())).sum(1).mean()


def _control_variate(
    family: str, f: Cost, eta: float | torch.Tensor, temperature: float | torch.Tensor, control: Cost | None
) -> Cost:
    r""":math:`c(x) = \eta\, f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))` of the perturbed logits :math:`x`, with :math:`\sigma_\lambda` the tempered sigmoid / softmax."""

    def c(x: torch.Tensor) -> torch.Tensor:
        soft = torch.sigmoid(x / temperature) if family == "bernoulli" else torch.softmax(x / temperature, dim=-1)
        value = eta * costs(f, soft)
        return value if control is None else value + costs(control, soft)

    return c


def _relax(
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    eta: float | torch.Tensor = REBAR_ETA,
    temperature: float | torch.Tensor = REBAR_TEMPERATURE,
    control: Cost | None = None,
) -> torch.Tensor:
    r"""RELAX :cite:`grathwohl2018relax` with the control variate :math:`c(x) = \eta f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))`.

    Draw the perturbed logits :math:`x = \operatorname{logit}\theta + \text{noise}` (logistic for
    Bernoulli, Gumbel for categorical), the sample :math:`b = H(x)` (threshold / argmax), and
    :math:`\tilde x \sim p(x \mid b)` reparameterized (:func:`pwgf.relax.conditional_logistic`,
    :func:`pwgf.relax.conditional_gumbel`). Then

    .. math::
        \hat g = \frac1n\sum_{i=1}^n \Bigl[\bigl(f(b_i) - c(\tilde x_i)\bigr)\nabla_\theta\log p_\theta(b_i)
        + \nabla_\theta c(x_i) - \nabla_\theta c(\tilde x_i)\Bigr],

    unbiased for every :math:`c` because :math:`\E[\nabla_\theta c(x)] = \nabla_\theta\E[c(\tilde x)]
    = \E[c(\tilde x)\nabla_\theta\log p_\theta(b)] + \E[\nabla_\theta c(\tilde x)]`.

    ``control`` is the learned part :math:`r`, any differentiable callable ``[n, *theta.shape] -> [n]``
    applied to the relaxed sample; ``eta`` and ``temperature`` may be tensors that require grad. In a
    single call they are fixed: with ``control=None`` RELAX is REBAR at the given :math:`(\eta,\lambda)`.
    The surrogate gives :math:`\eta`, :math:`\lambda` and the parameters of :math:`r` exactly zero
    gradient; RELAX trains them on the variance, by differentiating the estimate itself:
    ``g, = torch.autograd.grad(surrogate(...), theta, create_graph=True)`` then ``(g**2).sum().backward()``.
    Cost: :math:`3n` evaluations of ``f`` (plus :math:`2n` of ``control``) and :math:`2n` gradients.
    """
    logits = _logits(family, theta)
    if family == "bernoulli":
        x = logits + relax.sample_logistic((n_samples, *theta.shape), generator=generator, dtype=theta.dtype)
        b = (x > 0).to(theta.dtype).detach()
        x_cond = logits + relax.conditional_logistic(logits, b, relax.sample_uniform((n_samples, *theta.shape), generator=generator, dtype=theta.dtype))
    else:
        x = logits + relax.sample_gumbel((n_samples, *theta.shape), generator=generator, dtype=theta.dtype)
        b = relax.gumbel_argmax(x, torch.zeros_like(x))
        x_cond = logits + relax.conditional_gumbel(logits, b, relax.sample_uniform((n_samples, *theta.shape), generator=generator, dtype=theta.dtype))
    check_positive(temperature if isinstance(temperature, torch.Tensor) else float(temperature), "temperature")
    c = _control_variate(family, f, eta, temperature, control)
    values = costs(f, b)
    _, _, relaxed = _pathwise(c, x)
    c_cond, _, relaxed_cond = _pathwise(c, x_cond)
    return values.mean() + _score(values.detach() - c_cond, log_prob(family, theta, b)) + relaxed - relaxed_cond


def _rebar(
    family: str,
    theta: torch.Tensor,
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
    return _relax(family, theta, f, n_samples, generator=generator, eta=eta, temperature=temperature)


# --------------------------------------------------------------------------------------------------
# registry and entry points
# --------------------------------------------------------------------------------------------------

_ALL = frozenset(FAMILIES)
_RELAXABLE = frozenset({"bernoulli", "categorical"})

_BUILDERS: dict[str, tuple[SurrogateBuilder, frozenset[str]]] = {
    "exact": (_exact, _ALL),
    "reinforce": (_reinforce, _ALL),
    "st": (projection.st, _ALL),
    "pwgf_st": (projection.pwgf_st, _ALL),
    "pwgf_mmd": (projection.pwgf_mmd, _ALL),
    "muprop": (_muprop, _ALL),
    "gumbel_softmax": (_gumbel_softmax, _RELAXABLE),
    "st_gumbel_softmax": (_st_gumbel_softmax, _RELAXABLE),
    "arm": (_arm, frozenset({"bernoulli"})),
    "disarm": (_disarm, frozenset({"bernoulli"})),
    "rebar": (_rebar, _RELAXABLE),
    "relax": (_relax, _RELAXABLE),
}

#: Estimator name -> the families it applies to.
ESTIMATORS: dict[str, frozenset[str]] = {name: families for name, (_, families) in _BUILDERS.items()}

#: The estimators whose expectation is exactly :math:`\nabla_\theta L(\theta)` (``exact`` is deterministic).
UNBIASED: frozenset[str] = frozenset({"exact", "reinforce", "muprop", "arm", "disarm", "rebar", "relax"})


def options(name: str) -> dict[str, Any]:
    """The keyword options of estimator ``name`` and their defaults (``generator`` excluded)."""
    check_choice(name, tuple(_BUILDERS), "estimator")
    params = inspect.signature(_BUILDERS[name][0]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "generator"}


def surrogate(
    name: str,
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> torch.Tensor:
    """Scalar surrogate loss of estimator ``name``: its ``theta``-gradient is the estimate of :math:`\\nabla_\\theta\\E_{p_\\theta} f`.

    Its value is a Monte Carlo estimate of :math:`\\E_{p_\\theta} f` and its gradient with respect to the
    parameters of ``f`` is the sample mean of their gradients (see the module docstring). Unknown names,
    families, options, or a name that does not apply to ``family``, raise ValueError listing the valid ones.
    """
    check_choice(name, tuple(_BUILDERS), "estimator")
    check_choice(family, FAMILIES, "family")
    builder, families = _BUILDERS[name]
    if family not in families:
        valid = sorted(n for n, fams in ESTIMATORS.items() if family in fams)
        raise ValueError(
            f"estimator {name!r} does not apply to family {family!r} (it applies to {', '.join(sorted(families))}); "
            f"estimators for {family!r}: {', '.join(valid)}"
        )
    allowed = options(name)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for estimator {name!r}; valid: {', '.join(sorted(allowed)) or 'none'}")
    validate_theta(family, theta)
    n_samples = check_positive_int(n_samples, "n_samples")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.enable_grad():
        return builder(family, theta, f, n_samples, generator=generator, **opts)


def estimate(
    name: str,
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> torch.Tensor:
    """Estimate of :math:`\\nabla_\\theta \\E_{z\\sim p_\\theta}[f(z)]` with the shape of ``theta``.

    ``torch.autograd.grad`` of :func:`surrogate` at a detached leaf copy of ``theta``; the parameters of
    ``f`` receive no gradient.
    """
    if not isinstance(theta, torch.Tensor):
        raise ValueError(f"theta must be a torch.Tensor, got {type(theta).__name__}")
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = surrogate(name, family, leaf, f, n_samples, generator=generator, **opts)
        (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True, materialize_grads=True)
    return grad.detach()


def estimates(
    name: str,
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    replicates: int,
    *,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> torch.Tensor:
    """``replicates`` independent calls of :func:`estimate` stacked into ``[replicates, *theta.shape]``, for bias and variance studies."""
    replicates = check_positive_int(replicates, "replicates")
    return torch.stack([estimate(name, family, theta, f, n_samples, generator=generator, **opts) for _ in range(replicates)])


def measure(
    name: str,
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    replicates: int,
    *,
    reference: torch.Tensor,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> dict[str, float]:
    r"""Bias, variance, MSE and cost of estimator ``name`` from ``replicates`` independent estimates.

    With estimates :math:`\hat g_1,\dots,\hat g_R` and the exact gradient :math:`g` (``reference``):
    ``bias2`` :math:`=\lVert\bar g - g\rVert^2`, ``variance`` :math:`=\sum_k \widehat{\Var}(\hat g_k)`
    (unbiased sample variances, summed over coordinates), ``mse`` :math:`=\frac1R\sum_r\lVert\hat g_r - g\rVert^2`,
    ``z_max`` :math:`=\max_k |\bar g_k - g_k| / (\hat\sigma_k/\sqrt R)` (the statistic of the
    4-standard-error test; errors within float64 rounding, :math:`10^{-12}(1+|g_k|)`, count as 0, so a
    deterministic estimator scores 0 when exact and ``inf`` when not),
    ``points``: points at which ``f`` is evaluated per estimate (rows of its input batches, all calls
    counted), ``seconds``: wall-clock time per estimate.
    """
    replicates = check_positive_int(replicates, "replicates")
    if replicates < 2:
        raise ValueError(f"replicates must be >= 2 to estimate a variance, got {replicates}")
    points = 0

    def counted(z: torch.Tensor) -> torch.Tensor:
        nonlocal points
        points += z.shape[0]
        return f(z)

    start = time.perf_counter()
    draws = estimates(name, family, theta, counted, n_samples, replicates, generator=generator, **opts)
    seconds = (time.perf_counter() - start) / replicates
    reference = reference.detach().to(draws.dtype)
    if reference.shape != theta.shape:
        raise ValueError(f"reference must have the shape of theta {tuple(theta.shape)}, got {tuple(reference.shape)}")
    error = draws.mean(0) - reference
    se = draws.std(0) / replicates**0.5
    # A deterministic estimator (exact) has se = 0: its error counts as zero up to float64 rounding.
    rounding = 1e-12 * (1 + reference.abs())
    z = torch.where(error.abs() <= rounding, torch.zeros_like(error), error.abs() / se)
    return {
        "bias2": float(error.pow(2).sum()),
        "variance": float(draws.var(0).sum()),
        "mse": float((draws - reference).pow(2).flatten(1).sum(1).mean()),
        "z_max": float(z.max()),
        "points": points / replicates,
        "seconds": seconds,
    }


def tune(
    name: str,
    family: str,
    theta: torch.Tensor,
    f: Cost,
    n_samples: int,
    parameters: list[torch.Tensor],
    *,
    steps: int = 200,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
    **opts: Any,
) -> list[float]:
    r"""Fit the control-variate ``parameters`` of an estimator by Adam on :math:`\E\lVert\hat g\rVert^2`, as REBAR and RELAX do.

    For an unbiased estimator :math:`\E\lVert\hat g\rVert^2 = \sum_k\Var(\hat g_k) + \lVert\nabla_\theta L\rVert^2`
    and the second term does not depend on the control variate, so each step descends the variance
    (:cite:`grathwohl2018relax`, Section 3.3). ``parameters`` are tensors that ``opts`` uses (``eta``, the
    weights of ``control``); each step draws fresh samples at the fixed ``theta``, differentiates the
    single-call estimate with ``create_graph=True`` and sets only the gradients of ``parameters`` (those of
    ``f`` are left untouched). Returns :math:`\lVert\hat g\rVert^2` per step.
    """
    steps = check_positive_int(steps, "steps")
    check_positive(float(lr), "lr")
    if not parameters or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in parameters):
        raise ValueError("parameters must be a non-empty list of tensors that require grad")
    optimizer = torch.optim.Adam(parameters, lr=lr)
    leaf = theta.detach().clone().requires_grad_(True)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            (g,) = torch.autograd.grad(surrogate(name, family, leaf, f, n_samples, generator=generator, **opts), leaf, create_graph=True)
            objective = g.pow(2).sum()
            grads = torch.autograd.grad(objective, parameters, allow_unused=True, materialize_grads=True)
        for p, grad in zip(parameters, grads):
            p.grad = grad
        optimizer.step()
        history.append(float(objective.detach()))
    return history
