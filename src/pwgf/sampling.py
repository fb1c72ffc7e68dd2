r"""One-line straight-through samples: ``z = pwgf.sample(dist, method)`` in place of ``z = dist.sample()``.

``z`` holds the exact sample (0/1 for Bernoulli, one-hot for OneHotCategorical) in the forward pass and
carries the Jacobian of estimator ``method`` in the backward pass, so that any computation ``f(z)``
downstream, however many times it uses ``z``, gets from ``f(z).backward()`` the estimator's gradient
:math:`A^\top\nabla f(z)` in the distribution's parameter (:mod:`pwgf.straight_through` lists each
:math:`A`). It is the point the estimator's surrogate evaluates ``f`` at: ``surrogate(method, dist, f, 1,
generator=g)`` equals ``f(sample(dist, method, generator=g'))`` in value and gradient when ``g`` and
``g'`` start from the same state, because both are computed by one function,
``POINTS[method](q, n, generator, **options)``.

==========================  ==================================================  =====================
``method``                  Jacobian in the backward pass                       options
==========================  ==================================================  =====================
``st``                      :math:`J(p)` (the mean's)                           none
``st_gumbel_softmax``       the tempered Concrete relaxation's                  ``temperature``
``gumbel_rao``              its average over the noise given the sample         ``temperature``, ``n_conditional``
``gapped_st``               the relaxation at a deterministic gap               ``temperature``, ``gap``
``reinmax``                 :math:`2J(\pi) - \tfrac12 J(p)`                      ``temperature``
``zgr``                     :math:`\tfrac12(J(p) + (D-p)(D-p)^\top)`             none
==========================  ==================================================  =====================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import distributions as D

from pwgf import estimators, projection, straight_through
from pwgf._validate import check_choice
from pwgf.discrete import as_discrete

__all__ = ["METHODS", "POINTS", "sample"]

#: ``method`` -> its straight-through point ``point(q, n, generator, **options)`` (shared with the surrogates).
POINTS: dict[str, Callable[..., torch.Tensor]] = {"st": projection.st_point, **straight_through.POINTS}
#: The methods :func:`sample` accepts.
METHODS: tuple[str, ...] = tuple(POINTS)


def sample(dist: D.Distribution, method: str, *, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
    """One sample of ``dist`` (shape ``batch_shape + event_shape``) with the exact discrete value and the Jacobian of estimator ``method``.

    ``dist``: a ``torch.distributions`` ``Bernoulli`` or ``OneHotCategorical`` (``st`` also takes
    ``Poisson``), optionally in ``Independent``, any batch shape, ``logits`` or ``probs``. ``options``
    are the estimator's (:func:`pwgf.estimators.options`), e.g. ``temperature``. ``generator`` seeds
    the draw. An unknown method, a distribution the method does not apply to or an unknown option raise
    ValueError naming the valid values, before any sampling. Inside a model compiled with
    ``torch.compile`` the seeded draw runs between the compiled graphs (a graph break), with the same
    gradients as in eager mode.
    """
    check_choice(method, METHODS, "method")
    q = as_discrete(dist)
    estimators._checked(method, q, 1, generator, options)
    with torch.enable_grad():
        return POINTS[method](q, 1, generator, **options)[0]
