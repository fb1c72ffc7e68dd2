r"""The test problems of the estimator zoo, each a parameter and a cost ``(theta, f)`` for the family form.

Every cost maps samples ``[..., d]`` to costs ``[...]`` and broadcasts over leading axes, so it serves
the family form (``[n, d]``), a batch of examples and the replicated distributions of vectorized
measurements alike; it accepts real-valued points (the relaxations evaluate it off the states). All
tensors are float64.

========================  ==============  =====================================================================
problem                   family, d       cost
========================  ==============  =====================================================================
:func:`tucker`            Bernoulli, 1    :math:`f(z) = (z - p_0)^2` :cite:`tucker2017rebar,yin2019arm`
:func:`decoder`           Bernoulli, 10   :math:`f(z) = \sum_{j=1}^{20} \operatorname{softplus}(a_j) - x_j a_j`, :math:`a = Wz + c`
:func:`poisson_counts`    Poisson, 3      :math:`f(z) = (w^\top \log(1 + z) - 2)^2`
========================  ==============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwgf._validate import check_finite

__all__ = ["tucker", "decoder", "poisson_counts", "TUCKER_P", "TUCKER_P0", "DECODER_SEED"]

Cost = Callable[[torch.Tensor], torch.Tensor]

#: The Bernoulli probability of the Tucker toy in the zoo, away from :math:`p = 1/2` where ST is exact.
TUCKER_P: float = 0.3
#: The zoo's values of :math:`p_0`: true gradients :math:`1 - 2p_0` of 0.1, 0.02 and 0.002.
TUCKER_P0: tuple[float, ...] = (0.45, 0.49, 0.499)
#: Seed of the decoder problem's weights, data and probabilities.
DECODER_SEED: int = 20180926


def tucker(p0: float, p: float = TUCKER_P) -> tuple[torch.Tensor, Cost]:
    r"""The toy of :cite:t:`tucker2017rebar` and :cite:t:`yin2019arm`: one Bernoulli variable and :math:`f(z) = (z - p_0)^2`.

    The exact gradient in :math:`p` is :math:`f(1) - f(0) = 1 - 2p_0`, small when :math:`p_0` is near
    :math:`1/2` while :math:`f` itself is of order :math:`1/4`. Returns ``(tensor([p]), f)``; ``p`` must
    lie in the open interval (0, 1) and ``p0`` be finite.
    """
    if not 0.0 < float(p) < 1.0:
        raise ValueError(f"p must lie in the open interval (0, 1), got {p!r}")
    check_finite(torch.tensor(float(p0)), "p0")

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z - p0) ** 2).sum(-1)

    return torch.tensor([float(p)], dtype=torch.float64), f


def decoder(seed: int = DECODER_SEED) -> tuple[torch.Tensor, Cost]:
    r"""A :math:`d = 10` Bernoulli latent fed to a fixed random logistic decoder: the reconstruction term of a small binary VAE.

    With :math:`W \in \R^{20\times10}` and :math:`c \in \R^{20}` standard normal, a binary datum
    :math:`x \in \{0,1\}^{20}` and :math:`p_i \sim \mathcal U(0.1, 0.9)`, all drawn in this order from
    ``torch.Generator().manual_seed(seed)``, :math:`f(z) = -\log p(x \mid z) =
    \sum_j \operatorname{softplus}(a_j) - x_j a_j` with :math:`a = Wz + c`. Returns ``(p, f)``.
    """
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(20, 10, generator=gen, dtype=torch.float64)
    bias = torch.randn(20, generator=gen, dtype=torch.float64)
    x = (torch.rand(20, generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)
    p = 0.1 + 0.8 * torch.rand(10, generator=gen, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        a = z @ weights.T + bias
        return (torch.nn.functional.softplus(a) - x * a).sum(-1)

    return p, f


def poisson_counts() -> tuple[torch.Tensor, Cost]:
    r"""Three Poisson variables with rates :math:`\lambda = (0.5, 3, 8)` and the non-separable cost :math:`f(z) = (w^\top\log(1+z) - 2)^2`, :math:`w = (1, 0.5, -0.3)`.

    Returns ``(lam, f)``.
    """
    w = torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (torch.log1p(z) @ w - 2.0) ** 2

    return torch.tensor([0.5, 3.0, 8.0], dtype=torch.float64), f
