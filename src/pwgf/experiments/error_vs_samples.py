r"""The experiment *When does a biased estimator win?*: gradient error against samples and dimension.

For a dimension :math:`d` and a seed, the problem is a fixed nonlinear cost of a :math:`d`-dimensional
Bernoulli vector,

.. math::
    f(z) = \Big(\tfrac{1}{\sqrt d}\, a^\top z - 1\Big)^2 + \sin\big(b^\top z\big), \qquad a_i, b_i \sim \mathcal N(0, 1),

at probabilities :math:`p_i \sim \mathrm U(0.1, 0.9)` (:func:`problem`). A run (:func:`run`) draws
``replicates`` independent estimates :math:`\hat g_r`, each from ``n`` samples, and reports the relative
mean squared error :math:`\frac1R\sum_r\lVert\hat g_r - g\rVert^2/\lVert g\rVert^2` against the exact
gradient :math:`g` (enumeration of the :math:`2^d` states), with its standard error, the relative
squared bias and the relative variance. Configs are flat dicts ``{estimator, d, n, replicates, seed}``
(:func:`configs`); the notebook ``notebooks/error_vs_samples.md`` runs them with :func:`pwgf.experiments.sweep.run_sweep`
after :func:`validate_parameters` has checked its parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from pwgf import estimators as est
from pwgf import exact
from pwgf._validate import check_choice, check_list, check_positive_int
from pwgf.experiments.sweep import check_scheduler

__all__ = ["MAX_DIM", "problem", "run", "configs", "validate_parameters"]

#: Largest dimension: the exact gradient enumerates :math:`2^d` states.
MAX_DIM: int = 16


def problem(d: int, seed: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The probabilities ``p`` ``[d]`` and the cost ``f`` (samples ``[n, d]`` to ``[n]``) of dimension ``d``, fixed by ``seed``, in float64."""
    g = torch.Generator().manual_seed(seed * 1000 + d)
    a, b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    p = 0.1 + 0.8 * torch.rand(d, generator=g, dtype=torch.float64)
    return p, lambda z: (z @ a / d**0.5 - 1) ** 2 + torch.sin(z @ b)


def run(config: Mapping[str, Any]) -> dict[str, float]:
    """One run: ``replicates`` estimates of ``estimator`` with ``n`` samples each in dimension ``d`` (module docstring).

    Seeded by ``hash((seed, d, n))``, deterministic in Python for a tuple of integers (only strings are
    salted), so a resumed sweep and any worker draw exactly what an uninterrupted one would.
    """
    p, f = problem(config["d"], config["seed"])
    g = exact.gradient("bernoulli", p, f)
    generator = torch.Generator().manual_seed(hash((config["seed"], config["d"], config["n"])) % 2**62)
    draws = est.estimates(config["estimator"], "bernoulli", p, f, config["n"], config["replicates"], generator=generator)
    sq_err = ((draws - g) ** 2).sum(-1) / g.pow(2).sum()
    bias_sq = ((draws.mean(0) - g) ** 2).sum() / g.pow(2).sum()
    return {
        "rel_mse": sq_err.mean().item(),
        "rel_mse_se": (sq_err.std() / len(sq_err) ** 0.5).item(),
        "rel_bias_sq": bias_sq.item(),
        "rel_variance": (draws.var(0).sum() / g.pow(2).sum()).item(),
    }


def configs(estimator_names: Sequence[str], dims: Sequence[int], n_samples: Sequence[int], replicates: int, seed: int) -> list[dict[str, Any]]:
    """Every estimator x dimension x sample size, in that order."""
    return [{"estimator": e, "d": int(d), "n": int(n), "replicates": int(replicates), "seed": int(seed)}
            for e in estimator_names for d in dims for n in n_samples]


def validate_parameters(
    estimators: Sequence[str], dims: Sequence[int], n_samples: Sequence[int], replicates: int, seed: int, scheduler: str, workers: int
) -> None:
    """Check the notebook's parameters before any run: ValueError naming the parameter and its allowed range.

    ``estimators``: names of :data:`pwgf.estimators.ESTIMATORS` for the Bernoulli family; ``dims``:
    integers in [1, :data:`MAX_DIM`]; ``n_samples``: integers >= 2 (the leave-one-out baseline); ``replicates``
    >= 2 (a variance); ``seed`` >= 0; ``scheduler`` and ``workers`` as :func:`pwgf.experiments.sweep.run_sweep` takes them.
    """
    for name in check_list(estimators, "estimators"):
        check_choice(name, _bernoulli_estimators(), "estimator (in estimators)")
    for d in check_list(dims, "dims"):
        if check_positive_int(d, "dims entry") > MAX_DIM:
            raise ValueError(f"dims entries must be at most {MAX_DIM} (exact enumeration of 2**d states), got {d}")
    for n in check_list(n_samples, "n_samples"):
        if check_positive_int(n, "n_samples entry") < 2:
            raise ValueError(f"n_samples entries must be >= 2 (leave-one-out baseline), got {n}")
    if check_positive_int(replicates, "replicates") < 2:
        raise ValueError(f"replicates must be >= 2 to estimate a variance, got {replicates}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    check_scheduler(scheduler)
    check_positive_int(workers, "workers")


def _bernoulli_estimators() -> list[str]:
    """The estimators of :mod:`pwgf.estimators` that apply to the Bernoulli family."""
    return sorted(name for name, families in est.ESTIMATORS.items() if "bernoulli" in families)
