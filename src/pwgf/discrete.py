r"""A ``torch.distributions`` object as the gradient estimators see it.

The estimators of :mod:`pwgf.estimators` take a distribution of one of three kinds, with any batch
shape, parameterized as the caller chose, optionally wrapped in
:class:`~torch.distributions.Independent`:

===============  =================================================  ========================  ==================================================
kind             distribution                                       parameter                 mean :math:`m(\theta)`
===============  =================================================  ========================  ==================================================
``bernoulli``    :class:`~torch.distributions.Bernoulli`            ``logits`` or ``probs``   :math:`p = \sigma(\text{logits})`
``categorical``  :class:`~torch.distributions.OneHotCategorical`    ``logits`` or ``probs``   :math:`p = \operatorname{softmax}(\text{logits})`
``poisson``      :class:`~torch.distributions.Poisson`              ``rate``                  :math:`\lambda`
===============  =================================================  ========================  ==================================================

Shapes follow ``torch.distributions``: a draw of ``n`` samples has shape
``[n, *batch_shape, *event_shape]`` and a cost ``f`` maps it to ``[n, *batch_shape]``, one cost per
sample and batch element (*example*). The *coordinates* are the independent scalar variables (one-hot
vectors for categorical) that make up an example: the base distribution's batch shape.

A parameter given as ``probs`` enters the estimators through the distribution's own lazily computed
``logits`` where an estimator needs logits, and a parameter given as ``logits`` through ``probs``
where it needs the mean; so no estimator takes a round trip through probabilities that saturate.
(``torch.distributions`` clamps ``probs`` of exactly 0 or 1 to :math:`[\epsilon, 1-\epsilon]` of the
dtype before taking logs, so such a coordinate is sampled wrongly with probability at most the
machine epsilon.) Categorical ``probs`` are normalized by their sum over the last axis, so every
gradient with respect to them is that of the scale-invariant extension (see :mod:`pwgf.families`).

Samples are drawn from explicit noise with a ``torch.Generator`` (logistic noise for Bernoulli,
Gumbel noise for categorical, :func:`torch.poisson` for Poisson), in float64 for the noise so that a
float32 model with saturated logits still draws exact samples, then cast to the parameter's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from scipy import stats
from torch import distributions as D

from pwgf import relaxations
from pwgf._validate import check_finite, check_positive, check_positive_int

__all__ = [
    "KINDS", "Discrete", "CostError", "NonFiniteCostError", "as_discrete", "replicate", "costs", "unvalidated", "NOISE_DTYPE", "POISSON_TAIL",
    "poisson_truncation",
]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: The kinds of distribution the estimators accept, by the class of the (unwrapped) distribution.
KINDS: dict[type, str] = {D.Bernoulli: "bernoulli", D.OneHotCategorical: "categorical", D.Poisson: "poisson"}
#: Noise is drawn in this dtype and then cast, so that thresholds at saturated logits stay exact.
NOISE_DTYPE = torch.float64
#: Default bound on the probability mass a truncated Poisson support leaves out, per coordinate.
POISSON_TAIL: float = 1e-12


def poisson_truncation(rate: torch.Tensor | np.ndarray | float, tail: float = POISSON_TAIL) -> int:
    r"""Smallest :math:`K` with :math:`P(Z > K) \le` ``tail`` for :math:`Z \sim \mathrm{Poisson}(\lambda)`, for every given rate.

    Computed from the exact Poisson survival function (``scipy.stats.poisson.isf``), so the bound holds
    for rates near 0 (where :math:`K` can be 0 or 1) and for rates in the hundreds alike (where
    :math:`K \approx \lambda + c\sqrt{\lambda}`); no normal or Chernoff approximation is involved.
    """
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail must lie in (0, 1), got {tail!r}")
    rates = np.asarray(rate.detach().cpu().numpy() if isinstance(rate, torch.Tensor) else rate, dtype=np.float64)
    check_positive(rates, "rate")
    return int(stats.poisson.isf(tail, rates.max()))


class CostError(ValueError):
    """A cost that cannot be used: it returned NaN, or it rejected the relaxed points an estimator evaluates it at.

    The estimators re-raise it, with the same class, naming the estimator.
    """


class NonFiniteCostError(CostError, FloatingPointError):
    """A cost that returned NaN: a ValueError (bad input) and a FloatingPointError (a training loop's non-finite loss)."""


def costs(f: Cost, z: torch.Tensor, batch_shape: tuple[int, ...] | torch.Size = ()) -> torch.Tensor:
    """``f(z)`` for ``n`` samples ``z`` (leading axis), checked to be one cost per sample and example, ``[n, *batch_shape]``.

    A cost of the wrong shape raises ValueError naming the expected shape; one holding NaN raises :class:`NonFiniteCostError`.
    """
    values = f(z)
    want = (z.shape[0], *batch_shape)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != want:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        layout = "[n, *batch_shape, *event_shape]" if batch_shape else "[n, ...]"
        raise ValueError(f"f must map samples of shape {layout} = {tuple(z.shape)} to costs of shape {list(want)}, got {got}")
    if torch.isnan(values.detach()).any():
        raise NonFiniteCostError(f"f returned NaN for {int(torch.isnan(values.detach()).sum())} of {values.numel()} costs; the gradient would be NaN")
    return values


@contextmanager
def unvalidated() -> Iterator[None]:
    """Within the block, ``torch.distributions`` objects built without an explicit ``validate_args`` do not check their arguments.

    The relaxed and pathwise estimators evaluate a cost at points off the discrete support (relaxed
    samples, the mean); a cost that builds a distribution and calls ``log_prob`` on such a point
    would otherwise be rejected by the argument validation that ``torch.distributions`` turns on by
    default. The default is restored on exit (it is process-wide state: not for concurrent threads).
    """
    previous = D.Distribution._validate_args
    D.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        D.Distribution.set_default_validate_args(previous)


@dataclass(frozen=True)
class Discrete:
    """A supported distribution (``dist``), its unwrapped base, its kind and the name of its parameter."""

    dist: D.Distribution
    base: D.Distribution
    kind: str
    parameter_name: str

    # ---- shapes ------------------------------------------------------------------------------

    @property
    def batch_shape(self) -> torch.Size:
        """Shape of the examples: one cost, one baseline and one gradient estimate each."""
        return self.dist.batch_shape

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one example's sample (``[d]``, ``[d, K]``, ... or ``[]``)."""
        return self.dist.event_shape

    @property
    def coordinate_shape(self) -> torch.Size:
        """``batch_shape + event_shape`` without the one-hot axis: one entry per independent variable."""
        return self.base.batch_shape

    @property
    def dtype(self) -> torch.dtype:
        return self.parameter.dtype

    # ---- parameters ---------------------------------------------------------------------------

    @property
    def parameter(self) -> torch.Tensor:
        """The tensor that parameterizes the distribution (``logits``, ``probs`` or ``rate``), with its graph."""
        return getattr(self.base, self.parameter_name)

    @property
    def mean(self) -> torch.Tensor:
        r""":math:`m(\theta) = \E z` per coordinate (probabilities, or rates), shape ``coordinate_shape`` (``+ [K]``)."""
        return self.base.mean

    @property
    def logits(self) -> torch.Tensor:
        r"""Logits per coordinate: :math:`\log p - \log(1-p)` (Bernoulli) or normalized log-probabilities (categorical)."""
        if self.kind == "poisson":
            raise ValueError("a Poisson distribution has no logits; estimators that need logits apply to bernoulli and categorical")
        logits: torch.Tensor = self.base.logits  # type: ignore[attr-defined]  # Bernoulli and OneHotCategorical have them
        return logits

    def with_parameter(self, value: torch.Tensor) -> Discrete:
        """The same distribution (same kind, parameterization and ``Independent`` wrapping) with ``value`` as its parameter."""
        base = cast(Any, type(self.base))(**{self.parameter_name: value}, validate_args=False)
        ndims = len(self.dist.event_shape) - len(self.base.event_shape)
        dist = D.Independent(base, ndims) if ndims else base
        return Discrete(dist, base, self.kind, self.parameter_name)

    def replicated(self, replicates: int) -> Discrete:
        """The same distribution with ``replicates`` independent copies of every example along a new leading batch axis.

        The parameter is detached and expanded (no copy): one estimator call on the result gives
        ``replicates`` independent estimates, ``[replicates, *parameter.shape]``, for a cost that
        broadcasts over leading axes.
        """
        replicates = check_positive_int(replicates, "replicates")
        return self.with_parameter(self.parameter.detach().expand(replicates, *self.parameter.shape))

    # ---- sampling and densities ---------------------------------------------------------------

    def sample_shape(self, n: int) -> tuple[int, ...]:
        """``(n, *batch_shape, *event_shape)``."""
        return (n, *self.batch_shape, *self.event_shape)

    def uniform(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        r""":math:`U \sim \mathcal U(0,1)` of shape :meth:`sample_shape` (one per coordinate; categorical: per category), in :data:`NOISE_DTYPE`."""
        return relaxations.sample_uniform(self.sample_shape(n), generator=generator, dtype=NOISE_DTYPE, device=self.parameter.device)

    def threshold(self, noise: torch.Tensor) -> torch.Tensor:
        r"""The exact sample that ``noise`` encodes: :math:`\ind[\ell + L > 0]` for logistic :math:`L` (Bernoulli),
        :math:`\operatorname{onehot}\argmax(\ell + G)` for Gumbel :math:`G` (categorical); no gradient."""
        logits = self.logits.detach()
        if self.kind == "bernoulli":
            return (noise > -logits).to(self.dtype)
        return relaxations.gumbel_argmax(logits, noise.to(self.dtype))

    def noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Logistic (Bernoulli) or Gumbel (categorical) noise of shape :meth:`sample_shape`, computed in :data:`NOISE_DTYPE`, cast to the dtype."""
        u = self.uniform(n, generator)
        noise = torch.log(u) - torch.log1p(-u) if self.kind == "bernoulli" else -torch.log(-torch.log(u))
        return noise.to(self.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples, shape :meth:`sample_shape`, in the parameter's dtype, seeded by ``generator``; no gradient."""
        with torch.no_grad():
            if self.kind == "poisson":
                rate = self.parameter.detach()
                return torch.poisson(rate.expand(n, *rate.shape).to(NOISE_DTYPE).contiguous(), generator=generator).to(self.dtype)
            if self.kind == "bernoulli":
                # Logistic noise L = log u - log(1 - u) exceeds -l exactly when u > sigmoid(-l): the same
                # draws as threshold(noise), without the logarithms (all in NOISE_DTYPE).
                # torch.rand's [0, 1) needs no clamping here: only the comparison is taken.
                u = torch.rand(self.sample_shape(n), generator=generator, dtype=NOISE_DTYPE, device=generator.device if generator is not None else None)
                return (u.to(self.parameter.device) > torch.sigmoid(-self.logits.detach().to(NOISE_DTYPE))).to(self.dtype)
            return self.threshold(self.noise(n, generator))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_\\theta(z)` per sample and example, ``[n, *batch_shape]``, differentiable in the parameter."""
        return self.dist.log_prob(z)

    def sum_event(self, x: torch.Tensor) -> torch.Tensor:
        """Sum a tensor shaped ``[..., *batch_shape, *event_shape]`` over the event axes."""
        ndims = len(self.event_shape)
        return x.sum(dim=tuple(range(-ndims, 0))) if ndims else x

    def per_example(self, x: torch.Tensor) -> torch.Tensor:
        """Append one singleton axis per event axis, so that a per-example tensor broadcasts against samples."""
        return x.reshape(*x.shape, *([1] * len(self.event_shape)))

    def costs(self, f: Cost, z: torch.Tensor) -> torch.Tensor:
        """``f(z)`` for samples ``z`` of shape ``[n, *batch_shape, *event_shape]``, checked by :func:`costs`."""
        return costs(f, z, self.batch_shape)

    def relaxed_costs(self, f: Cost, z: torch.Tensor) -> torch.Tensor:
        """:meth:`costs` at points off the discrete support (relaxations, the mean), with :func:`unvalidated` distributions.

        A distribution that ``f`` built beforehand with argument validation on still rejects such
        points: that raises :class:`CostError` saying what to change, instead of torch's dump of the points.
        """
        try:
            with unvalidated():
                return costs(f, z, self.batch_shape)
        except ValueError as err:
            if isinstance(err, CostError) or "to be within the support" not in str(err):
                raise
            raise CostError(
                "f is evaluated at relaxed points off the discrete support, and a torch.distributions object used in f "
                "validates its argument: build that distribution inside f, or with validate_args=False"
            ) from None

    def support(self, tail: float = POISSON_TAIL, max_states: int = 2_000_000) -> torch.Tensor:
        """Every state of one example's event, ``[S, *event_shape]`` (Poisson truncated at the largest rate, ``tail`` mass per coordinate).

        The states are shared by all examples; more than ``max_states`` raises ValueError.
        """
        coords = self.base.batch_shape[len(self.batch_shape):]
        d = int(torch.Size(coords).numel())
        if self.kind == "bernoulli":
            values = torch.tensor([0.0, 1.0], dtype=self.dtype)
        elif self.kind == "poisson":
            values = torch.arange(poisson_truncation(self.parameter, tail) + 1, dtype=self.dtype)
        else:
            values = torch.eye(self.base.event_shape[0], dtype=self.dtype)
        n_states = len(values) ** d
        if n_states > max_states:
            raise ValueError(f"enumerating a {self.kind} event of {d} coordinates needs {len(values)}**{d} states > max_states={max_states}")
        index = torch.cartesian_prod(*[torch.arange(len(values))] * d).reshape(n_states, d) if d else torch.zeros(1, 0, dtype=torch.long)
        return values[index].reshape(n_states, *self.event_shape)


def replicate(dist: Any, replicates: int) -> D.Distribution:
    """``dist`` with ``replicates`` independent copies of every example along a new leading batch axis (:meth:`Discrete.replicated`)."""
    return as_discrete(dist).replicated(replicates).dist


def as_discrete(dist: Any) -> Discrete:
    """Validate ``dist`` and return its :class:`Discrete` view; ValueError naming the supported types otherwise."""
    base = dist
    while isinstance(base, D.Independent):
        base = base.base_dist
    kind = KINDS.get(type(base))
    if kind is None:
        inner = f" of {type(base).__name__}" if base is not dist else ""
        raise ValueError(
            "dist must be a torch.distributions Bernoulli, OneHotCategorical or Poisson, optionally wrapped in "
            f"Independent; got {type(dist).__name__}{inner}"
        )
    if kind == "poisson":
        name = "rate"
    else:
        # The parameter the caller passed is the distribution's ``_param``; the other one is a lazy property.
        inner = base if kind == "bernoulli" else base._categorical
        name = "logits" if inner._param is vars(inner).get("logits") else "probs"
    discrete = Discrete(dist, base, kind, name)
    _check_parameter(discrete)
    return discrete


def _check_parameter(q: Discrete) -> None:
    """Raise ValueError, naming the parameter and its allowed range, unless it is a valid one."""
    value = q.parameter.detach()
    if q.parameter_name == "logits":
        # One pass each: NaN and +inf fail ``< inf``; Bernoulli logits must be finite.
        valid = torch.isfinite(value).all() if q.kind == "bernoulli" else (value < torch.inf).all()
        if not valid:
            allowed = "finite" if q.kind == "bernoulli" else "in [-inf, inf) (-inf for a category of probability zero)"
            raise ValueError(f"the logits of dist must be {allowed}; got NaN or infinite values")
    elif q.parameter_name == "probs":
        check_finite(value, "the probs of dist")
        if ((value < 0) | (value > 1)).any():
            raise ValueError(f"the probs of dist must lie in [0, 1], got values in [{float(value.min()):.6g}, {float(value.max()):.6g}]")
    else:
        check_positive(value, "the rate of dist")
