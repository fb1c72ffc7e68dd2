r"""The unordered-set estimator :cite:`kool2020estimating`: :math:`k` distinct states drawn without replacement, with its built-in baseline.

For one example with states :math:`x` of probability :math:`p(x)` (an enumerable support: one categorical
coordinate, a Bernoulli coordinate as two classes, or a small event of several), draw the set
:math:`S` of :math:`k` distinct states by Gumbel-top-:math:`k` :cite:`kool2019stochastic`: the
:math:`k` largest of :math:`\log p(x) + G_x`, :math:`G_x` i.i.d. Gumbel. Write :math:`p^{D\setminus C}(A)`
for the probability that :math:`|A|` draws without replacement from :math:`p` restricted to the states
outside :math:`C` (renormalized) give the unordered set :math:`A`, and :math:`Q(C) = p^{D\setminus C}(S\setminus C)`
for :math:`C\subseteq S`. Then, with the leave-one-out ratio :math:`R(S, s) = Q(\{s\})/Q(\emptyset)`,

.. math::
    \hat L = \sum_{s\in S} p(s)R(S,s)\,f(s), \qquad
    \hat g = \sum_{s\in S} R(S,s)\,\nabla p(s)\,\bigl(f(s) - b_s\bigr), \qquad
    b_s = p(s)f(s) + \sum_{s'\in S\setminus\{s\}} p(s')\,\frac{Q(\{s,s'\})}{Q(\{s\})}\,f(s').

Both are unbiased (Kool et al. 2020, Theorems 1 and 4): :math:`Q(\emptyset) = \sum_{s\in S}p(s)Q(\{s\})`
(the first draw is one of the set), so :math:`\E_S\sum_{s\in S}R(S,s)h(s) = \sum_x h(x)` for every
:math:`h`; and :math:`b_s` is the unordered-set estimate of :math:`\E f` given that :math:`s` was drawn
first, whose conditional expectation is :math:`\E f` whatever :math:`s` when :math:`k\ge2` (the other
:math:`k - 1` states estimate the rest of the sum without bias), so the baseline's term has expectation
:math:`\E f\,\nabla\sum_x p(x) = 0`; hence :math:`k \ge 2`. The weights :math:`p(s)R(S,s)` sum to one.
With :math:`k` equal to the number of states the estimate is exact.

The :math:`Q(C)` come from one recursion over the :math:`2^k` subsets of :math:`S` (by the first draw,
:func:`_leave_out`), in log space and float64, with the mass left after :math:`C` computed as a sum of
the remaining probabilities, never as one minus a sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf import relaxations
from pwgf.discrete import NOISE_DTYPE, Discrete

__all__ = ["MAX_SET_SIZE", "unordered_set", "set_terms"]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: The largest set size: the leave-one-out probabilities take 2**k subsets of the set per example.
MAX_SET_SIZE: int = 16


def _subsets(k: int, device: torch.device) -> torch.Tensor:
    """Membership ``[2**k, k]`` (bool) of the subsets of ``k`` positions, subset ``c`` holding position ``a`` iff bit ``a`` of ``c`` is set."""
    masks = torch.arange(2**k, device=device)
    return (masks[:, None] >> torch.arange(k, device=device)) & 1 == 1


def _leave_out(log_p_set: torch.Tensor, log_p_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r""":math:`\log Q(\emptyset)` ``[...]``, :math:`\log Q(\{s\})` ``[..., k]`` and :math:`\log Q(\{s, s'\})` ``[..., k, k]`` (diagonal :math:`-\infty`).

    ``log_p_set`` ``[..., k]`` holds :math:`\log p` of the set's states, ``log_p_out`` ``[...]`` the log
    of the mass outside the set (``-inf`` when the set is the whole support). By the first draw,
    :math:`Q(C) = \sum_{a\in S\setminus C} \frac{p(a)}{1 - p(C)}\,Q(C\cup\{a\})` with :math:`Q(S) = 1`,
    computed for all :math:`2^k` subsets, one subset size at a time, in log space; the mass
    :math:`1 - p(C)` not yet drawn is the sum of the set's other probabilities and the mass outside it.
    """
    k = log_p_set.shape[-1]
    member = _subsets(k, log_p_set.device)  # [M, k]
    size = member.sum(-1)
    outside_c = torch.where(member, -torch.inf, log_p_set[..., None, :])  # [..., M, k]: log p(a) for a not in C
    log_left = torch.logaddexp(torch.logsumexp(outside_c, dim=-1), log_p_out[..., None])  # [..., M]
    log_q = torch.full(outside_c.shape[:-1], -torch.inf, dtype=log_p_set.dtype, device=log_p_set.device)
    log_q[..., -1] = 0.0
    bits = 2 ** torch.arange(k, device=log_p_set.device)
    for m in range(k - 1, -1, -1):
        level = torch.nonzero(size == m).squeeze(-1)  # the subsets with m members
        larger = level[:, None] | bits  # C with a added (C itself where a is in C, masked below)
        terms = outside_c[..., level, :] - log_left[..., level, None] + log_q[..., larger]
        log_q[..., level] = torch.logsumexp(terms, dim=-1)
    pairs = bits[:, None] | bits[None, :]
    log_q2 = torch.where(torch.eye(k, dtype=torch.bool, device=log_p_set.device), -torch.inf, log_q[..., pairs])
    return log_q[..., 0], log_q[..., bits], log_q2


def set_terms(log_p_set: torch.Tensor, log_p_out: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The weights :math:`p(s)R(S,s)` and the advantages :math:`f(s) - b_s` of a drawn set, each ``[..., k]`` (no gradient).

    ``log_p_set`` ``[..., k]``: :math:`\log p` of the set's states; ``log_p_out`` ``[...]``: log of the mass
    outside the set; ``values`` ``[..., k]``: :math:`f` at the set's states.
    """
    log_p_set, log_p_out, values = (t.detach().to(torch.float64) for t in (log_p_set, log_p_out, values))
    log_q0, log_q1, log_q2 = _leave_out(log_p_set, log_p_out)
    weights = torch.exp(log_p_set + log_q1 - log_q0[..., None])
    # b_s = p(s) f(s) + sum_{s' != s} p(s') Q({s, s'}) / Q({s}) f(s'); the diagonal of log_q2 is -inf.
    others = torch.exp(log_p_set[..., None, :] + log_q2 - log_q1[..., :, None])
    baseline = torch.exp(log_p_set) * values + (others * values[..., None, :]).sum(-1)
    return weights, values - baseline


def unordered_set(q: Discrete, f: Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Unordered-set estimator with its built-in baseline :cite:`kool2020estimating` (module docstring), ``n_samples`` :math:`= k` distinct states per example.

    The surrogate's value is :math:`\hat L`, its gradient in the distribution's parameter is :math:`\hat g`,
    and its gradient in the parameters of ``f`` is :math:`\sum_{s\in S} p(s)R(S,s)\nabla f(s)`, the
    unbiased weighted mean (contract (ii) with these weights). Cost: :math:`k` evaluations of ``f``, one
    log-probability per state of the support, and :math:`2^k` subsets per example for the weights.
    """
    states = q.support()
    if not 2 <= n_samples <= min(len(states), MAX_SET_SIZE):
        raise ValueError(
            f"n_samples must lie in [2, {min(len(states), MAX_SET_SIZE)}] for estimator 'unordered_set' "
            f"(distinct states of a support of {len(states)}, at most MAX_SET_SIZE={MAX_SET_SIZE}), got {n_samples}"
        )
    batch_ndim = len(q.batch_shape)
    grid = states.reshape(len(states), *[1] * batch_ndim, *q.event_shape).expand(len(states), *q.batch_shape, *q.event_shape)
    log_p = q.log_prob(grid).movedim(0, -1)  # [*batch_shape, S], differentiable
    uniform = relaxations.sample_uniform(log_p.shape, generator=generator, dtype=NOISE_DTYPE, device=log_p.device)
    gumbel = -torch.log(-torch.log(uniform))
    index = torch.topk(log_p.detach().to(NOISE_DTYPE) + gumbel, n_samples, dim=-1).indices  # [*batch_shape, k]
    log_p_set = log_p.gather(-1, index)
    if torch.isinf(log_p_set.detach()).any():
        raise ValueError(f"n_samples={n_samples} exceeds the number of states of positive probability of an example (estimator 'unordered_set')")
    outside = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, index, False)
    log_p_out = torch.logsumexp(log_p.detach().to(torch.float64).masked_fill(~outside, -torch.inf), dim=-1)
    z = states[index.movedim(-1, 0)]  # [k, *batch_shape, *event_shape]
    values = q.costs(f, z)
    weights, advantages = set_terms(log_p_set, log_p_out, values.movedim(0, -1))
    weights, advantages = weights.to(q.dtype).movedim(-1, 0), advantages.to(q.dtype).movedim(-1, 0)
    score = log_p_set.movedim(-1, 0)
    return (weights * values).sum(0) + (weights * advantages * (score - score.detach())).sum(0)
