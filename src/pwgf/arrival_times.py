r"""Exponential-arrival-time (EAT) relaxations of a Poisson count :cite:`vafaii2024poisson,ibrahim2026hitchhiker`.

A :math:`\mathrm{Poisson}(\lambda)` count is the number of arrivals in :math:`[0, 1]` of a Poisson process
of rate :math:`\lambda`, whose arrival times :math:`T_k = \frac1\lambda\sum_{j\le k}E_j` (:math:`E_j` i.i.d.
standard exponential) are reparameterized in :math:`\lambda`. EAT replaces the indicator
:math:`\ind[T_k \le 1]` by a smooth step :math:`H` of temperature :math:`\tau`:

.. math::
    \tilde z_\tau = \sum_{k\ge1} H\Big(\frac{1 - T_k}{\tau}\Big), \qquad
    H_{\mathrm{sigmoid}}(x) = \sigma(x), \qquad
    H_{\mathrm{cubic}}(x) = 3u^2 - 2u^3,\ u = \operatorname{clip}\big(\tfrac{x+1}{2}, 0, 1\big),

the sigmoid of the Poisson VAE :cite:`vafaii2024poisson` (its Algorithm 1) and the cubic Hermite
smoothstep of :cite:`ibrahim2026hitchhiker`, which is exactly 0 below :math:`x = -1` and exactly 1
above :math:`x = 1`. The estimator differentiates :math:`\frac1n\sum_i f(\tilde z_{\tau,i})` pathwise in
:math:`\lambda` (through :math:`T_k`), as Gumbel-Softmax does: the exact gradient of the relaxed objective
:math:`\E f(\tilde z_\tau)`, biased for :math:`\nabla_\lambda\E f(z)`, with :math:`\tilde z_\tau \to z` at
fixed noise as :math:`\tau\to0` (where no arrival sits at :math:`t = 1`).

**Moments** (Campbell's theorem, the reference of the tests). With :math:`g(t) = H((1-t)/\tau)`,
:math:`\E\tilde z_\tau = \lambda\int_0^\infty g(t)\,dt` and :math:`\Var\tilde z_\tau = \lambda\int_0^\infty g(t)^2\,dt`.
For the cubic step with :math:`\tau\le1` the transition :math:`[1-\tau, 1+\tau]` lies in :math:`t\ge0` and
:math:`H(x) + H(-x) = 1`, so :math:`\int_0^\infty g = 1` and the mean is exactly :math:`\lambda`; the
sigmoid's is :math:`\lambda\,\tau\log(1 + e^{1/\tau}) > \lambda`. Both variances fall short of
:math:`\lambda` (by :math:`\lambda\int_0^\infty g(1-g)`).

**Truncation.** The sum runs over the first :math:`K` arrivals, :math:`K` the ``tail``-quantile of the
number of arrivals in :math:`[0, h]`: :math:`h = 1 + \tau` for the cubic step (later arrivals count 0
exactly), :math:`h = 1 + \tau\log\max(e, \lambda\tau/\text{tail})` for the sigmoid (the expected sum of
:math:`g` over the arrivals after :math:`h` is then below ``tail``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pwgf import relaxations
from pwgf._validate import check_choice, check_positive
from pwgf.discrete import NOISE_DTYPE, POISSON_TAIL, Discrete, poisson_truncation

__all__ = ["STEPS", "step", "horizon", "relaxed_count", "eat_sigmoid", "eat_cubic"]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: The smooth steps :math:`H`.
STEPS: tuple[str, ...] = ("sigmoid", "cubic")


def step(x: torch.Tensor, kind: str) -> torch.Tensor:
    r"""The smooth step :math:`H(x)`: ``"sigmoid"`` :math:`\sigma(x)`, ``"cubic"`` the Hermite smoothstep of :math:`\operatorname{clip}((x+1)/2, 0, 1)`."""
    check_choice(kind, STEPS, "step")
    if kind == "sigmoid":
        return torch.sigmoid(x)
    u = ((x + 1) / 2).clamp(0, 1)
    return u * u * (3 - 2 * u)


def horizon(kind: str, rate: float, temperature: float, tail: float = POISSON_TAIL) -> float:
    """The time :math:`h` after which arrivals are left out (module docstring)."""
    if kind == "cubic":
        return 1 + temperature
    return 1 + temperature * math.log(max(math.e, rate * temperature / tail))


def relaxed_count(
    rate: torch.Tensor, n: int, generator: torch.Generator | None, *, kind: str, temperature: float, tail: float = POISSON_TAIL
) -> torch.Tensor:
    r"""``n`` relaxed counts :math:`\tilde z_\tau` ``[n, *rate.shape]``, differentiable in ``rate`` (module docstring)."""
    check_positive(temperature, "temperature")
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must lie in (0, 1), got {tail!r}")
    rate_max = float(rate.detach().max())
    arrivals = max(1, poisson_truncation(rate_max * horizon(kind, rate_max, temperature, tail), tail))
    u = relaxations.sample_uniform((arrivals, n, *rate.shape), generator=generator, dtype=NOISE_DTYPE, device=rate.device)
    times = torch.cumsum(-torch.log(u), dim=0).to(rate.dtype) / rate
    return step((1 - times) / temperature, kind).sum(0)


def _eat(q: Discrete, f: Cost, n: int, generator: torch.Generator | None, kind: str, temperature: float, tail: float) -> torch.Tensor:
    z = relaxed_count(q.parameter, n, generator, kind=kind, temperature=float(temperature), tail=tail)
    return q.relaxed_costs(f, z.reshape(q.sample_shape(n))).mean(0)


def eat_sigmoid(
    q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None, temperature: float = 0.5, tail: float = POISSON_TAIL
) -> torch.Tensor:
    r"""EAT with the sigmoid step :cite:`vafaii2024poisson`: :math:`\frac1n\sum_i f(\tilde z_{\tau,i})`, :math:`\tilde z_\tau = \sum_k \sigma((1 - T_k)/\tau)`, differentiated pathwise.

    Biased: the gradient of the relaxed objective, whose count has mean :math:`\lambda\tau\log(1+e^{1/\tau})`
    (module docstring). ``f`` must accept real-valued counts. Cost: one evaluation of ``f`` per sample and
    :math:`K\approx\lambda h` exponential draws per coordinate.
    """
    return _eat(q, f, n, generator, "sigmoid", temperature, tail)


def eat_cubic(
    q: Discrete, f: Cost, n: int, *, generator: torch.Generator | None = None, temperature: float = 0.5, tail: float = POISSON_TAIL
) -> torch.Tensor:
    r"""EAT with the cubic Hermite smoothstep :cite:`ibrahim2026hitchhiker`: :math:`\tilde z_\tau = \sum_k H_{\mathrm{cubic}}((1 - T_k)/\tau)`, differentiated pathwise.

    The relaxed count's mean is exactly :math:`\lambda` for :math:`\tau\le1`, so for linear ``f`` the
    estimator is unbiased there; otherwise biased, as every relaxation. ``f`` must accept real-valued
    counts. Cost: one evaluation of ``f`` per sample and :math:`K\approx\lambda(1+\tau)` exponential draws per coordinate.
    """
    return _eat(q, f, n, generator, "cubic", temperature, tail)
