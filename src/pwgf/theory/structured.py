r"""Stochastic softmax tricks :cite:`paulus2020gradient`: argmax and regularized argmax over structured sets.

A finite set of structures :math:`\mathcal{Z} = \{z_1, \dots, z_m\} \subset \R^d` (one-hots, k-subsets,
spanning trees, permutations) with random utilities :math:`w = \theta + \varepsilon` gives the
*stochastic argmax trick* :math:`z = \argmax_{z' \in \operatorname{conv}\mathcal{Z}} w^\top z'` and its
relaxation, the *stochastic softmax trick*

.. math::
    z_\tau = \argmax_{z' \in \operatorname{conv}\mathcal{Z}} \; w^\top z' - \tau\, \Omega(z'),

for a strongly convex :math:`\Omega`. With :math:`\Omega` the conjugate of the log-partition
:math:`A(w) = \log\sum_{z\in\mathcal{Z}} e^{w^\top z}`, the relaxation is the vector of marginals
:math:`z_\tau = \grad A(w/\tau) = \E_{q(z\mid w/\tau)}[z]` of the exponential family
:math:`q(z \mid \eta) \propto e^{\eta^\top z}`. This module gives, per structure, the argmax solver
and those marginals in closed form (no enumeration), plus the enumerated references:

* simplex: :func:`sparsemax` (Euclidean :math:`\Omega`) beside ``torch.softmax`` (entropic :math:`\Omega`);
* any finite set given as a matrix: :func:`finite_argmax`, :func:`finite_softmax`;
* k-subsets: :func:`topk_argmax` (sorting), :func:`ksubset_log_partition` (a log-space recursion for
  the elementary symmetric polynomial), :func:`relaxed_topk` (its gradient), :func:`ksubsets`;
* spanning trees: :func:`kruskal`, :func:`spanning_tree_log_partition` (matrix-tree theorem
  :cite:`kirchhoff1847ueber`), :func:`spanning_tree_marginals`, :func:`spanning_trees`;
* permutations: :func:`log_sinkhorn` :cite:`sinkhorn1967concerning` and :func:`gumbel_sinkhorn`
  :cite:`mena2018learning` (entropic :math:`\Omega`, whose :math:`\tau \to 0` limit is the
  assignment problem's solution :cite:`kuhn1955hungarian`).
"""

from __future__ import annotations

import itertools

import torch

from pwgf._validate import check_positive, check_positive_int
from pwgf.projection import _check_tensor

__all__ = [
    "finite_argmax",
    "finite_softmax",
    "ksubsets",
    "topk_argmax",
    "ksubset_log_partition",
    "relaxed_topk",
    "spanning_trees",
    "kruskal",
    "spanning_tree_log_partition",
    "spanning_tree_marginals",
    "log_sinkhorn",
    "gumbel_sinkhorn",
]


# ---- the simplex -------------------------------------------------------------------------------------


# ---- a finite set of structures given as a matrix ----------------------------------------------------


def _check_structures(Z: torch.Tensor, w: torch.Tensor) -> None:
    _check_tensor(Z, "Z", min_ndim=2)
    if Z.ndim != 2 or Z.shape[1] != w.shape[-1]:
        raise ValueError(f"Z must have shape [m, {w.shape[-1]}] (one structure per row), got {tuple(Z.shape)}")


def finite_argmax(w: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    r""":math:`\argmax_{z \in \mathcal{Z}} w^\top z` for structures given as the rows of ``Z`` ``[m, d]``; ``w`` is ``[..., d]``."""
    _check_tensor(w, "w")
    _check_structures(Z, w)
    return Z[(w.detach() @ Z.T.to(w.dtype)).argmax(-1)].to(w.dtype)


def finite_softmax(w: torch.Tensor, Z: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""The exponential-family softmax trick over the rows of ``Z``: :math:`\sum_i q_i z_i`, :math:`q = \operatorname{softmax}(Zw/\tau)`.

    Equal to :math:`\grad_w\, \tau A(w/\tau)` with :math:`A(\eta) = \log\sum_i e^{\eta^\top z_i}`; it costs
    :math:`O(md)` and so serves as the enumerated reference for the closed forms of this module.
    """
    _check_tensor(w, "w")
    _check_structures(Z, w)
    check_positive(temperature, "temperature")
    Z = Z.to(w.dtype)
    return torch.softmax(w @ Z.T / temperature, dim=-1) @ Z


# ---- k-subsets ---------------------------------------------------------------------------------------


def _check_k(k: int, d: int) -> int:
    k = check_positive_int(k, "k")
    if k > d:
        raise ValueError(f"k must lie in [1, d] = [1, {d}], got {k}")
    return k


def ksubsets(d: int, k: int) -> torch.Tensor:
    r"""Every :math:`z \in \{0,1\}^d` with :math:`\sum_i z_i = k`, as a float64 tensor :math:`[\binom{d}{k}, d]`."""
    d = check_positive_int(d, "d")
    k = _check_k(k, d)
    index = torch.tensor(list(itertools.combinations(range(d), k)), dtype=torch.long)
    return torch.zeros(len(index), d, dtype=torch.float64).scatter_(1, index, 1.0)


def topk_argmax(w: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`\argmax_{z \in \{0,1\}^d, \sum z = k} w^\top z`: the indicator of the :math:`k` largest entries (last axis)."""
    _check_tensor(w, "w")
    k = _check_k(k, w.shape[-1])
    index = w.detach().topk(k, dim=-1).indices
    return torch.zeros_like(w.detach()).scatter_(-1, index, 1.0)


def ksubset_log_partition(w: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`A_k(w) = \log \sum_{|S| = k} e^{\sum_{i\in S} w_i} = \log e_k(e^{w_1}, \dots, e^{w_d})`, shape ``w.shape[:-1]``.

    The elementary symmetric polynomials obey :math:`e_j(x_1..x_i) = e_j(x_1..x_{i-1}) + x_i\,
    e_{j-1}(x_1..x_{i-1})`; the recursion runs in log-space (``logaddexp``), vectorized over the batch
    and over :math:`j`, in :math:`O(dk)` operations.
    """
    _check_tensor(w, "w")
    k = _check_k(k, w.shape[-1])
    # log_e[..., j] = log e_j(x_1..x_i) for j = 0..min(i, k); e_0 = 1. Entries with j > i (e_j = 0) are never
    # formed, so no logaddexp(-inf, -inf) (whose gradient is NaN) occurs.
    log_e = torch.zeros(w.shape[:-1] + (1,), dtype=w.dtype)
    for i in range(w.shape[-1]):
        shifted = log_e + w[..., i : i + 1]  # log(x_i e_{j-1}) for j = 1..m
        grown = [shifted[..., -1:]] if log_e.shape[-1] <= k else []
        log_e = torch.cat([log_e[..., :1], torch.logaddexp(log_e[..., 1:], shifted[..., :-1]), *grown], -1)
    return log_e[..., k]


def relaxed_topk(w: torch.Tensor, k: int, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""Relaxed top-k: the marginals :math:`\grad_w\, \tau A_k(w/\tau) = P_{q}(i \in S)` of :math:`q(S) \propto e^{\sum_{i\in S} w_i/\tau}`.

    The exponential-family entropy top-k of :cite:t:`paulus2020gradient`: a point of the polytope
    :math:`\{z\in[0,1]^d : \sum z = k\}` that tends to :func:`topk_argmax` as :math:`\tau \to 0`
    (for distinct :math:`w`). Computed by differentiating :func:`ksubset_log_partition` with a kept
    graph, so it is itself differentiable in ``w``.
    """
    check_positive(temperature, "temperature")
    with torch.enable_grad():
        x = w if w.requires_grad else w.detach().requires_grad_(True)
        log_z = ksubset_log_partition(x / temperature, k)
        keep = w.requires_grad or (isinstance(temperature, torch.Tensor) and temperature.requires_grad)
        (marginals,) = torch.autograd.grad(log_z.sum(), x, create_graph=keep)
    return marginals * temperature


# ---- spanning trees ----------------------------------------------------------------------------------


def _check_graph(n: int, edges: torch.Tensor) -> tuple[int, torch.Tensor]:
    n = check_positive_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be >= 2 nodes, got {n}")
    if not isinstance(edges, torch.Tensor) or edges.ndim != 2 or edges.shape[1] != 2 or edges.dtype not in (torch.int32, torch.int64):
        raise ValueError("edges must be an integer tensor of shape [E, 2]")
    if ((edges < 0) | (edges >= n)).any():
        raise ValueError(f"edges must hold node indices in [0, {n - 1}]")
    if (edges[:, 0] == edges[:, 1]).any():
        raise ValueError("edges must not contain self-loops")
    pairs = {tuple(sorted(e)) for e in edges.tolist()}
    if len(pairs) != len(edges):
        raise ValueError("edges must not contain duplicate edges")
    return n, edges.long()


def _check_edge_weights(theta: torch.Tensor, edges: torch.Tensor, name: str) -> None:
    _check_tensor(theta, name)
    if theta.shape[-1] != edges.shape[0]:
        raise ValueError(f"{name} must have last axis of size E = {edges.shape[0]} (one weight per edge), got {tuple(theta.shape)}")


def _incidence(n: int, edges: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Signed incidence matrix ``[E, n]``: row e is :math:`\\mathbf{e}_u - \\mathbf{e}_v` for edge e = (u, v)."""
    rows = torch.arange(len(edges))
    B = torch.zeros(len(edges), n, dtype=dtype)
    B[rows, edges[:, 0]] = 1.0
    B[rows, edges[:, 1]] = -1.0
    return B


def spanning_trees(n: int, edges: torch.Tensor) -> torch.Tensor:
    r"""Every spanning tree of the graph, as edge indicators :math:`[m, E]` (float64): the enumerated reference.

    Checks all :math:`\binom{E}{n-1}` edge subsets; a subset of :math:`n-1` edges is a spanning tree iff
    its reduced Laplacian is nonsingular (connected). Meant for small graphs (K4 has 16 trees).
    """
    n, edges = _check_graph(n, edges)
    subsets = torch.tensor(list(itertools.combinations(range(len(edges)), n - 1)), dtype=torch.long)
    if subsets.numel() == 0:
        raise ValueError("the graph has fewer than n - 1 edges: no spanning tree")
    Z = torch.zeros(len(subsets), len(edges), dtype=torch.float64).scatter_(1, subsets, 1.0)
    B = _incidence(n, edges, torch.float64)
    laplacians = torch.einsum("en,se,em->snm", B, Z, B)[:, 1:, 1:]
    # A tree's reduced Laplacian is unimodular (det = 1); a forest with a cycle has det = 0.
    trees = Z[torch.linalg.det(laplacians).round() == 1]
    if len(trees) == 0:
        raise ValueError("the graph is not connected: no spanning tree")
    return trees


def kruskal(n: int, edges: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r"""Maximum-weight spanning tree(s) by Kruskal's algorithm, as edge indicators of the shape of ``w`` ``[..., E]``.

    Edges are scanned by decreasing weight and kept when they join two components (union by
    relabelling); the loop runs over the :math:`E` edges and is vectorized over the batch. This is
    :math:`\argmax_{z \in \mathcal{T}} w^\top z` over the spanning trees :math:`\mathcal{T}`.
    """
    n, edges = _check_graph(n, edges)
    _check_edge_weights(w, edges, "w")
    flat = w.detach().reshape(-1, w.shape[-1])
    batch = torch.arange(flat.shape[0])
    label = torch.arange(n).expand(flat.shape[0], n).clone()
    chosen = torch.zeros(flat.shape, dtype=torch.bool)
    for e in flat.argsort(dim=-1, descending=True).T:
        lu = label.gather(1, edges[e, 0, None]).squeeze(1)
        lv = label.gather(1, edges[e, 1, None]).squeeze(1)
        join = lu != lv
        chosen[batch, e] = join
        label = torch.where(join[:, None] & (label == lv[:, None]), lu[:, None], label)
    if (label != label[:, :1]).any():
        raise ValueError("the graph is not connected: no spanning tree")
    return chosen.to(w.dtype).reshape(w.shape)


def _reduced_laplacian(n: int, edges: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced Laplacian of the edge weights :math:`e^{\\theta_e - c}` (node 0 removed) and the shift :math:`c`."""
    c = theta.detach().amax(-1, keepdim=True)
    B = _incidence(n, edges, theta.dtype)
    L = torch.einsum("en,...e,em->...nm", B, torch.exp(theta - c), B)
    return L[..., 1:, 1:], c.squeeze(-1)


def spanning_tree_log_partition(n: int, edges: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    r""":math:`A(\theta) = \log\sum_{T} \prod_{e\in T} e^{\theta_e}` by the matrix-tree theorem, shape ``theta.shape[:-1]``.

    Kirchhoff: the number of spanning trees weighted by :math:`x_e` equals any cofactor of the
    weighted Laplacian :math:`L = \sum_e x_e (\mathbf{e}_u - \mathbf{e}_v)(\mathbf{e}_u - \mathbf{e}_v)^\top`.
    With :math:`x_e = e^{\theta_e - c}`, :math:`c = \max_e \theta_e`, every tree has :math:`n-1` edges, so
    :math:`A = (n-1)c + \log\det L_{\hat 0}` (``torch.logdet``, no overflow).
    """
    n, edges = _check_graph(n, edges)
    _check_edge_weights(theta, edges, "theta")
    L, c = _reduced_laplacian(n, edges, theta)
    log_det = torch.logdet(L)
    if not torch.isfinite(log_det).all():
        raise ValueError("the graph is not connected: no spanning tree")
    return (n - 1) * c + log_det


def spanning_tree_marginals(n: int, edges: torch.Tensor, theta: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    r"""Edge marginals :math:`\mu_e = \partial A/\partial\theta_e = P_q(e \in T)` of :math:`q(T) \propto e^{\sum_{e\in T}\theta_e/\tau}`.

    Closed form (the gradient of :math:`\log\det`): :math:`\mu_e = x_e\,(\mathbf{e}_u - \mathbf{e}_v)^\top
    L_{\hat 0}^{-1} (\mathbf{e}_u - \mathbf{e}_v)` with node 0's row and column of the inverse taken as
    zero: the weight of the edge times its effective resistance. They sum to :math:`n-1`; evaluated at
    :math:`\theta/\tau` they are the spanning-tree softmax trick, which tends to :func:`kruskal` as
    :math:`\tau\to 0`. Differentiable in ``theta``. Accurate while the spread of :math:`\theta/\tau` keeps
    :math:`L` well conditioned in float64 (a spread of a few tens); beyond, use :func:`kruskal`.
    """
    n, edges = _check_graph(n, edges)
    _check_edge_weights(theta, edges, "theta")
    check_positive(temperature, "temperature")
    eta = theta / temperature
    L, _ = _reduced_laplacian(n, edges, eta)
    B = _incidence(n, edges, theta.dtype)[:, 1:]
    solved, info = torch.linalg.solve_ex(L, B.T.expand(L.shape[:-2] + B.T.shape))  # L^{-1} b_e, [..., n-1, E]
    if (info != 0).any() or not torch.isfinite(solved).all():
        raise ValueError(
            "the weighted reduced Laplacian is singular: the graph is not connected, or the spread of theta / temperature "
            "is too large for float64 (edge weights exp(theta/tau - max) underflow)"
        )
    resistance = (B.T * solved).sum(-2)
    return torch.exp(eta - eta.detach().amax(-1, keepdim=True)) * resistance


# ---- permutations ------------------------------------------------------------------------------------


def log_sinkhorn(log_alpha: torch.Tensor, n_iters: int = 200, *, tol: float = 0.0) -> torch.Tensor:
    r"""Sinkhorn-Knopp normalization in log-space: :math:`\log P` of the doubly stochastic matrix :math:`P = \operatorname{diag}(u) e^{\alpha} \operatorname{diag}(v)`.

    Alternately subtracts row and column ``logsumexp`` of ``log_alpha`` ``[..., n, n]``; stops after
    ``n_iters`` iterations or as soon as every row sum is within ``tol`` of 1 (the column sums are exactly 1
    after each column step). The limit is the unique maximizer of :math:`\langle \alpha, P\rangle + H(P)`
    over the Birkhoff polytope :cite:`sinkhorn1967concerning`; differentiable by unrolling.
    """
    _check_tensor(log_alpha, "log_alpha", min_ndim=2)
    if log_alpha.shape[-1] != log_alpha.shape[-2]:
        raise ValueError(f"log_alpha must be square in its last two axes, got {tuple(log_alpha.shape)}")
    n_iters = check_positive_int(n_iters, "n_iters")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    for _ in range(n_iters):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
        if tol > 0 and (torch.logsumexp(log_alpha, dim=-1).exp() - 1).abs().max() <= tol:
            break
    return log_alpha


def gumbel_sinkhorn(
    log_alpha: torch.Tensor, gumbel: torch.Tensor, temperature: float | torch.Tensor, n_iters: int = 200, *, tol: float = 0.0
) -> torch.Tensor:
    r"""Gumbel-Sinkhorn :cite:`mena2018learning`: :math:`S((\alpha + g)/\tau)`, the entropic relaxation of a random permutation.

    :math:`\argmax_{P \in \mathcal{B}_n} \langle \alpha + g, P\rangle + \tau H(P)` over the Birkhoff polytope;
    as :math:`\tau \to 0` it tends to the permutation matrix solving the assignment problem for
    :math:`\alpha + g` (within :math:`\tau\, n\log n` in objective value).
    """
    _check_tensor(gumbel, "gumbel", min_ndim=2)
    check_positive(temperature, "temperature")
    return log_sinkhorn((log_alpha + gumbel) / temperature, n_iters, tol=tol).exp()
