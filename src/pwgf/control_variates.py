r"""RELAX and REBAR control variates trained in the user's own training loop.

RELAX :cite:`grathwohl2018relax` and REBAR :cite:`tucker2017rebar` are unbiased for every value of
their control variate :math:`c(x) = \eta f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))`, and they train
it to minimize the variance of the estimate while the model trains on the estimate itself. For an
unbiased estimator :math:`\E\lVert\hat g\rVert^2 = \sum_k\Var(\hat g_k) + \lVert\nabla_\theta L\rVert^2`,
whose second term does not depend on the control variate, so the variance objective is
:math:`\lVert\hat g\rVert^2` (Grathwohl et al., Section 3.3). :class:`RelaxControl` holds
:math:`\eta`, the temperature :math:`\lambda` and the control network :math:`r`, builds the surrogate
(:func:`pwgf.estimators.relax`) with them, and sends the gradient of that objective to them and
nowhere else:

.. code-block:: python

    control = RelaxControl(torch.nn.Sequential(...))            # r maps relaxed samples to [n, batch]
    optimizer = torch.optim.Adam([*model.parameters(), *control.parameters()])
    for x in data:
        logits = encoder(x)
        loss = control.surrogate(D.Independent(D.Bernoulli(logits=logits), 1), cost, 1)
        control.variance_backward(loss, logits)                  # grad of ||g||^2 into eta, lambda, r only
        loss.mean().backward()                                   # the model: the RELAX estimate, as without it
        optimizer.step(); optimizer.zero_grad()

The surrogate gives :math:`\eta`, :math:`\lambda` and the parameters of :math:`r` exactly zero
gradient (the contract of :mod:`pwgf.estimators`), and :meth:`RelaxControl.variance_backward`
differentiates the objective with respect to them alone: the model's parameters receive exactly the
gradient they would receive from the same surrogate with the control variate held fixed, and the
parameters of ``f`` (a decoder) never see the variance objective.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pwgf import estimators
from pwgf._validate import check_positive

__all__ = ["RelaxControl"]


class RelaxControl(nn.Module):
    r"""The trainable control variate :math:`c(x) = \eta f(\sigma_\lambda(x)) + r(\sigma_\lambda(x))` of RELAX (REBAR when ``control`` is None).

    ``control`` is :math:`r`, a module mapping relaxed samples ``[n, *batch_shape, *event_shape]`` to
    ``[n, *batch_shape]`` (None: REBAR, which adapts :math:`\eta` and :math:`\lambda` only). ``eta``
    (default 1) and ``temperature`` (default 0.5, > 0) are the initial :math:`\eta` and :math:`\lambda`;
    :math:`\lambda` is learned as its logarithm, so it stays positive. ``learn_eta=False`` or
    ``learn_temperature=False`` keeps that one fixed; ``dtype`` is that of the two scalars.
    """

    def __init__(
        self,
        control: nn.Module | None = None,
        *,
        eta: float = estimators.REBAR_ETA,
        temperature: float = estimators.REBAR_TEMPERATURE,
        learn_eta: bool = True,
        learn_temperature: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_positive(float(temperature), "temperature")
        if not math.isfinite(eta):
            raise ValueError(f"eta must be finite, got {eta!r}")
        self.eta = nn.Parameter(torch.tensor(float(eta), dtype=dtype), requires_grad=learn_eta)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature), dtype=dtype), requires_grad=learn_temperature)
        self.control = control

    @property
    def temperature(self) -> torch.Tensor:
        r"""The temperature :math:`\lambda = \exp(\text{log\_temperature}) > 0`."""
        return self.log_temperature.exp()

    def surrogate(self, dist: estimators.Distribution, f: estimators.Cost, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The RELAX surrogate (:func:`pwgf.estimators.relax`) with this module's :math:`\\eta`, :math:`\\lambda` and :math:`r`, shape ``batch_shape``."""
        return estimators.relax(dist, f, n_samples, eta=self.eta, temperature=self.temperature, control=self.control, generator=generator)

    def variance_backward(self, loss: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
        r"""Accumulate the gradient of the variance objective :math:`\lVert\hat g\rVert^2` into this module's parameters, and return the objective.

        ``loss`` is the result of :meth:`surrogate` and ``parameter`` the tensor that parameterizes its
        distribution (the encoder's logits, say); :math:`\hat g = \partial\,\text{loss.sum()}/\partial\,
        \text{parameter}`, the batch's per-example estimates, is taken with ``create_graph=True`` and the
        objective is differentiated with respect to :math:`\eta`, :math:`\lambda` and :math:`r` only, so
        no other tensor's ``.grad`` changes. Call it before ``loss.backward()`` (which needs the graph
        it keeps).
        """
        if not isinstance(parameter, torch.Tensor) or not parameter.requires_grad:
            raise ValueError("parameter must be the tensor that parameterizes the distribution, and it must require grad")
        trained = [p for p in self.parameters() if p.requires_grad]
        if not trained:
            raise ValueError("RelaxControl has nothing to train: eta and the temperature are fixed and there is no control network")
        (estimate,) = torch.autograd.grad(loss.sum(), parameter, create_graph=True)
        objective = estimate.pow(2).sum()
        grads = torch.autograd.grad(objective, trained, retain_graph=True, allow_unused=True, materialize_grads=True)
        for p, grad in zip(trained, grads, strict=True):
            p.grad = grad if p.grad is None else p.grad + grad
        return objective.detach()
