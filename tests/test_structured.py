"""Tests for pwgf.theory.structured: argmax solvers and softmax tricks against enumeration, scipy and autograd."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import minimum_spanning_tree

from pwgf import projection
from pwgf.theory import structured as S

# float64 identities (closed form vs enumeration) hold to rounding: 1e-10 leaves ample margin over
# the ~1e-15 accumulated error of sums over at most a few hundred terms.
ATOL = 1e-10
K4 = torch.tensor(list(itertools.combinations(range(4), 2)))
# A 5-node graph: the 5-cycle plus chords 0-2 and 1-3 (7 edges).
G5 = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [0, 2], [1, 3]])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


# ---- sparsemax ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(w=st.lists(st.floats(-4, 4), min_size=2, max_size=8), tau=st.floats(0.1, 5.0))
def test_sparsemax_is_euclidean_projection(w, tau):
    x = torch.tensor(w, dtype=torch.float64)
    z = projection.sparsemax(x, tau)
    assert (z >= 0).all() and abs(z.sum().item() - 1) < 1e-12
    # KKT of min ||z - y||^2 on the simplex, y = x / tau: y_i - z_i = nu on the support, y_i <= nu off it.
    y = x / tau
    s = z > 0
    nu = (y - z)[s]
    assert (nu.max() - nu.min()).item() < 1e-12
    assert (y[~s] <= nu.max() + 1e-12).all()


def test_sparsemax_batch_limits_and_gradient():
    w = randn(6, 5, seed=0)
    z = projection.sparsemax(w)
    torch.testing.assert_close(z, torch.stack([projection.sparsemax(r) for r in w]))
    # tau -> 0: the argmax one-hot once tau < (gap between the two largest) ; tau -> inf: uniform
    torch.testing.assert_close(projection.sparsemax(w, 1e-3), torch.nn.functional.one_hot(w.argmax(-1), 5).double())
    torch.testing.assert_close(projection.sparsemax(w, 1e6), torch.full((6, 5), 0.2, dtype=torch.float64), atol=1e-5, rtol=0)
    x = torch.tensor([0.3, 1.2, -0.5, 1.1, 0.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(projection.sparsemax, (x,))


# ---- finite sets and k-subsets -----------------------------------------------------------------------


def test_finite_softmax_and_argmax_on_one_hots_are_softmax_and_argmax():
    w = randn(4, 6, seed=1)
    I = torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(S.finite_softmax(w, I, 0.7), torch.softmax(w / 0.7, -1))
    torch.testing.assert_close(S.finite_argmax(w, I), torch.nn.functional.one_hot(w.argmax(-1), 6).double())


def test_ksubsets_count_and_sums():
    Z = S.ksubsets(6, 3)
    assert Z.shape == (math.comb(6, 3), 6)
    assert (Z.sum(-1) == 3).all() and len({tuple(r) for r in Z.tolist()}) == len(Z)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_ksubset_closed_forms_against_enumeration(k):
    w = randn(3, 6, seed=2 + k)
    Z = S.ksubsets(6, k)
    torch.testing.assert_close(S.ksubset_log_partition(w, k), torch.logsumexp(w @ Z.T, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(S.relaxed_topk(w, k, 0.6), S.finite_softmax(w, Z, 0.6), atol=ATOL, rtol=0)
    torch.testing.assert_close(S.topk_argmax(w, k), S.finite_argmax(w, Z))


def test_relaxed_topk_limit_and_differentiability():
    w = torch.tensor([0.3, 1.2, -0.5, 1.1, 0.0], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(S.relaxed_topk(w, 2, 1e-3), S.topk_argmax(w, 2), atol=1e-30, rtol=0)
    assert torch.autograd.gradcheck(lambda x: S.relaxed_topk(x, 2, 0.8), (w,))
    big = torch.tensor([500.0, -500.0, 0.0], dtype=torch.float64)  # log-space: no overflow
    assert torch.isfinite(S.relaxed_topk(big, 2)).all()


# ---- spanning trees ----------------------------------------------------------------------------------


def test_spanning_tree_counts():
    assert len(S.spanning_trees(4, K4)) == 16  # Cayley: n^(n-2)
    K5 = torch.tensor(list(itertools.combinations(range(5), 2)))
    assert len(S.spanning_trees(5, K5)) == 125
    assert (S.spanning_trees(5, G5).sum(-1) == 4).all()


@pytest.mark.parametrize("n,edges", [(4, K4), (5, G5)])
def test_matrix_tree_against_enumeration_and_autograd(n, edges):
    theta = randn(3, len(edges), seed=10 + n)
    T = S.spanning_trees(n, edges)
    torch.testing.assert_close(S.spanning_tree_log_partition(n, edges, theta), torch.logsumexp(theta @ T.T, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(S.spanning_tree_marginals(n, edges, theta, 0.5), S.finite_softmax(theta, T, 0.5), atol=ATOL, rtol=0)
    x = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(S.spanning_tree_log_partition(n, edges, x).sum(), x)
    torch.testing.assert_close(S.spanning_tree_marginals(n, edges, theta), grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(S.spanning_tree_marginals(n, edges, theta).sum(-1), torch.full((3,), n - 1.0, dtype=torch.float64))


def test_matrix_tree_is_stable_and_differentiable():
    theta = 800.0 + randn(6, seed=3)  # exp(800) overflows: the shift by max(theta) must be in place
    T = S.spanning_trees(4, K4)
    torch.testing.assert_close(S.spanning_tree_log_partition(4, K4, theta), torch.logsumexp(theta @ T.T, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(S.spanning_tree_marginals(4, K4, theta), S.finite_softmax(theta, T), atol=ATOL, rtol=0)
    x = randn(6, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: S.spanning_tree_marginals(4, K4, t, 0.7), (x,))


def test_kruskal_against_scipy_and_enumeration():
    n, E = 5, len(G5)
    w = randn(50, E, seed=4)
    tree = S.kruskal(n, G5, w)
    torch.testing.assert_close(tree, S.finite_argmax(w, S.spanning_trees(n, G5)))
    for b in range(5):  # scipy's minimum spanning tree of negated weights (shifted positive) is the maximum one
        dense = np.zeros((n, n))
        dense[G5[:, 0], G5[:, 1]] = 10.0 - w[b].numpy()
        mst = minimum_spanning_tree(dense).toarray()
        ref = (mst[G5[:, 0], G5[:, 1]] + mst[G5[:, 1], G5[:, 0]]) > 0
        assert np.array_equal(tree[b].numpy() > 0, ref)
    # tau -> 0: with Delta the gap between the best and second-best tree weights and m trees,
    # 1 - q(T*) <= (m - 1) exp(-Delta / tau), so ||mu_tau - 1_{T*}||_1 <= 2 (n - 1) (m - 1) exp(-Delta / tau).
    trees = S.spanning_trees(n, G5)
    top2 = (trees @ w[0]).topk(2).values
    delta = (top2[0] - top2[1]).item()
    for tau in (0.5, 0.2, 0.1):
        gap = (S.spanning_tree_marginals(n, G5, w[0], tau) - tree[0]).abs().sum().item()
        assert gap <= 2 * (n - 1) * (len(trees) - 1) * math.exp(-delta / tau) + ATOL


# ---- Sinkhorn ----------------------------------------------------------------------------------------


def test_sinkhorn_is_doubly_stochastic_and_matches_scaling_form():
    la = randn(2, 5, 5, seed=5)
    P = S.log_sinkhorn(la, 1000, tol=1e-13).exp()
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(P.sum(-2), torch.ones(2, 5, dtype=torch.float64), atol=1e-12, rtol=0)
    # P = diag(u) exp(alpha) diag(v): log P - alpha has rank-one additive structure r_i + c_j
    D = P.log() - la
    torch.testing.assert_close(D - D[:, :, :1] - D[:, :1, :] + D[:, :1, :1], torch.zeros_like(D), atol=1e-10, rtol=0)


def test_gumbel_sinkhorn_small_temperature_is_hungarian():
    n = 6
    la = randn(n, n, seed=6)
    g = -torch.log(-torch.log(torch.rand(n, n, generator=gen(7), dtype=torch.float64)))
    w = la + g
    rows, cols = linear_sum_assignment(w.numpy(), maximize=True)
    perm = torch.zeros(n, n, dtype=torch.float64)
    perm[rows, cols] = 1
    # Enumerate the n! permutations for the gap Delta between the best and second-best assignment.
    values = torch.tensor(sorted((w[range(n), list(p)].sum().item() for p in itertools.permutations(range(n))), reverse=True), dtype=torch.float64)
    assert abs(values[0].item() - (w * perm).sum().item()) < ATOL
    delta = (values[0] - values[1]).item()
    # Anneal: the rescaled log P of the previous temperature has the same Sinkhorn limit (it differs from
    # w / tau by row and column constants) and is a warm start. At intermediate temperatures the iteration
    # can be slow (its rate tends to 1 as tau -> 0); the bounds are about the exact P_tau, so they are checked
    # where the row sums reached 1e-12, which must include the largest and the smallest temperature.
    log_p, previous, converged = w / 1.0, 1.0, []
    for tau in np.geomspace(1.0, 1e-3, 13):
        log_p = S.log_sinkhorn(previous / tau * log_p, 2000, tol=1e-12)
        previous = tau
        P = log_p.exp()
        converged.append(bool((P.sum(-1) - 1).abs().max() <= 1e-12))
        if converged[-1]:
            # Entropy lies in [0, n log n]: objective gap <= tau n log n; by Birkhoff, ||P - P*||_1 <= 2n gap / Delta.
            gap = (w * perm).sum().item() - (w * P).sum().item()
            assert -1e-9 <= gap <= tau * n * math.log(n) + 1e-9
            assert (P - perm).abs().sum().item() <= 2 * n * tau * n * math.log(n) / delta + 1e-9
    assert converged[0] and converged[-1]
    torch.testing.assert_close(S.gumbel_sinkhorn(la, g, 0.3, 5000, tol=1e-13), S.log_sinkhorn(w / 0.3, 5000, tol=1e-13).exp())


def test_sinkhorn_gradient():
    la = randn(3, 3, seed=8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: S.log_sinkhorn(x, 30), (la,))


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_inputs():
    w = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="temperature"):
        projection.sparsemax(w, 0.0)
    with pytest.raises(ValueError, match="finite"):
        projection.sparsemax(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="k must"):
        S.topk_argmax(w, 5)
    with pytest.raises(ValueError, match="k must"):
        S.relaxed_topk(w, 0)
    with pytest.raises(ValueError, match="Z must"):
        S.finite_softmax(w, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="edges"):
        S.kruskal(4, torch.tensor([[0, 4]]), torch.zeros(1))
    with pytest.raises(ValueError, match="self-loops"):
        S.spanning_trees(3, torch.tensor([[0, 0], [0, 1]]))
    with pytest.raises(ValueError, match="duplicate"):
        S.spanning_trees(3, torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="not connected"):
        S.kruskal(4, torch.tensor([[0, 1], [2, 3], [1, 0 + 2]])[:2], torch.zeros(2))
    with pytest.raises(ValueError, match="not connected"):
        S.spanning_tree_log_partition(4, torch.tensor([[0, 1], [1, 2], [0, 2]]), torch.zeros(3))
    with pytest.raises(ValueError, match="last axis"):
        S.spanning_tree_marginals(4, K4, torch.zeros(5))
    with pytest.raises(ValueError, match="square"):
        S.log_sinkhorn(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_iters"):
        S.log_sinkhorn(torch.zeros(2, 2), 0)


def test_relaxed_topk_is_differentiable_in_the_temperature():
    w = torch.tensor([0.3, 1.2, -0.5, 1.1], dtype=torch.float64)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: S.relaxed_topk(w, 2, t), (tau,))
