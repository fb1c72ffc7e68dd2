r"""Gumbel and logistic noise, the Gumbel-max trick and its continuous relaxations (Concrete / Gumbel-Softmax).

Every function takes its noise explicitly, so that an estimator controls seeding and can reuse one
draw of noise in several places (REBAR and RELAX evaluate the same noise hard and relaxed).

For logits :math:`a \in [-\infty, \infty)^K` (last axis) and i.i.d. standard Gumbel noise
:math:`g_k = -\log(-\log U_k)`, :math:`U_k \sim \mathcal{U}(0,1)`:

* Gumbel-max :cite:`gumbel1954statistical`: :math:`\operatorname{onehot}(\argmax_k (a_k + g_k)) \sim
  \Cat(\operatorname{softmax}(a))`;
* Gumbel-Softmax / Concrete :cite:`jang2017categorical,maddison2017concrete`:
  :math:`\operatorname{softmax}((a+g)/\tau)`, which tends to the Gumbel-max sample as :math:`\tau \to 0`;
* binary Concrete: :math:`\sigma((a + L)/\tau)` with logistic noise :math:`L = \log U - \log(1-U)`,
  whose :math:`\tau \to 0` limit :math:`\ind[a + L > 0]` is :math:`\Bern(\sigma(a))`;
* straight-through: the value of ``hard`` with the gradient of ``soft``.

The conditional samplers give the noise *given* the discrete outcome, as used by REBAR
:cite:`tucker2017rebar` and RELAX :cite:`grathwohl2018relax`; they are reparameterized, i.e.
differentiable in the logits.
"""

from __future__ import annotations

import torch

from pwgf._validate import check_positive

__all__ = [
    "sample_uniform",
    "sample_gumbel",
    "sample_logistic",
    "gumbel_argmax",
    "gumbel_softmax",
    "binary_concrete",
    "straight_through",
    "conditional_gumbel",
    "conditional_logistic",
]

Shape = tuple[int, ...] | torch.Size


def sample_uniform(
    shape: Shape, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    """:math:`U \\sim \\mathcal{U}(0,1)` strictly inside the open interval (clamped to ``[tiny, 1 - eps]`` of ``dtype``), so ``log U`` and ``log(1 - U)`` stay finite.

    The draw is made on the generator's device (``device`` when there is no generator) and then moved
    to ``device`` (default: where it was drawn), so a CPU generator serves a model on a GPU and gives
    the same numbers there as on the CPU.
    """
    source = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, dtype=dtype, device=source).clamp_(torch.finfo(dtype).tiny, 1 - torch.finfo(dtype).eps)
    return u if device is None else u.to(device)


def _check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Logits may hold :math:`-\\infty` (a category of probability zero) but no NaN or :math:`+\\infty`."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if torch.isnan(logits).any() or (logits == float("inf")).any():
        raise ValueError(f"{name} must lie in [-inf, inf) (no NaN or +inf)")


def _check_uniform(u: torch.Tensor, name: str) -> None:
    if not isinstance(u, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
    if torch.isnan(u).any() or (u <= 0).any() or (u >= 1).any():
        raise ValueError(f"{name} must lie in the open interval (0, 1)")


def sample_gumbel(shape: Shape, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Standard Gumbel noise :math:`g = -\log(-\log U)`, :math:`U \sim \mathcal{U}(0,1)`, of the given shape.

    :math:`P(g \le x) = \exp(-e^{-x})`; mean :math:`\gamma \approx 0.5772`, variance :math:`\pi^2/6`.
    """
    return -torch.log(-torch.log(sample_uniform(shape, generator=generator, dtype=dtype)))


def sample_logistic(shape: Shape, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Standard logistic noise :math:`L = \log U - \log(1-U)`: the difference of two independent Gumbels.

    :math:`P(L \le x) = \sigma(x)`; mean 0, variance :math:`\pi^2/3`.
    """
    u = sample_uniform(shape, generator=generator, dtype=dtype)
    return torch.log(u) - torch.log1p(-u)


def gumbel_argmax(logits: torch.Tensor, gumbel: torch.Tensor) -> torch.Tensor:
    r"""One-hot of :math:`\argmax_k (a_k + g_k)` over the last axis: a sample of :math:`\Cat(\operatorname{softmax}(a))`.

    ``logits`` and ``gumbel`` broadcast; the result has their broadcast shape and dtype and carries no
    gradient (it is piecewise constant in the logits, so its pathwise derivative is zero almost everywhere).
    """
    _check_logits(logits)
    _check_logits(gumbel, "gumbel")
    perturbed = (logits + gumbel).detach()
    index = perturbed.argmax(dim=-1)
    return torch.nn.functional.one_hot(index, perturbed.shape[-1]).to(perturbed.dtype)


def gumbel_softmax(logits: torch.Tensor, gumbel: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    r"""The Concrete / Gumbel-Softmax relaxation :math:`\operatorname{softmax}((a + g)/\tau)` over the last axis.

    A point in the interior of the simplex, differentiable in ``logits`` and ``temperature`` (which may
    be a tensor, e.g. a learned temperature); as :math:`\tau \to 0` it tends to :func:`gumbel_argmax`.
    It is the unique maximizer of :math:`z \mapsto (a+g)^\top z + \tau H(z)` over the simplex.
    """
    _check_logits(logits)
    _check_logits(gumbel, "gumbel")
    check_positive(temperature, "temperature")
    return torch.softmax((logits + gumbel) / temperature, dim=-1)


def binary_concrete(logits: torch.Tensor, logistic_noise: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    r"""The binary Concrete relaxation :math:`\sigma((a + L)/\tau)` of :math:`\Bern(\sigma(a))`, elementwise.

    Equal to the second coordinate of :func:`gumbel_softmax` with logits :math:`(0, a)`, since the
    difference of two Gumbels is logistic; its :math:`\tau \to 0` limit is :math:`\ind[a + L > 0]`.
    """
    _check_logits(logits)
    _check_logits(logistic_noise, "logistic_noise")
    check_positive(temperature, "temperature")
    return torch.sigmoid((logits + logistic_noise) / temperature)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    r"""``hard + (soft - soft.detach())``: exactly the value of ``hard`` (the bracket is exactly 0), the gradient of ``soft``.

    (``hard + soft - soft.detach()`` would round: in float32 a one could become :math:`1 - 2^{-24}`.)
    """
    if hard.shape != soft.shape:
        raise ValueError(f"hard and soft must have the same shape, got {tuple(hard.shape)} and {tuple(soft.shape)}")
    return hard.detach() + (soft - soft.detach())


def conditional_gumbel(logits: torch.Tensor, hard: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    r"""Gumbel noise :math:`\tilde g` drawn given that :math:`\argmax(a + \tilde g)` is the one-hot ``hard``.

    With :math:`b` the chosen category, :math:`Z = \log\sum_k e^{a_k}` and ``uniform`` :math:`v \in (0,1)^K`
    (broadcast against the logits), the perturbed logits :math:`\tilde z = a + \tilde g` are

    .. math::
        \tilde z_b = Z - \log(-\log v_b), \qquad
        \tilde z_k = -\log\bigl(e^{-\tilde z_b} - e^{-a_k}\log v_k\bigr) \quad (k \ne b):

    the maximum of Gumbels is Gumbel at :math:`Z`, independent of the argmax, and each other
    coordinate is a Gumbel at :math:`a_k` truncated below :math:`\tilde z_b` (inverse CDF). The
    returned noise :math:`\tilde z - a` keeps its dependence on the logits, so that
    ``gumbel_softmax(logits, conditional_gumbel(logits, hard, v), tau)`` is the reparameterized
    conditional relaxation of REBAR :cite:`tucker2017rebar` (their Appendix C). Categories with
    logit :math:`-\infty` get noise 0 (they stay at :math:`-\infty`).
    """
    _check_logits(logits)
    _check_uniform(uniform, "uniform")
    if hard.shape[-1] != logits.shape[-1]:
        raise ValueError(f"hard must be one-hot over the last axis of size {logits.shape[-1]}, got shape {tuple(hard.shape)}")
    hard = hard.detach().to(logits.dtype)
    if ((hard != 0) & (hard != 1)).any() or (hard.sum(-1) != 1).any():
        raise ValueError("hard must be one-hot over its last axis")
    return _conditional_gumbel(logits, hard, uniform)


def _conditional_gumbel(logits: torch.Tensor, hard: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """:func:`conditional_gumbel` without the checks of its arguments (for draws the library made itself)."""
    hard = hard.detach().to(logits.dtype)
    log_v = torch.log(uniform)
    top = torch.logsumexp(logits, dim=-1, keepdim=True) - torch.log(-(hard * log_v).sum(-1, keepdim=True))
    impossible = torch.isinf(logits)
    finite = torch.where(impossible, torch.zeros_like(logits), logits)  # keeps NaN out of the backward pass
    others = -torch.logaddexp(-top, -finite + torch.log(-log_v))
    noise = hard * top + (1 - hard) * others - finite
    return torch.where(impossible, torch.zeros_like(noise), noise)


def conditional_logistic(logits: torch.Tensor, b: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    r"""Logistic noise :math:`\tilde L` drawn given :math:`\ind[a + \tilde L > 0] = b`, elementwise.

    With :math:`p = \sigma(a)`: :math:`U = 1 - p + v p` if :math:`b = 1` and :math:`U = v(1-p)` if
    :math:`b = 0`, then :math:`\tilde L = \log U - \log(1 - U)`; differentiable in ``logits``
    (REBAR's conditional binary relaxation, :cite:`tucker2017rebar`).
    """
    _check_logits(logits)
    _check_uniform(uniform, "uniform")
    b = b.detach().to(logits.dtype)
    if ((b != 0) & (b != 1)).any():
        raise ValueError("b must hold only 0 and 1")
    return _conditional_logistic(logits, b, uniform)


def _conditional_logistic(logits: torch.Tensor, b: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """:func:`conditional_logistic` without the checks of its arguments (for draws the library made itself)."""
    b = b.detach().to(logits.dtype)
    # With p = sigmoid(a): b = 1 gives U = 1 - p + v p, so L = softplus(log v + a) - log(1 - v) - a; b = 0 is the
    # mirror image, L(a, v) = -L(-a, 1 - v). One branch per element, in logs: stable for |a| large.
    # The logarithms are taken in the uniform's dtype (a float64 uniform within 2**-25 of 1 would round to
    # 1 in float32), the rest in the logits' dtype.
    sign = 2 * b - 1
    log_v, log_1mv = torch.log(uniform).to(logits.dtype), torch.log1p(-uniform).to(logits.dtype)
    first, second = torch.where(b > 0, log_v, log_1mv), torch.where(b > 0, log_1mv, log_v)
    mirrored = sign * logits
    return sign * (torch.nn.functional.softplus(first + mirrored) - second - mirrored)
