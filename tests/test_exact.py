"""Exact expectations and gradients by enumeration, against closed forms."""

import pytest
import torch

from pwgf import exact

torch.set_default_dtype(torch.float64)
# Enumeration sums a handful of float64 terms: agreement with closed forms to 1e-12 is expected.
TOL = 1e-12


def test_bernoulli_linear_cost_gradient_is_the_weight_vector():
    w = torch.tensor([1.5, -2.0, 0.25])
    p = torch.tensor([0.2, 0.5, 0.9])
    assert torch.allclose(exact.gradient("bernoulli", p, lambda z: z @ w), w, atol=TOL)
    assert torch.allclose(exact.expectation("bernoulli", p, lambda z: z @ w), p @ w, atol=TOL)


def test_bernoulli_quadratic_cost_matches_closed_form():
    # E[(z1 + z2)^2] = p1 + p2 + 2 p1 p2, so the gradient is (1 + 2 p2, 1 + 2 p1).
    p = torch.tensor([0.3, 0.8])
    grad = exact.gradient("bernoulli", p, lambda z: z.sum(-1) ** 2)
    assert torch.allclose(grad, torch.tensor([1 + 2 * 0.8, 1 + 2 * 0.3]), atol=TOL)


@pytest.mark.parametrize("rate", [0.01, 3.0, 120.0])
def test_poisson_second_moment_gradient(rate):
    # E[z^2] = lambda + lambda^2; the truncation leaves out < 1e-12 mass, far below the tolerance.
    lam = torch.tensor([rate])
    grad = exact.gradient("poisson", lam, lambda z: z[:, 0] ** 2)
    assert torch.allclose(grad, torch.tensor([1 + 2 * rate]), rtol=1e-9)


def test_categorical_gradient_is_that_of_the_scale_invariant_extension():
    costs = torch.tensor([1.0, 2.0, 4.0])
    theta = torch.tensor([[0.2, 0.3, 0.5]])
    grad = exact.gradient("categorical", theta, lambda z: (z * costs).sum((-1, -2)))
    assert torch.allclose(grad[0], costs - theta[0] @ costs, atol=TOL)
    # Euler's identity for a function of theta / theta.sum(): theta . grad = 0.
    assert abs((theta * grad).sum().item()) < TOL


def test_gradient_matches_autograd_of_expectation_on_a_network_cost():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    p = torch.tensor([0.1, 0.6, 0.4], requires_grad=True)
    value = exact.expectation("bernoulli", p, lambda z: net(z)[:, 0])
    (auto,) = torch.autograd.grad(value, p)
    assert torch.allclose(exact.gradient("bernoulli", p, lambda z: net(z)[:, 0]), auto, atol=TOL)


def test_cost_with_wrong_shape_raises():
    with pytest.raises(ValueError, match="f must map"):
        exact.expectation("bernoulli", torch.tensor([0.5]), lambda z: z)
