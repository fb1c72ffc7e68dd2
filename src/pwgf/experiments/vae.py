r"""The Bernoulli variational auto-encoders of Table 2, their ELBO and importance-weighted bounds.

**Model.** With one stochastic layer of :math:`d` binary units, a binary image :math:`x \in \{0,1\}^D`
has the generative model and variational posterior

.. math::
    p_\vartheta(z) = \prod_{j} \mathrm{Bern}(z_j; \sigma(a_j)), \qquad
    p_\vartheta(x \mid z) = \prod_{i} \mathrm{Bern}(x_i; \sigma(g_\vartheta(z)_i)), \qquad
    q_\phi(z \mid x) = \prod_{j} \mathrm{Bern}(z_j; \sigma(e_\phi(x)_j)),

with prior logits :math:`a`, decoder logits :math:`g` and encoder logits :math:`e`. The two-layer model
stacks :math:`p(z_2)\, p(z_1 \mid z_2)\, p(x \mid z_1)` and :math:`q(z_1 \mid x)\, q(z_2 \mid z_1)`.

**Bounds.** With the importance weight :math:`w(z) = p(x, z) / q(z \mid x)`, the evidence lower bound
:cite:`kingma2014auto` and the importance-weighted bound :cite:`burda2016importance` are

.. math::
    \mathcal{L}(x) = \E_{q}[\log w(z)], \qquad
    \mathcal{L}_k(x) = \E_{z_1,\dots,z_k \sim q}\Big[\log \frac{1}{k}\sum_{s=1}^{k} w(z_s)\Big],

and :math:`\mathcal{L} = \mathcal{L}_1 \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x)`.
:func:`elbo` and :func:`iwae_bound` return unbiased Monte Carlo estimates of :math:`\mathcal{L}(x)` and
:math:`\mathcal{L}_k(x)` per example. The test figure of Table 2 of :cite:`cheng2018straight` is the
negative ELBO.

**Architectures** follow the MNIST scripts of :cite:`yin2019arm` (repository mingzhang-yin/ARM-gradient),
whose protocol the paper follows; every layer is affine with a bias:

============= ======================================= ====================== ==========================
``arch``      encoder / decoder                       layer inputs           prior logits
============= ======================================= ====================== ==========================
"linear"      :math:`x \to z`, :math:`z \to x`        :math:`2x-1`,          learned, initialized at 0
                                                      :math:`2z-1`
"two_layer"   :math:`x \to z_1 \to z_2`,              the 0/1 values         learned (on :math:`z_2`),
              :math:`z_2 \to z_1 \to x`                                      initialized at 0
"nonlinear"   :math:`x \to h \to h \to z` and         the 0/1 values         fixed at 0
              :math:`z \to h \to h \to x`, LeakyReLU                         (:math:`p = 1/2`)
              of slope 0.1 after each hidden layer
============= ======================================= ====================== ==========================

Sources: ``b_mnist_linear_slim.py`` lines 32-41 (the :math:`2x-1`, :math:`2b-1` inputs) and 107 (the
learned prior), ``b_mnist_linear2_slim.py`` lines 31-52 and 131, ``b_mnist_nonlinear_slim.py`` lines
27-44 (slope 0.1, two hidden layers of 200) and 62 (the prior logits are zeros). Weights are drawn
Glorot-uniform and biases start at zero, the defaults of the TensorFlow layers those scripts use. The
prior logits are a parameter where ARM learns them (it trains them by SGD with step size 0.01) and a
buffer otherwise; ``learned_prior`` overrides the choice.
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

from pwgf._validate import check_choice, check_positive_int
from pwgf.families import support

__all__ = ["ARCHITECTURES", "LEAKY_RELU_SLOPE", "BernoulliVAE", "log_weights", "elbo", "iwae_bound", "enumerated_log_densities"]

ARCHITECTURES: tuple[str, ...] = ("linear", "two_layer", "nonlinear")
#: Negative slope of the LeakyReLU of ARM's nonlinear network (``b_mnist_nonlinear_slim.py`` line 27).
LEAKY_RELU_SLOPE: float = 0.1
_HIDDEN = 200


def _bernoulli(logits: torch.Tensor) -> D.Distribution:
    # Inputs are checked once where they enter (binary, right shape), so per-call support checks are skipped.
    return D.Independent(D.Bernoulli(logits=logits, validate_args=False), 1)


class BernoulliVAE(nn.Module):
    """A Bernoulli VAE of ARM's benchmark: ``arch`` in ``ARCHITECTURES`` (see the module docstring).

    ``x_dim`` pixels, ``z_dim`` units in the first stochastic layer, ``z2_dim`` (two_layer only, default
    ``z_dim``) in the second, ``hidden_dim`` (nonlinear only, default 200) units in each deterministic
    layer. Parameters are initialized from a generator seeded with ``seed``, in ``dtype``.

    Every method broadcasts over leading sample dimensions: latents ``[..., B, d]`` with data
    ``[B, x_dim]`` give log-densities ``[..., B]``.
    """

    def __init__(
        self,
        arch: str,
        x_dim: int = 784,
        z_dim: int = 200,
        *,
        z2_dim: int | None = None,
        hidden_dim: int | None = None,
        learned_prior: bool | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_choice(arch, ARCHITECTURES, "arch")
        if z2_dim is not None and arch != "two_layer":
            raise ValueError(f"z2_dim applies only to arch='two_layer', got arch={arch!r}")
        if hidden_dim is not None and arch != "nonlinear":
            raise ValueError(f"hidden_dim applies only to arch='nonlinear', got arch={arch!r}")
        if learned_prior is not None and not isinstance(learned_prior, bool):
            raise ValueError(f"learned_prior must be True, False or None (ARM's choice), got {learned_prior!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.arch = arch
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.z2_dim = check_positive_int(z_dim if z2_dim is None else z2_dim, "z2_dim") if arch == "two_layer" else None
        self.hidden_dim = check_positive_int(_HIDDEN if hidden_dim is None else hidden_dim, "hidden_dim") if arch == "nonlinear" else None
        # ARM feeds 2v - 1 into the linear model's layers only.
        self.centered_inputs = arch == "linear"
        generator = torch.Generator().manual_seed(seed)

        def affine(n_in: int, n_out: int) -> nn.Linear:
            layer = nn.Linear(n_in, n_out, dtype=dtype)
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
            return layer

        def network(n_in: int, n_out: int) -> nn.Module:
            if arch != "nonlinear":
                return affine(n_in, n_out)
            h = self.hidden_dim
            assert h is not None  # set for arch="nonlinear"
            slope = LEAKY_RELU_SLOPE
            return nn.Sequential(affine(n_in, h), nn.LeakyReLU(slope), affine(h, h), nn.LeakyReLU(slope), affine(h, n_out))

        self.encoder = network(self.x_dim, self.z_dim)
        self.decoder = network(self.z_dim, self.x_dim)
        if self.z2_dim is not None:
            self.encoder_2 = affine(self.z_dim, self.z2_dim)
            self.decoder_2 = affine(self.z2_dim, self.z_dim)
        prior = torch.zeros(self.z2_dim or self.z_dim, dtype=dtype)
        if (arch != "nonlinear") if learned_prior is None else learned_prior:
            self.prior_logits = nn.Parameter(prior)
        else:
            self.register_buffer("prior_logits", prior)

    @property
    def n_layers(self) -> int:
        """Number of stochastic layers (1 or 2)."""
        return 2 if self.arch == "two_layer" else 1

    @property
    def dtype(self) -> torch.dtype:
        return self.prior_logits.dtype

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, ``{"encoder": ..., "decoder": ..., "prior": ...}`` (ARM gives each its own optimizer)."""
        groups: dict[str, list[nn.Parameter]] = {"encoder": [], "decoder": [], "prior": []}
        for name, parameter in self.named_parameters():
            groups["prior" if name == "prior_logits" else name.split(".")[0].removesuffix("_2")].append(parameter)
        return groups

    def _inputs(self, v: torch.Tensor) -> torch.Tensor:
        return 2 * v - 1 if self.centered_inputs else v

    def encoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., B, z_dim]`` of :math:`q(z \\mid x)` (of :math:`z_1` for two_layer)."""
        return self.encoder(self._inputs(self._check(x, self.x_dim, "x")))

    def encoder_logits_2(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., B, z2_dim]`` of :math:`q(z_2 \\mid z_1)` (two_layer only)."""
        self._check_two_layer("encoder_logits_2")
        return self.encoder_2(self._check(z, self.z_dim, "z"))

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., B, x_dim]`` of :math:`p(x \\mid z)` (of :math:`p(x \\mid z_1)` for two_layer)."""
        return self.decoder(self._inputs(self._check(z, self.z_dim, "z")))

    def decoder_logits_2(self, z2: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., B, z_dim]`` of :math:`p(z_1 \\mid z_2)` (two_layer only)."""
        self._check_two_layer("decoder_logits_2")
        return self.decoder_2(self._check(z2, self.latent_dims[-1], "z2"))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None = None, *, relaxed: bool = False) -> torch.Tensor:
        """:math:`\\log p(x, z)`, or :math:`\\log p(x, z_1, z_2)` for two_layer (pass ``z2``); shape ``[..., B]``.

        The sum of :meth:`log_likelihood` and :meth:`log_prior`; ``relaxed`` as there.
        """
        return self.log_likelihood(x, z, relaxed=relaxed) + self.log_prior(z, z2, relaxed=relaxed)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, *, relaxed: bool = False) -> torch.Tensor:
        r""":math:`\log p(x \mid z)` (of :math:`x` given :math:`z_1` for two_layer); shape ``[..., B]``.

        By default ``x`` and ``z`` must be binary. With ``relaxed=True`` only their shapes and dtype are
        checked and ``z`` may be any real tensor: the *unchecked path* on which the training costs of
        :mod:`pwgf.experiments.vae_training` run, because pathwise and relaxed estimators evaluate the cost at
        real-valued points (a relaxed sample in :math:`(0,1)^d`, the mean :math:`p`, a moved sample
        :math:`z - \varepsilon\nabla f`). There every factor keeps its closed form
        :math:`v\,\ell - \log(1 + e^{\ell})` in the logits :math:`\ell` (what
        ``torch.distributions.Bernoulli.log_prob`` computes), which is affine in the value :math:`v`, and
        the networks are evaluated at the real-valued :math:`z`.
        """
        self._check_values(x, self.x_dim, "x", relaxed)
        self._check_values(z, self.z_dim, "z", relaxed)
        return _bernoulli(self.decoder_logits(z)).log_prob(x)

    def log_prior(self, z: torch.Tensor, z2: torch.Tensor | None = None, *, relaxed: bool = False) -> torch.Tensor:
        """:math:`\\log p(z)`, or :math:`\\log p(z_1 \\mid z_2) + \\log p(z_2)` for two_layer; shape ``[..., B]``; ``relaxed`` as in :meth:`log_likelihood`."""
        if (z2 is None) != (self.n_layers == 1):
            raise ValueError(f"z2 must be given exactly when arch='two_layer', got arch={self.arch!r} and z2={'None' if z2 is None else 'a tensor'}")
        self._check_values(z, self.z_dim, "z", relaxed)
        if z2 is None:
            return _bernoulli(self.prior_logits).log_prob(z)
        self._check_values(z2, self.latent_dims[-1], "z2", relaxed)
        return _bernoulli(self.decoder_2(z2)).log_prob(z) + _bernoulli(self.prior_logits).log_prob(z2)

    def log_q(self, x: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\log q(z \\mid x)`, or :math:`\\log q(z_1 \\mid x) + \\log q(z_2 \\mid z_1)` for two_layer; shape ``[..., B]``."""
        self._check(x, self.x_dim, "x")
        self._check_latents(z, z2)
        return self._log_q(x, z, z2)

    def sample_latents(self, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``n_samples`` draws from :math:`q` for each row of ``x`` ``[B, x_dim]``: ``(z,)`` or ``(z1, z2)``, each ``[n_samples, B, d]``."""
        n_samples = check_positive_int(n_samples, "n_samples")
        probs = torch.sigmoid(self.encoder_logits(x))
        z = _draw_bernoulli(probs.expand(n_samples, *probs.shape), generator)
        if self.n_layers == 1:
            return (z,)
        return z, _draw_bernoulli(torch.sigmoid(self.encoder_2(z)), generator)

    def _log_q(self, x: torch.Tensor, z: torch.Tensor, z2: torch.Tensor | None) -> torch.Tensor:
        log_q1 = _bernoulli(self.encoder_logits(x)).log_prob(z)
        return log_q1 if z2 is None else log_q1 + _bernoulli(self.encoder_2(z)).log_prob(z2)

    def _check(self, v: torch.Tensor, dim: int, name: str) -> torch.Tensor:
        if not isinstance(v, torch.Tensor) or v.ndim < 1 or v.shape[-1] != dim:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{name} must be a tensor of shape [..., {dim}], got {shape}")
        if v.dtype != self.dtype:
            raise ValueError(f"{name} must have the model's dtype {self.dtype}, got {v.dtype}")
        return v

    def _check_binary(self, v: torch.Tensor, dim: int, name: str) -> None:
        self._check(v, dim, name)
        if not ((v == 0) | (v == 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1 (binary units)")

    def _check_values(self, v: torch.Tensor, dim: int, name: str, relaxed: bool) -> None:
        if relaxed:
            self._check(v, dim, name)
        else:
            self._check_binary(v, dim, name)

    def _check_latents(self, z: torch.Tensor, z2: torch.Tensor | None) -> None:
        if (z2 is None) != (self.n_layers == 1):
            raise ValueError(f"z2 must be given exactly when arch='two_layer', got arch={self.arch!r} and z2={'None' if z2 is None else 'a tensor'}")
        self._check_binary(z, self.z_dim, "z")
        if z2 is not None:
            self._check_binary(z2, self.latent_dims[-1], "z2")

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """Units per stochastic layer: ``(z_dim,)``, or ``(z_dim, z2_dim)`` for two_layer."""
        return (self.z_dim,) if self.z2_dim is None else (self.z_dim, self.z2_dim)

    def _check_two_layer(self, method: str) -> None:
        if self.n_layers != 2:
            raise ValueError(f"{method} exists only for arch='two_layer', got arch={self.arch!r}")


def _draw_bernoulli(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli draws with ``generator`` on its own device, returned on the device of ``probs`` (a CPU generator serves a GPU model)."""
    if generator is None or generator.device == probs.device:
        return torch.bernoulli(probs, generator=generator)
    return torch.bernoulli(probs.to(generator.device), generator=generator).to(probs.device)


def log_weights(model: BernoulliVAE, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Log importance weights :math:`\log p(x, z_s) - \log q(z_s \mid x)`, :math:`z_s \sim q(\cdot \mid x)`: ``[n_samples, B]``.

    For two_layer, :math:`z_1 \sim q(z_1 \mid x)` and :math:`z_2 \sim q(z_2 \mid z_1)`.
    """
    if not isinstance(model, BernoulliVAE):
        raise ValueError(f"model must be a BernoulliVAE, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of images of shape [B, {model.x_dim}], got {getattr(x, 'shape', type(x).__name__)}")
    model._check_binary(x, model.x_dim, "x")
    latents = model.sample_latents(x, n_samples, generator)
    z, z2 = latents if len(latents) == 2 else (latents[0], None)
    return model.log_joint(x, z, z2, relaxed=True) - model._log_q(x, z, z2)


def elbo(model: BernoulliVAE, x: torch.Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Monte Carlo ELBO per example ``[B]``: the mean of ``n_samples`` log weights (unbiased for :math:`\mathcal{L}(x)`).

    Differentiable in the decoder and prior parameters. The samples are discrete, so its gradient in the
    encoder parameters is not a gradient of :math:`\mathcal{L}`: train the encoder with
    :mod:`pwgf.estimators`.
    """
    return log_weights(model, x, n_samples, generator).mean(0)


@torch.no_grad()
def iwae_bound(model: BernoulliVAE, x: torch.Tensor, k: int, *, chunk: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Monte Carlo :math:`k`-sample importance-weighted bound per example ``[B]`` :cite:`burda2016importance`.

    Computes :math:`\log \frac{1}{k} \sum_{s=1}^{k} w(z_s)` for one draw of :math:`k` samples, which is
    unbiased for :math:`\mathcal{L}_k(x)`. The samples are drawn ``chunk`` at a time and combined as
    :math:`\operatorname{logsumexp}_c \operatorname{logsumexp}_{s \in c} \log w_s - \log k` in float64,
    so memory grows with ``chunk`` rather than ``k`` (``k = 1000`` at batch 100 in chunks of 100 holds
    ``[100, 100, x_dim]`` decoder outputs at a time). An evaluation metric: no gradient is recorded.
    """
    k = check_positive_int(k, "k")
    chunk = check_positive_int(chunk, "chunk")
    per_chunk = [
        torch.logsumexp(log_weights(model, x, min(chunk, k - start), generator).to(torch.float64), dim=0)
        for start in range(0, k, chunk)
    ]
    return (torch.logsumexp(torch.stack(per_chunk), dim=0) - math.log(k)).to(x.dtype)


def enumerated_log_densities(model: BernoulliVAE, x: torch.Tensor, *, max_states: int = 2**16) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\log q(z \mid x)` and :math:`\log p(x, z)` at every latent state, each ``[S, B]``, for a model small enough to enumerate.

    The states are all :math:`S = 2^{d}` binary vectors, :math:`d` = ``z_dim`` (plus ``z2_dim`` for
    two_layer, whose state is the pair :math:`(z_1, z_2)`); more than ``max_states`` raises ValueError.
    Then :math:`\log p(x) = \operatorname{logsumexp}_z \log p(x, z)` exactly, and
    :func:`pwgf.exact.importance_weighted_bound` gives :math:`\mathcal{L}_k(x)` exactly.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of images of shape [B, {model.x_dim}], got {getattr(x, 'shape', type(x).__name__)}")
    dims = list(model.latent_dims)
    states = support("bernoulli", torch.full((sum(dims),), 0.5, dtype=model.dtype), max_states=max_states)
    latents = states[:, None, :].expand(-1, len(x), -1).split(dims, dim=-1)
    return model.log_q(x, *latents), model.log_joint(x, *latents)
