r"""One training step's gradients of the Bernoulli VAEs of Table 2 (:func:`step_gradients`), and replicates of the encoder's.

Encoder by the estimator, decoder and prior by the exact gradient of a single-sample ELBO, control
variates by one step on the summed squared per-example estimates (:mod:`pwgf.experiments.vae_training`
gives the formulas); :func:`encoder_gradient_replicates` and :func:`exact_encoder_gradient` give the
replicated and the exact encoder gradients the variance measurements and the book's checks use.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from pwgf._validate import check_positive_int
from pwgf.experiments.vae import BernoulliVAE, elbo, enumerated_log_densities
from pwgf.experiments.vae_objective import (
    ControlVariates,
    Options,
    encoder_objective,
)

__all__ = [
    "StepGradients",
    "step_gradients",
    "replicated_encoder",
    "encoder_gradient_replicates",
    "exact_encoder_gradient",
]


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
    latent state (:func:`pwgf.experiments.vae.enumerated_log_densities`): no sampling and no estimator, so it is an
    independent reference for models small enough to enumerate.
    """
    log_q, log_joint = enumerated_log_densities(model, x)
    neg_elbo = -(log_q.exp() * (log_joint - log_q)).sum(0).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(neg_elbo, model.parameter_groups()["encoder"])])
