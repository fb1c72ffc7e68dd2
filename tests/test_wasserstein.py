"""Tests of pwgf.theory.wasserstein against POT's exact LP (``ot.emd2``) and the closed forms of the paper.

Tolerance: the LP and the quantile formula are both exact in float64; they agree to a few ulps of the
cost scale, so 1e-9 (absolute, costs of order 1-10) leaves a wide margin without hiding any error.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pwgf.theory import wasserstein as W

TOL = 1e-9
SETTINGS = settings(max_examples=40, deadline=None)


def lp(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Exact W2^2 by the network-simplex LP on the squared Euclidean cost."""
    x2 = x.reshape(len(x), -1)
    y2 = y.reshape(len(y), -1)
    return float(ot.emd2(a, b, ot.dist(x2, y2, metric="sqeuclidean")))


@st.composite
def measure(draw: st.DrawFn, max_atoms: int = 6, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_atoms))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 5, size=n) / 2.0 if ties else rng.normal(scale=2.0, size=n)
    w = rng.dirichlet(np.ones(n))
    return x, w


@SETTINGS
@given(measure(), measure())
def test_w2_1d_equals_lp(mu: tuple, nu: tuple) -> None:
    (x, a), (y, b) = mu, nu
    assert W.w2_squared_1d(x, y, a, b) == pytest.approx(lp(x, y, a, b), abs=TOL)


@SETTINGS
@given(measure(ties=True), measure(ties=True))
def test_w2_1d_symmetric_with_ties(mu: tuple, nu: tuple) -> None:
    (x, a), (y, b) = mu, nu
    assert W.w2_squared_1d(x, y, a, b) == pytest.approx(W.w2_squared_1d(y, x, b, a), abs=TOL)
    assert W.w2_squared_1d(x, y, a, b) == pytest.approx(lp(x, y, a, b), abs=TOL)
    assert W.w2_squared_1d(x, x, a, a) == pytest.approx(0.0, abs=TOL)


def test_uniform_weights_default_and_torch_inputs() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=4)
    ref = lp(x, y, np.full(7, 1 / 7), np.full(4, 1 / 4))
    assert W.w2_squared_1d(torch.tensor(x), torch.tensor(y)) == pytest.approx(ref, abs=TOL)


@SETTINGS
@given(st.floats(0, 1), st.floats(0, 1))
def test_bernoulli_remark(p: float, q: float) -> None:
    ref = lp(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1 - p, p]), np.array([1 - q, q]))
    assert W.w2_squared_bernoulli(p, q) == pytest.approx(ref, abs=TOL)
    assert W.w2_squared_bernoulli(p, q) == W.w2_squared_bernoulli(q, p)


@SETTINGS
@given(st.floats(0, 1), measure(max_atoms=8, ties=True))
def test_bernoulli_to_equals_lp_with_ties(p: float, nu: tuple) -> None:
    y, b = nu
    ref = lp(np.array([0.0, 1.0]), y, np.array([1 - p, p]), b)
    assert W.w2_squared_bernoulli_to(p, y, b) == pytest.approx(ref, abs=TOL)
    assert W.w2_squared_bernoulli_to(p, y, b) == pytest.approx(W.w2_squared_1d([0.0, 1.0], y, [1 - p, p], b), abs=TOL)


def test_bernoulli_to_vectorized_and_to_bernoulli() -> None:
    ps = np.linspace(0, 1, 11)
    out = W.w2_squared_bernoulli_to(ps, [0.0, 1.0], [0.7, 0.3])
    np.testing.assert_allclose(out, np.abs(ps - 0.3), atol=TOL)


@SETTINGS
@given(measure(max_atoms=8, ties=True))
def test_projection_interval_minimizes(nu: tuple) -> None:
    y, b = nu
    lo, hi = W.project_to_bernoulli(y, b)
    assert 0.0 <= lo <= hi <= 1.0
    grid = np.linspace(0, 1, 2001)
    values = W.w2_squared_bernoulli_to(grid, y, b)
    best = W.w2_squared_bernoulli_to(np.array([lo, 0.5 * (lo + hi), hi]), y, b)
    # phi is convex and piecewise linear: the interval attains the minimum, nothing on the grid beats it.
    assert values.min() >= best.max() - TOL
    outside = (grid < lo - 1e-3) | (grid > hi + 1e-3)
    assert (values[outside] > best.max() + 1e-6).all()


@SETTINGS
@given(st.integers(2, 3), st.integers(0, 2**32 - 1))
def test_factorized_equals_lp_on_products(d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=rng.integers(1, 4)) for _ in range(d)]
    ys = [rng.normal(size=rng.integers(1, 4)) for _ in range(d)]
    aw = [rng.dirichlet(np.ones(len(x))) for x in xs]
    bw = [rng.dirichlet(np.ones(len(y))) for y in ys]
    (px, pa), (py, pb) = W.product_measure(xs, aw), W.product_measure(ys, bw)
    assert W.w2_squared_factorized(xs, aw, ys, bw) == pytest.approx(lp(px, py, pa, pb), abs=TOL)


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_marginal_sum_is_lower_bound_without_product(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2))
    a, b = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(4))
    marginal_sum = W.w2_squared_factorized(list(x.T), [a, a], list(y.T), [b, b])
    assert marginal_sum <= lp(x, y, a, b) + TOL


@SETTINGS
@given(measure(), measure())
def test_mean_bound_theorem_2_2(mu: tuple, nu: tuple) -> None:
    (x, a), (y, b) = mu, nu
    bound = W.mean_bound(x, y, a, b)
    assert bound == pytest.approx(abs(a @ x - b @ y), abs=TOL)
    w1 = float(ot.emd2(a, b, ot.dist(x[:, None], y[:, None], metric="euclidean")))
    assert bound <= w1 + TOL
    assert w1 <= np.sqrt(W.w2_squared_1d(x, y, a, b)) + TOL


def test_mean_bound_multivariate() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 1.0
    assert W.mean_bound(x, y) <= np.sqrt(lp(x, y, np.full(6, 1 / 6), np.full(5, 1 / 5))) + TOL


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: W.w2_squared_1d([], [1.0]), "x must not be empty"),
        (lambda: W.w2_squared_1d([np.nan], [1.0]), "x must be finite"),
        (lambda: W.w2_squared_1d([0.0, 1.0], [1.0], [0.5, 0.6]), "x_weights must sum to 1"),
        (lambda: W.w2_squared_1d([0.0, 1.0], [1.0], [1.5, -0.5]), "x_weights must be non-negative"),
        (lambda: W.w2_squared_1d([0.0, 1.0], [1.0], [1.0]), r"x_weights must have shape \(2,\)"),
        (lambda: W.w2_squared_1d([[0.0, 1.0]], [1.0]), "x must be 1-dimensional"),
        (lambda: W.w2_squared_bernoulli(1.2, 0.5), r"p must lie in \[0, 1\]"),
        (lambda: W.w2_squared_bernoulli(0.2, -0.1), r"q must lie in \[0, 1\]"),
        (lambda: W.w2_squared_bernoulli_to(-0.1, [0.0]), r"p must lie in \[0, 1\]"),
        (lambda: W.w2_squared_bernoulli_to(0.5, [0.0, np.inf]), "values must be finite"),
        (lambda: W.project_to_bernoulli([0.0, 1.0], [0.2, 0.2]), "weights must sum to 1"),
        (lambda: W.w2_squared_factorized([[0.0]], None, [[0.0], [1.0]], None), "ys must hold as many"),
        (lambda: W.w2_squared_factorized([], None, [], None), "xs must hold at least one"),
        (lambda: W.product_measure([[0.0], [1.0]], [None]), "weights must hold 2"),
        (lambda: W.mean_bound(np.zeros((2, 2)), np.zeros((2, 3))), "same dimension"),
    ],
)
def test_bad_inputs_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
