r"""Evaluation of the Bernoulli VAEs of Table 2: validation and test negative ELBO, the importance-weighted test bound, and the variance of the encoder's gradient estimates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from pwgf import estimators
from pwgf.experiments.vae import BernoulliVAE, elbo, iwae_bound, log_weights
from pwgf.experiments.vae_objective import (
    Options,
    _as_options,
    _bernoulli,
    encoder_form,
    full_cost,
    layer_cost,
)

__all__ = [
    "valid_neg_elbo",
    "test_neg_elbo",
    "nll_bound",
    "logit_gradient_estimates",
    "gradient_variance",
]


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


_VALID_SEED, _TEST_SEED = 0x7A11D, 0x7E57


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

    :func:`pwgf.experiments.vae.iwae_bound` per image (one draw of :math:`k` samples; :math:`\mathcal L_k \le \log p(x)`,
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
