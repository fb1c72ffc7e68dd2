r"""VIMCO :cite:`mnih2016variational`: the gradient of the multi-sample objective :math:`\E\,\hat{\mathcal L}_K`, :math:`\hat{\mathcal L}_K = \log\frac1K\sum_{k=1}^K w_k`.

With :math:`h_1,\dots,h_K \sim q_\phi` i.i.d. and log-weights :math:`\log w_k` (for a VAE,
:math:`\log p_\theta(x, h_k) - \log q_\phi(h_k\mid x)`, the importance-weighted bound of
:cite:`burda2016importance`), the objective is not a sum of per-sample costs, so it has an entry point of
its own instead of a cost ``f``. VIMCO's estimate is

.. math::
    \hat g = \sum_{k=1}^K \bigl(\hat{\mathcal L}_K - \hat{\mathcal L}_K^{(-k)}\bigr)\nabla_\phi\log q_\phi(h_k)
    + \sum_{k=1}^K \tilde w_k\,\nabla\log w_k, \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},

where :math:`\hat{\mathcal L}_K^{(-k)}` is :math:`\hat{\mathcal L}_K` with :math:`\log w_k` replaced by the
mean of the other :math:`\log w_j` (the geometric mean of the other weights). The baseline
:math:`\hat{\mathcal L}_K^{(-k)}` does not depend on :math:`h_k`, and
:math:`\E[\nabla_\phi\log q_\phi(h_k)\mid h_{-k}] = 0`, so :math:`\E\hat g = \nabla\E\hat{\mathcal L}_K`
exactly, in :math:`\phi` and in the parameters of the log-weights alike; the second sum is the pathwise
gradient of :math:`\hat{\mathcal L}_K` at the fixed samples. Cost: :math:`K` log-weights, as the bound itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pwgf._validate import check_positive_int
from pwgf.discrete import Discrete, as_discrete, costs

__all__ = ["vimco", "vimco_at"]

LogWeight = Callable[[torch.Tensor], torch.Tensor]


def vimco(dist: Any, log_weight: LogWeight, n_samples: int, *, baseline: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The VIMCO surrogate of :math:`\hat{\mathcal L}_K` per example, shape ``batch_shape``: its value is :math:`\hat{\mathcal L}_K`, its gradient VIMCO's :math:`\hat g` (module docstring).

    ``dist``: :math:`q_\phi`, a distribution :mod:`pwgf.discrete` accepts. ``log_weight`` maps samples
    ``[K, *batch_shape, *event_shape]`` to :math:`\log w` ``[K, *batch_shape]``, differentiably in its own
    parameters and in :math:`\phi` where it uses :math:`\log q_\phi(h)`. ``n_samples`` :math:`K \ge 2`.
    The objective is to be maximized: ``(-vimco(...)).mean().backward()`` for a loss. ``baseline=False``
    drops the leave-one-out baselines (learning signal :math:`\hat{\mathcal L}_K` for every sample): the plain,
    also unbiased, score-function estimator VIMCO improves on, for comparisons.
    """
    q = as_discrete(dist)
    n_samples = check_positive_int(n_samples, "n_samples")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for VIMCO (its baselines leave one sample out), got {n_samples}")
    if not isinstance(baseline, bool):
        raise ValueError(f"baseline must be True or False, got {baseline!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.enable_grad():
        return vimco_at(q, log_weight, q.sample(n_samples, generator), baseline=baseline)


def vimco_at(q: Discrete, log_weight: LogWeight, h: torch.Tensor, *, baseline: bool = True) -> torch.Tensor:
    """The VIMCO surrogate at given samples ``h`` ``[K, *batch_shape, *event_shape]`` of ``q`` (what :func:`vimco` draws)."""
    log_w = costs(log_weight, h, q.batch_shape)
    k = h.shape[0]
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    lw = log_w.detach()
    # Row k: the log-weights with the k-th replaced by the mean of the others.
    geometric = (lw.sum(0) - lw) / (k - 1)
    eye = torch.eye(k, dtype=torch.bool, device=lw.device).reshape(k, k, *[1] * (lw.ndim - 1))
    replaced = torch.where(eye, geometric.unsqueeze(1), lw.unsqueeze(0))
    signal = bound.detach() - (torch.logsumexp(replaced, dim=1) - math.log(k)) if baseline else bound.detach().expand_as(lw)
    log_q = q.log_prob(h)
    return bound + (signal * (log_q - log_q.detach())).sum(0)
