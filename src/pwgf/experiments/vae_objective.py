r"""The training cost of the Bernoulli VAEs of Table 2 for any gradient estimator, and REBAR's and RELAX's control variates.

The encoder's objective per image is the estimator's surrogate of the paper's cost
:math:`\E_q[f + \log q_{\bar\phi}]` (the ``"full"`` form), or of :math:`\E_q[f]` minus the exact entropy of
:math:`q` (the ``"split"`` form) where that keeps the estimator's expected gradient (:data:`ENCODER_FORMS`),
layer by layer (:func:`encoder_objective`, :func:`layer_cost`); the formulas, the two-layer composition
and the real-valued points the relaxed estimators need are in :mod:`pwgf.experiments.vae_training`'s
docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import distributions as D
from torch import nn

from pwgf import estimators
from pwgf._validate import check_choice
from pwgf.experiments.vae import BernoulliVAE

__all__ = [
    "PAPER_ESTIMATORS",
    "ESTIMATOR_NAMES",
    "KNOBS",
    "TUNED_CONTROL_VARIATES",
    "ControlVariates",
    "ENCODER_FORMS",
    "FORMS",
    "encoder_form",
    "full_cost",
    "layer_cost",
    "encoder_objective",
]


Cost = Callable[[torch.Tensor], torch.Tensor]


Options = Callable[[int], dict[str, Any]]


#: The six estimators of the paper's Table 2 (``pwgf_mmd`` is the paper's pWGF, in the book's Gauss-Newton form).
PAPER_ESTIMATORS: tuple[str, ...] = ("pwgf_mmd", "st", "arm", "relax", "rebar", "gumbel_softmax")


#: Every Bernoulli estimator of :mod:`pwgf.estimators` that this experiment runs: the paper's six, then the rest.
#: Not run: ``exact`` (:math:`2^{200}` states) and ``pwgf_st``, equal to ``st`` up to rounding (chapter *ST as pWGF*).
ESTIMATOR_NAMES: tuple[str, ...] = PAPER_ESTIMATORS + (
    "pwgf_mmd_argmin", "reinforce", "muprop", "disarm", "st_gumbel_softmax", "reinmax", "gumbel_rao", "gapped_st",
)


#: The form of the encoder's objective each estimator gets (module docstring): ``"split"``, its estimate on
#: :math:`f = -\log p(x, z)` minus the analytic entropy, where a test on an enumerable model shows that this has the same
#: expectation as the estimator on the full cost; ``"full"``, the estimator on the paper's cost
#: :math:`-\log p(x, z) + \log q(z\mid x)` (:func:`full_cost`).
ENCODER_FORMS: dict[str, str] = {
    **{name: "split" for name in ("exact", "reinforce", "muprop", "arm", "disarm", "rebar", "relax", "st", "pwgf_st")},
    **{name: "full" for name in ("pwgf_mmd", "pwgf_mmd_argmin", "gumbel_softmax", "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax")},
}


FORMS: tuple[str, ...] = ("split", "full")


#: Estimator knobs chosen on the validation set, by estimator: config key -> option of :func:`pwgf.estimators.surrogate`.
KNOBS: dict[str, dict[str, str]] = {
    **{name: {"temp": "temperature"} for name in ("gumbel_softmax", "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax")},
    **{name: {"eps": "eps", "bw": "bandwidth"} for name in ("pwgf_mmd", "pwgf_mmd_argmin")},
}


#: Estimators whose control variates are trained on the variance during training.
TUNED_CONTROL_VARIATES: frozenset[str] = frozenset({"rebar", "relax"})


#: Hidden units of RELAX's control network :math:`r` (one tanh layer; output layer initialized at zero, so RELAX starts as REBAR).
CONTROL_HIDDEN: int = 32


def _bernoulli(logits: torch.Tensor) -> D.Distribution:
    return D.Independent(D.Bernoulli(logits=logits, validate_args=False), 1)


class _ControlNetwork(nn.Module):
    """RELAX's :math:`r`: relaxed samples ``[..., d]`` to ``[...]`` through one tanh layer."""

    def __init__(self, dim: int, generator: torch.Generator, dtype: torch.dtype) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, CONTROL_HIDDEN, dtype=dtype)
        self.out = nn.Linear(CONTROL_HIDDEN, 1, dtype=dtype)
        nn.init.xavier_uniform_(self.hidden.weight, generator=generator)
        nn.init.zeros_(self.hidden.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(s))).squeeze(-1)


class ControlVariates(nn.Module):
    r"""REBAR's :math:`(\eta, \lambda)` and RELAX's :math:`(\eta, \lambda, r)`, one set per stochastic layer of ``dims``.

    :math:`\eta` starts at :data:`pwgf.estimators.REBAR_ETA`, :math:`\lambda = e^{\log\lambda}` at
    :data:`pwgf.estimators.REBAR_TEMPERATURE` (kept positive by its log), :math:`r` (RELAX only) at zero.
    """

    def __init__(self, estimator: str, dims: tuple[int, ...], *, seed: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        check_choice(estimator, tuple(TUNED_CONTROL_VARIATES), "estimator")
        self.eta = nn.Parameter(torch.full((len(dims),), estimators.REBAR_ETA, dtype=dtype))
        self.log_temperature = nn.Parameter(torch.full((len(dims),), math.log(estimators.REBAR_TEMPERATURE), dtype=dtype))
        generator = torch.Generator().manual_seed(seed)
        self.control = nn.ModuleList([_ControlNetwork(d, generator, dtype) for d in dims]) if estimator == "relax" else None

    def options(self, layer: int) -> dict[str, Any]:
        """Keyword options of :func:`pwgf.estimators.surrogate` for stochastic layer ``layer`` (0 or 1)."""
        opts: dict[str, Any] = {"eta": self.eta[layer], "temperature": self.log_temperature[layer].exp()}
        if self.control is not None:
            opts["control"] = self.control[layer]
        return opts


def _as_options(options: Options | Mapping[str, Any] | None) -> Options:
    if callable(options):
        return options
    fixed = dict(options or {})
    return lambda layer: fixed


def layer_cost(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    *,
    generator: torch.Generator | None = None,
    options: Options | Mapping[str, Any] | None = None,
    n_samples: int | None = None,
    logits: list[torch.Tensor] | None = None,
    form: str | None = None,
) -> Cost:
    r"""The cost :math:`f` of the first stochastic layer: samples ``[n, *batch, d]`` to ``[n, *batch]`` (module docstring).

    One layer: :math:`f(z) = -\log p(x, z)`. Two layers: :math:`f_1(z_1)`, which calls
    ``surrogate(estimator, q(z_2|z_1), f_2, n_samples)`` with ``options(1)``; the layer-2 logits it
    builds are appended to ``logits`` when given (for the variance objective of REBAR and RELAX).
    ``x`` is ``[*batch, x_dim]`` and broadcasts against the samples. ``n_samples`` defaults to
    :data:`pwgf.estimators.MIN_SAMPLES` of the estimator.
    """
    n = estimators.MIN_SAMPLES[estimator] if n_samples is None else n_samples
    layer_options = _as_options(options)
    layer_form = encoder_form(estimator, form)
    if model.n_layers == 1:
        return lambda z: -model.log_joint(x, z, relaxed=True)

    def cost(z1: torch.Tensor) -> torch.Tensor:
        inner = _layer_objective(model.encoder_logits_2(z1), lambda z2: -model.log_prior(z1, z2, relaxed=True), estimator, n,
                                 generator, layer_options(1), logits, layer_form)
        return -model.log_likelihood(x, z1, relaxed=True) + inner

    return cost


def encoder_form(estimator: str, form: str | None = None) -> str:
    """``form`` if given (``"split"`` or ``"full"``), else the estimator's :data:`ENCODER_FORMS` entry."""
    if form is None:
        check_choice(estimator, tuple(ENCODER_FORMS), "estimator")
        return ENCODER_FORMS[estimator]
    check_choice(form, FORMS, "form")
    return form


def _layer_objective(
    layer_logits: torch.Tensor, f: Cost, estimator: str, n: int, generator: torch.Generator | None,
    options: Mapping[str, Any], logits: list[torch.Tensor] | None, form: str,
) -> torch.Tensor:
    """The layer's estimate of ``E_q[f] - H[q]`` for the factorized Bernoulli ``q`` of ``layer_logits`` in ``form`` (:data:`ENCODER_FORMS`), recorded in ``logits``."""
    if logits is not None:
        logits.append(layer_logits)
    q = _bernoulli(layer_logits)
    if form == "split":
        return estimators.surrogate(estimator, q, f, n, generator=generator, **options) - q.entropy()
    return estimators.surrogate(estimator, q, full_cost(f, layer_logits), n, generator=generator, **options)


def full_cost(f: Cost, layer_logits: torch.Tensor) -> Cost:
    r"""The paper's cost :math:`f(z) + \log q_{\bar\phi}(z)` (App. A), the log-density with the logits :math:`\bar\ell` detached.

    :math:`\log q_{\bar\phi}(z) = \sum_j z_j\bar\ell_j - \log(1 + e^{\bar\ell_j})`, affine in :math:`z`, so it is defined
    at the real-valued points of the relaxed estimators too. Detaching drops the term
    :math:`\E_q[\nabla_\phi\log q_\phi] = 0`: an estimator of :math:`\nabla_\phi\E_{q_\phi}[c]` for a cost :math:`c`
    that does not depend on :math:`\phi` then estimates :math:`\nabla_\phi(-\mathcal L)`.
    """
    fixed = layer_logits.detach()

    def cost(z: torch.Tensor) -> torch.Tensor:
        return f(z) + (z * fixed - nn.functional.softplus(fixed)).sum(-1)

    return cost


def encoder_objective(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    *,
    generator: torch.Generator | None = None,
    options: Options | Mapping[str, Any] | None = None,
    n_samples: int | None = None,
    logits: list[torch.Tensor] | None = None,
    form: str | None = None,
) -> torch.Tensor:
    r"""Per-example surrogate ``[*batch]`` whose gradient in the encoder parameters estimates :math:`\nabla_\phi(-\mathcal L(x))`.

    In the ``"split"`` form ``surrogate(estimator, q(z|x), f) - H[q(z|x)]`` with :math:`f` from
    :func:`layer_cost` and the analytic entropy; in the ``"full"`` form ``surrogate(estimator, q(z|x),
    full_cost(f))``. ``form`` defaults to the estimator's :data:`ENCODER_FORMS` entry (the other form is
    for the test that decides it); the value estimates :math:`-\mathcal L(x)` in either. ``options`` is a dict of estimator
    options, or a function of the layer (0, 1) returning them (:meth:`ControlVariates.options`); the
    layer-1 logits are appended to ``logits`` when given, before any layer-2 logits.
    """
    layer_options = _as_options(options)
    n = estimators.MIN_SAMPLES[estimator] if n_samples is None else n_samples
    layer_form = encoder_form(estimator, form)
    f = layer_cost(model, x, estimator, generator=generator, options=layer_options, n_samples=n, logits=logits, form=layer_form)
    return _layer_objective(model.encoder_logits(x), f, estimator, n, generator, layer_options(0), logits, layer_form)
