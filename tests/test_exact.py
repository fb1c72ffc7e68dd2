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


def test_importance_weighted_bound_by_explicit_double_sum():
    # Three states with q = (0.2, 0.3, 0.5) and joint p(x, z) = (0.1, 0.05, 0.02): L_2 = sum_{i,j} q_i q_j log((w_i + w_j) / 2).
    q = torch.tensor([0.2, 0.3, 0.5])
    joint = torch.tensor([0.1, 0.05, 0.02])
    w = joint / q
    by_hand = sum(q[i] * q[j] * torch.log((w[i] + w[j]) / 2) for i in range(3) for j in range(3))
    bounds = [exact.importance_weighted_bound(q.log(), joint.log(), k) for k in (1, 2, 6)]
    assert abs(bounds[0] - (q * w.log()).sum()) < TOL
    assert abs(bounds[1] - by_hand) < TOL
    assert bounds[0] < bounds[1] < bounds[2] < joint.sum().log()
    # Batch dimensions after the state dimension are independent problems.
    batched = exact.importance_weighted_bound(torch.stack([q.log()] * 2, 1), torch.stack([joint.log(), joint.log() - 1], 1), 2)
    assert torch.allclose(batched, torch.stack([by_hand, by_hand - 1]), atol=TOL)


@pytest.mark.parametrize(
    ("log_q", "log_joint", "k", "message"),
    [
        (torch.tensor([0.5, 0.5]).log(), torch.zeros(2), 0, "k must be an integer >= 1"),
        (torch.tensor([0.5, 0.5]).log(), torch.zeros(3), 1, "must have the same shape"),
        (torch.tensor([0.6, 0.6]).log(), torch.zeros(2), 1, "must sum to 1"),
        (torch.tensor([1.0, 0.0]).log(), torch.zeros(2), 1, "must be finite"),
        (torch.full((8,), 0.125).log(), torch.zeros(8), 8, "needs 8\\*\\*8 tuples > max_tuples"),
    ],
)
def test_importance_weighted_bound_rejects_bad_input(log_q, log_joint, k, message):
    with pytest.raises(ValueError, match=message):
        exact.importance_weighted_bound(log_q, log_joint, k)
