"""Tests of pwgf.theory.flow: autograd fields against closed-form gradients, the exact projected step against its formula."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from pwgf import exact
from pwgf.theory import flow


def cost(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2.0 * z[:, 0]) + 0.5 * z[:, 0] * z[:, 1] ** 2


def cost_grad(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([2.0 * torch.cos(2.0 * z[:, 0]) + 0.5 * z[:, 1] ** 2, z[:, 0] * z[:, 1]], dim=1)


def cost_grad_coordinate(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda z: cost_grad(z)[:, i]


def test_grad_field_and_step_match_closed_form() -> None:
    z = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flow.grad_field(cost, z), cost_grad(z), rtol=0, atol=1e-12)
    torch.testing.assert_close(flow.wgf_step(z, cost, 0.1), z - 0.1 * cost_grad(z), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("family", "theta"), [("bernoulli", [0.3, 0.8]), ("poisson", [1.5, 4.0])])
def test_projected_step_is_mean_shift(family: str, theta: list[float]) -> None:
    th = torch.tensor(theta, dtype=torch.float64)
    mean_grad = exact.expectation(family, th, cost_grad_coordinate(0)), exact.expectation(family, th, cost_grad_coordinate(1))
    expected = th - 0.01 * torch.stack(mean_grad)
    torch.testing.assert_close(flow.projected_step(family, th, cost, 0.01), expected, rtol=0, atol=1e-10)


def test_bad_inputs_raise() -> None:
    z = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        flow.wgf_step(z, cost, -1.0)
    with pytest.raises(ValueError, match="z must be a non-empty"):
        flow.grad_field(cost, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="f must map"):
        flow.grad_field(lambda x: x, z)
    with pytest.raises(ValueError, match="unknown family"):
        flow.projected_step("categorical", torch.ones(2, 2) / 2, cost, 0.1)
    with pytest.raises(ValueError, match="Poisson rates"):
        flow.projected_step("poisson", torch.tensor([0.1, 0.1], dtype=torch.float64), lambda z: 100.0 * z.sum(1), 1.0)
