r"""Relaxed and straight-through estimators: Gumbel-Softmax, ST-Gumbel-Softmax, Gumbel-Rao, Gapped ST, ReinMax and ZGR.

Every builder follows the contract of :mod:`pwgf.estimators`: it takes a :class:`pwgf.discrete.Discrete`
view ``q`` (Bernoulli or categorical), a cost ``f`` and a number of samples ``n``, and returns a
surrogate of shape ``batch_shape`` whose gradient in the distribution's parameter is the estimate,
whose gradient in the parameters of ``f`` is the sample mean of theirs, and whose value is the
Monte Carlo estimate of :math:`\E f` (for ``gumbel_softmax``, of :math:`\E f` at the relaxed sample).

Except for ``gumbel_softmax``, each evaluates ``f`` at the exact discrete sample :math:`D` and
differs only in the Jacobian it puts in the backward pass (its *point*, ``POINTS[name]``, which
:func:`pwgf.sample` returns as a one-line sample),

.. math::
    \hat g = \frac1n \sum_{i=1}^n A_i^\top \nabla f(D_i), \qquad z_i = D_i + s_i - \operatorname{stop}(s_i),
    \quad A_i = \partial s_i / \partial\theta,

with :math:`\theta` the logits :math:`\ell` (through ``q.logits``: a ``probs`` parameter enters by the
chain rule through its logits). Writing :math:`J(\pi) = \operatorname{diag}(\pi) - \pi\pi^\top`, the
Jacobian of the softmax at :math:`\pi`:

==========================  =====================================================================================
estimator                   :math:`A` (categorical; Bernoulli is the two-class case, :math:`J(\pi) = \pi(1-\pi)`)
==========================  =====================================================================================
``st``                      :math:`J(p)`, :math:`p = \operatorname{softmax}(\ell)` (:mod:`pwgf.projection`)
``st_gumbel_softmax``       :math:`J(s)/\tau`, :math:`s = \operatorname{softmax}((\ell + G)/\tau)`, :math:`G` the Gumbel noise of :math:`D`
``gumbel_rao``              :math:`\frac1K\sum_k J(s_k)/\tau`, :math:`s_k = \operatorname{softmax}((\ell + G_k)/\tau)`, :math:`G_k \sim G \mid D`
``gapped_st``               :math:`J(\tilde s)/\tau`, :math:`\tilde s = \operatorname{softmax}((\ell + m(\ell, D))/\tau)`, deterministic gap :math:`m`
``reinmax``                 :math:`2J(\tfrac12(\operatorname{softmax}(\ell/\tau) + D)) - \tfrac12 J(p)`
``zgr``                     :math:`\tfrac12\big(J(p) + (D - p)(D - p)^\top\big)` (ST and DARN averaged)
==========================  =====================================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf import relaxations
from pwgf._validate import check_positive, check_positive_int
from pwgf.discrete import NOISE_DTYPE, Discrete

__all__ = [
    "gumbel_softmax", "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "relaxed_sample", "conditional_noise",
    "st_gumbel_softmax_point", "gumbel_rao_point", "gapped_st_point", "reinmax_point", "zgr_point", "POINTS",
]

Cost = Callable[[torch.Tensor], torch.Tensor]


def _soft(q: Discrete, perturbed: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """:math:`\\sigma(x/\\tau)` (Bernoulli) or :math:`\\operatorname{softmax}(x/\\tau)` over the one-hot axis (categorical)."""
    return torch.sigmoid(perturbed / temperature) if q.kind == "bernoulli" else torch.softmax(perturbed / temperature, dim=-1)


def relaxed_sample(q: Discrete, n: int, generator: torch.Generator | None, temperature: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Exact samples :math:`D`, their noise, and their Concrete relaxations at ``temperature``, each ``[n, *batch_shape, *event_shape]``.

    :math:`D = \ind[\ell + L > 0]` and :math:`s = \sigma((\ell + L)/\tau)` with logistic :math:`L` (binary
    Concrete), or :math:`D = \operatorname{onehot}\argmax(\ell + G)` and :math:`s = \operatorname{softmax}((\ell + G)/\tau)`
    with Gumbel :math:`G` :cite:`jang2017categorical,maddison2017concrete`; :math:`s` is differentiable in the logits.
    """
    check_positive(temperature, "temperature")
    noise = q.noise(n, generator)
    return q.threshold(noise), noise, _soft(q, q.logits + noise, temperature)


def conditional_noise(q: Discrete, hard: torch.Tensor, uniform: torch.Tensor, *, reparameterized: bool) -> torch.Tensor:
    r"""Noise drawn given the sample ``hard``: logistic :math:`\tilde L \mid D` or Gumbel :math:`\tilde G \mid D` (:mod:`pwgf.relaxations`).

    ``uniform`` has the shape of ``hard`` (leading axes allowed). With ``reparameterized=True`` the noise
    keeps its dependence on the logits (REBAR and RELAX differentiate through it); otherwise it is a
    constant, as in Gumbel-Rao, where only the relaxation's own Jacobian enters.
    """
    # The logarithms of the uniforms are taken in the uniforms' dtype (NOISE_DTYPE from q.uniform: a float64
    # uniform within 2**-25 of 1 would round to 1 in float32, where the noise would be infinite); the logistic
    # noise is then formed in the parameter's dtype (it is cast to it in the end anyway), the Gumbel noise in
    # NOISE_DTYPE.
    # The library drew hard and uniform itself: the argument checks of the public samplers are skipped.
    logits = q.logits if reparameterized else q.logits.detach()
    if q.kind == "bernoulli":
        return relaxations._conditional_logistic(logits, hard, uniform)
    return relaxations._conditional_gumbel(logits.to(NOISE_DTYPE), hard, uniform.to(NOISE_DTYPE)).to(q.dtype)


def gumbel_softmax(q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None, temperature: float | torch.Tensor = 0.5) -> torch.Tensor:
    r"""Gumbel-Softmax / Concrete :cite:`jang2017categorical,maddison2017concrete`: :math:`\frac1n\sum_i f(s_i)`, differentiated pathwise.

    Biased: the exact gradient of the relaxed objective :math:`\E f(s)`, which tends to :math:`L(\theta)` as
    :math:`\tau\to0` while its variance grows like :math:`1/\tau`. ``f`` must accept points of the
    relaxation (the open cube or simplex).
    """
    return q.relaxed_costs(f, relaxed_sample(q, n, generator, temperature)[2]).mean(0)


def st_gumbel_softmax(q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None, temperature: float | torch.Tensor = 0.5) -> torch.Tensor:
    r"""Straight-through Gumbel-Softmax :cite:`jang2017categorical`: ``f`` at the exact sample :math:`D`, the Jacobian of its relaxation :math:`s`.

    :math:`\hat g = \frac1n\sum_i (\partial s_i/\partial\ell)^\top \nabla f(D_i)`. Biased.
    """
    return q.costs(f, st_gumbel_softmax_point(q, n, generator, temperature=temperature)).mean(0)


def st_gumbel_softmax_point(q: Discrete, n: int, generator: torch.Generator | None = None, *, temperature: float | torch.Tensor = 0.5) -> torch.Tensor:
    r"""The straight-through point of :func:`st_gumbel_softmax`: the value of :math:`D`, the Jacobian of :math:`s`."""
    hard, _, soft = relaxed_sample(q, n, generator, temperature)
    return relaxations.straight_through(hard, soft)


def gumbel_rao(
    q: Discrete,
    f: Cost,
    n: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float | torch.Tensor = 0.5,
    n_conditional: int = 10,
) -> torch.Tensor:
    r"""Gumbel-Rao :cite:`paulus2021raoblackwellizing`: ST-Gumbel-Softmax's Jacobian averaged over the noise given the sample.

    .. math::
        \hat g = \frac1n\sum_i \Big(\frac1K\sum_{k=1}^K \frac{\partial s(\ell + G_{ik})}{\partial\ell}\Big)^\top \nabla f(D_i),
        \qquad G_{ik} \sim G \mid \argmax(\ell + G) = D_i,

    a Monte Carlo estimate (``n_conditional`` :math:`= K` draws) of :math:`\E[\hat g_{\text{ST-GS}} \mid D]`,
    because the ST-Gumbel-Softmax estimate is linear in the Jacobian at fixed :math:`D`. So it has the
    expectation of ``st_gumbel_softmax`` and, by the law of total variance, no more variance; its cost is
    one evaluation of ``f`` and ``K`` relaxations. The conditional noise is drawn by :func:`conditional_noise`
    and held fixed: :math:`\partial s(\ell + G_{ik})/\partial\ell` is the Jacobian of the relaxation at fixed
    :math:`G_{ik}`, as in ST-Gumbel-Softmax. This is the reading under which Proposition 1 of
    :cite:`paulus2021raoblackwellizing` (same mean, less variance) holds. The sentence after their Eq. 10
    calls the derivative a total derivative, through :math:`\theta` and :math:`G^k`; with :math:`G_{ik}` drawn
    given :math:`D_i` as a function of the logits (``reparameterized=True``) that reading has a different
    mean, which the chapter *Three accounts of straight-through* measures.
    """
    return q.costs(f, gumbel_rao_point(q, n, generator, temperature=temperature, n_conditional=n_conditional)).mean(0)


def gumbel_rao_point(
    q: Discrete, n: int, generator: torch.Generator | None = None, *, temperature: float | torch.Tensor = 0.5, n_conditional: int = 10
) -> torch.Tensor:
    r"""The straight-through point of :func:`gumbel_rao`: the value of :math:`D`, the averaged Jacobian."""
    n_conditional = check_positive_int(n_conditional, "n_conditional")
    check_positive(temperature, "temperature")
    hard = q.sample(n, generator)
    # Bernoulli: the K conditional uniforms are drawn in the parameter's dtype. In float32 that truncates the
    # conditional noise where its probability is below 2**-24; the noise only weights the Jacobian.
    dtype = q.dtype if q.kind == "bernoulli" else NOISE_DTYPE
    u = relaxations.sample_uniform((n_conditional, *hard.shape), generator=generator, dtype=dtype, device=hard.device)
    noise = conditional_noise(q, hard, u, reparameterized=False)
    logits = q.logits
    if q.kind == "bernoulli":
        # The averaged Jacobian is diagonal, (1/K) sum_k s_k (1 - s_k) / tau: computed once without a graph, it
        # carries the gradient to the logits directly (the temperature gets none) instead of K relaxations' graphs.
        with torch.no_grad():
            s = _soft(q, logits.detach() + noise, temperature)
            weight = (s * (1 - s)).mean(0) / temperature
        soft = weight * logits
    else:
        soft = _soft(q, logits + noise, temperature).mean(0)
    return relaxations.straight_through(hard, soft)


def gapped_st(
    q: Discrete,
    f: Cost,
    n: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float | torch.Tensor = 1.0,
    gap: float = 1.0,
) -> torch.Tensor:
    r"""Gapped straight-through :cite:`fan2022training`: the relaxation at a deterministic perturbation consistent with the sample.

    Instead of Gumbel noise, the logits are moved by a constant :math:`m(\ell, D)` that makes the sampled
    category the largest by at least the ``gap`` :math:`\kappa`: with :math:`\ell_{\max} = \max_k \ell_k`
    and :math:`i` the sampled category, :math:`\tilde\ell_i = \ell_{\max}` and
    :math:`\tilde\ell_j = \min(\ell_j, \ell_{\max} - \kappa)` for :math:`j \ne i`. Then

    .. math::
        \hat g = \frac1n\sum_i \frac{J(\tilde s_i)}{\tau}\,\nabla f(D_i), \qquad \tilde s_i = \operatorname{softmax}(\tilde\ell_i/\tau),

    the derivative taken with :math:`m` held fixed. For a Bernoulli coordinate (logits :math:`(0, \ell)`)
    this is :math:`\tilde\ell = \max(\ell, \kappa)` if :math:`D = 1` and :math:`\min(\ell, -\kappa)` if
    :math:`D = 0`. Biased; it adds no noise beyond the sample itself (unlike the Gumbel estimators), so its
    variance comes from the sample alone, as ST's does, with different weights.
    """
    return q.costs(f, gapped_st_point(q, n, generator, temperature=temperature, gap=gap)).mean(0)


def gapped_st_point(q: Discrete, n: int, generator: torch.Generator | None = None, *, temperature: float | torch.Tensor = 1.0, gap: float = 1.0) -> torch.Tensor:
    r"""The straight-through point of :func:`gapped_st`: the value of :math:`D`, the Jacobian of :math:`\tilde s`."""
    check_positive(temperature, "temperature")
    check_positive(gap, "gap")
    hard = q.sample(n, generator)
    logits = q.logits
    shift = _gapped_logits(q, logits.detach(), hard, gap) - logits.detach()
    # A category of probability zero (logit -inf) stays at -inf, with no shift.
    soft = _soft(q, logits + torch.where(torch.isinf(logits), 0.0, shift), temperature)
    return relaxations.straight_through(hard, soft)


def _gapped_logits(q: Discrete, logits: torch.Tensor, hard: torch.Tensor, gap: float) -> torch.Tensor:
    """The perturbed logits :math:`\\tilde\\ell` of :func:`gapped_st` (constants), shape of ``hard``."""
    if q.kind == "bernoulli":
        return torch.where(hard > 0, logits.clamp(min=gap), logits.clamp(max=-gap))
    top = logits.max(dim=-1, keepdim=True).values
    return torch.where(hard > 0, top, torch.minimum(logits, top - gap))


def reinmax(q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""ReinMax :cite:`liu2023bridging`: the second-order (Heun) counterpart of ST's first-order (forward Euler) gradient.

    With :math:`p = \operatorname{softmax}(\ell)`, the sample :math:`D`, :math:`\pi = \tfrac12(\operatorname{softmax}(\ell/\tau) + D)`
    and :math:`g = \nabla f(D)`,

    .. math::
        \hat g = \frac1n\sum_i \Big(2\,J(\pi_i) - \tfrac12 J(p)\Big)\, g_i ,

    and for a Bernoulli coordinate :math:`\hat g_\ell = f'(D)\,\big(2\pi(1-\pi) - \tfrac12 p(1-p)\big)` with
    :math:`\pi = \tfrac12(\sigma(\ell/\tau) + D)`. Liu et al. read ST as the forward Euler approximation of
    :math:`\nabla_\theta \E f` along the segment from :math:`D` to the other states, and ReinMax as Heun's
    method on the same segments; it is exact for quadratic :math:`f` at :math:`\tau = 1`. Cost: one
    evaluation of ``f``, as ST.
    """
    return q.costs(f, reinmax_point(q, n, generator, temperature=temperature)).mean(0)


def reinmax_point(q: Discrete, n: int, generator: torch.Generator | None = None, *, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""The straight-through point of :func:`reinmax`: the value of :math:`D`, the Jacobian :math:`2J(\pi) - \tfrac12 J(p)`."""
    check_positive(temperature, "temperature")
    hard = q.sample(n, generator)
    logits = q.logits
    p = torch.sigmoid(logits) if q.kind == "bernoulli" else torch.softmax(logits, dim=-1)
    pi = 0.5 * (_soft(q, logits.detach(), temperature) + hard)
    if q.kind == "bernoulli":
        # Two-class case: J(pi) = pi (1 - pi), applied to the logit directly.
        surrogate_point = (2 * pi * (1 - pi)).detach() * logits - 0.5 * p
    else:
        # softmax(stop(log pi - l) + l) has the value pi and the Jacobian J(pi); categories with pi = 0 stay at -inf.
        shift = torch.where(pi > 0, torch.log(pi) - logits.detach(), -torch.inf)
        surrogate_point = 2 * torch.softmax(shift + logits, dim=-1) - 0.5 * p
    return relaxations.straight_through(hard, surrogate_point)


def zgr(q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""ZGR :cite:`shekhovtsov2023cold`: the zero-temperature limit of Gumbel-Rao, the average of ST and DARN (Gregor et al. 2014).

    With :math:`p = \operatorname{softmax}(\ell)`, the sample :math:`D` and :math:`g = \nabla f(D)`,

    .. math::
        \hat g = \frac1n\sum_i \tfrac12\Big(J(p) + (D_i - p)(D_i - p)^\top\Big)\, g_i ,

    the mean of ST's Jacobian :math:`J(p)` and DARN's :math:`(D - p)\,\nabla_\ell\log p_\ell(D)^\top`
    (:math:`\nabla_\ell \log p_\ell(D) = D - p`). For a Bernoulli coordinate
    :math:`\hat g_\ell = f'(D)\,\tfrac12\big(p(1-p) + (D - p)^2\big)`. Shekhovtsov derives it as
    :math:`\lim_{\tau\to0}\E[J(s)/\tau \mid D]` of Gumbel-Rao; sample by sample it equals
    :func:`reinmax` at :math:`\tau = 1`, so it is exact for quadratic :math:`f`. No temperature; cost: one
    evaluation of ``f``, as ST.
    """
    return q.costs(f, zgr_point(q, n, generator)).mean(0)


def zgr_point(q: Discrete, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The straight-through point of :func:`zgr`: the value of :math:`D`, the Jacobian :math:`\tfrac12(J(p) + (D-p)(D-p)^\top)`."""
    hard = q.sample(n, generator)
    logits = q.logits
    if q.kind == "bernoulli":
        p = torch.sigmoid(logits)
        log_p_hard = torch.where(hard > 0, torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits))
    else:
        p = torch.softmax(logits, dim=-1)
        # Categories of probability zero are never sampled: their log-probability (-inf) is left out, not multiplied by 0.
        log_p_hard = torch.where(hard > 0, torch.log_softmax(logits, dim=-1), 0.0).sum(-1, keepdim=True)
    # ST's point p has the Jacobian J(p); DARN's, stop(D - p) log p(D), has (D - p)(D - p)^T.
    darn = (hard - p.detach()) * log_p_hard
    return relaxations.straight_through(hard, 0.5 * (p + darn))


#: Estimator name -> its straight-through point ``point(q, n, generator, **options)``: samples
#: ``[n, *batch_shape, *event_shape]`` with the exact values of :math:`D` and the estimator's Jacobian.
POINTS: dict[str, Callable[..., torch.Tensor]] = {
    "st_gumbel_softmax": st_gumbel_softmax_point,
    "gumbel_rao": gumbel_rao_point,
    "gapped_st": gapped_st_point,
    "reinmax": reinmax_point,
    "zgr": zgr_point,
}
