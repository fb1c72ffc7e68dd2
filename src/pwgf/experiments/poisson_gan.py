r"""Poisson parameter inference with a GAN: the paper's Section 3.1 (Table 1, Figure 3) as resumable sweeps.

Real data are :math:`N_{\mathrm{data}}` draws from :math:`p = \mathrm{Poisson}(\lambda_0)`; the generator draws
:math:`z \sim q_\lambda = \mathrm{Poisson}(\lambda)`; a discriminator :math:`w(z) = \sigma(\ell_\omega(z))`
gives the probability that :math:`z` is real. One training iteration

1. updates :math:`\omega` by one Adam step on the cross-entropy
   :math:`-\frac1B\sum_b \log w(x_b) - \frac1B\sum_b \log(1 - w(z_b))` (real batch :math:`x`, fake batch :math:`z`);
2. updates :math:`\lambda` by one SGD step on :math:`\eta = \log\lambda` along an estimate of
   :math:`\frac{\dd}{\dd\lambda}\E_{z\sim q_\lambda}[f(z)]` from :func:`pwgf.estimators.surrogate`, where the
   generator cost :math:`f` is, by ``loss``:

   * ``"paper"``: :math:`f(z) = -w(z)`, the paper's generator objective "increase :math:`\E_{q_\lambda}[w(z)]`";
   * ``"nonsaturating"``: :math:`f(z) = -\log w(z)`;
   * ``"minimax"``: :math:`f(z) = \log(1 - w(z))`.

   All three are smooth in :math:`z` (the discriminator is a smooth network of a real input), so the
   straight-through and pWGF estimators can use :math:`\nabla_z f`.

Each run draws one data set of :math:`N_{\mathrm{data}}` = ``n_data`` real samples; every iteration takes a
mini-batch of ``batch`` of them uniformly with replacement and ``batch`` fresh generator samples;
an epoch is ``iters`` iterations, and :math:`\lambda` is recorded after every epoch. The seed fixes
the data set, the discriminator's initialization and every draw, so runs of different estimators
with one seed see the same data (paired comparison). A sweep runs :func:`train` over its configs with
:func:`pwgf.experiments.sweep.run_sweep`, on this machine or a Dask cluster. Every run's config is a flat dict
(short keys, because the readable part of its result file's name is made of them by :func:`pwgf.experiments.results.run_key`):

``estimator, seed, lambda0, lambda_init, n_data, epochs, iters, batch, lr_g, lr_d, width, loss, eps, bw, var_reps, code``

``eps`` and ``bw``, the pWGF step and MMD kernel bandwidth, are ``None`` for estimators that do not
use them; ``code`` is :func:`code_version`, the version of the library code a run executes (which
:func:`pwgf.experiments.sweep.run_sweep` would add), so results of older library code are never reused. With
``var_reps > 0`` the run also measures, at the epochs :func:`variance_epochs`, the mean and
variance of ``var_reps`` independent estimates of the gradient at the current
:math:`(\lambda, \omega)` together with the exact gradient (truncated enumeration, ``"exact"``), on
an RNG stream of its own, so the measurement does not change the trajectory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pwgf import estimators, families
from pwgf._validate import check_choice, check_list, check_positive, check_positive_int
from pwgf.experiments import decision, results, sweep

__all__ = [
    "ESTIMATOR_NAMES",
    "GENERATOR_LOSSES",
    "PAPER_LAMBDA0",
    "PAPER_TABLE1",
    "LAMBDA_BOX",
    "SUMMARY_FIELDS",
    "Discriminator",
    "generator_cost",
    "discriminator_loss",
    "code_version",
    "validate_config",
    "validate_parameters",
    "PAGE_ESTIMATORS",
    "variance_epochs",
    "train",
    "tuning_configs",
    "tuning_scores",
    "select",
    "final_configs",
    "trajectories",
    "summarize",
    "write_summary",
    "per_seed",
    "SPREAD_MEASURES",
    "compare_spreads",
]

#: The estimators the experiment compares; ``"exact"`` is the oracle (truncated enumeration).
#: ``eat_cubic`` and ``eat_sigmoid`` (Ibrahim et al. 2026; Vafaii et al. 2024) run at their default temperature.
ESTIMATOR_NAMES: tuple[str, ...] = ("pwgf_mmd", "pwgf_mmd_argmin", "st", "muprop", "reinforce", "eat_cubic", "eat_sigmoid", "exact")
GENERATOR_LOSSES: tuple[str, ...] = ("paper", "nonsaturating", "minimax")
#: The paper's Table 1 (lambda0 = 5, after 100 epochs): mean and "std" of the inferred lambda.
PAPER_LAMBDA0: float = 5.0
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "pwgf_mmd": {"mean": 5.0076, "std": 0.013},
    "st": {"mean": 5.1049, "std": 0.161},
    "muprop": {"mean": 5.0196, "std": 0.159},
    "reinforce": {"mean": 4.9452, "std": 0.173},
}
#: lambda is kept in [lambda0 / LAMBDA_BOX, lambda0 * LAMBDA_BOX] (a projection, counted by ``clipped``).
LAMBDA_BOX: float = 100.0
#: Columns of the summary CSV (and keys of each row of the summary JSON).
SUMMARY_FIELDS: tuple[str, ...] = (
    "estimator", "lambda0", "n_seeds", "lr_g", "eps", "bw",
    "final_mean", "final_std", "final_sem", "within_std", "rmse", "data_mean", "std_vs_data", "clipped",
    "paper_mean", "paper_std",
)
_CONFIG_KEYS = frozenset(
    {"estimator", "seed", "lambda0", "lambda_init", "n_data", "epochs", "iters", "batch", "lr_g", "lr_d", "width", "loss", "eps", "bw", "var_reps", "code"}
)
_USES_EPS_BW = frozenset({"pwgf_mmd", "pwgf_mmd_argmin"})  # estimators that take the pWGF step eps and the MMD bandwidth
_VARIANCE_STREAM = 0x5EED  # offset of the variance-measurement RNG stream from the run's seed


class Discriminator(nn.Module):
    r""":math:`\ell_\omega(z)`, the logit of :math:`w(z)`: standardize, one tanh hidden layer, linear read-out.

    The input is standardized by the real data's mean and standard deviation (a fixed affine map
    computed from the data the discriminator is trained on), so one architecture and one Adam step
    size serve :math:`\lambda_0 = 0.5` and :math:`\lambda_0 = 50` alike. ``tanh`` keeps
    :math:`\ell_\omega` smooth, so :math:`\nabla_z f` is defined everywhere.
    """

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, width: int, data: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("loc", data.mean())
        self.register_buffer("scale", data.std().clamp_min(1e-3))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        # Initialise in the data's dtype directly (not cast afterwards), so the weights do not depend
        # on torch's global default dtype.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(1, width, dtype=data.dtype), nn.Tanh(), nn.Linear(width, 1, dtype=data.dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[n]`` for samples ``z`` of shape ``[n, 1]``."""
        return self.net((z - self.loc) / self.scale).squeeze(-1)


def generator_cost(discriminator: Discriminator, loss: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The generator's per-sample cost :math:`f(z)` (``[n, 1] -> [n]``) for ``loss`` (see the module docstring)."""
    check_choice(loss, GENERATOR_LOSSES, "loss")
    if loss == "paper":
        return lambda z: -torch.sigmoid(discriminator(z))
    if loss == "nonsaturating":
        return lambda z: -nn.functional.logsigmoid(discriminator(z))
    return lambda z: nn.functional.logsigmoid(-discriminator(z))


def discriminator_loss(discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy :math:`-\frac1B\sum_b \log w(x_b) - \frac1B\sum_b \log(1 - w(z_b))` of real ``x`` and generated ``z`` (``[B, 1]`` each)."""
    return -nn.functional.logsigmoid(discriminator(real)).mean() - nn.functional.logsigmoid(-discriminator(fake)).mean()


def code_version() -> str:
    """The version of the library code a run of :func:`train` executes (:func:`pwgf.experiments.sweep.code_version`)."""
    return sweep.code_version(train)


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` as a dict after checking every key and value; raise ValueError naming the bad one."""
    c = dict(config)
    missing, extra = _CONFIG_KEYS - c.keys(), c.keys() - _CONFIG_KEYS
    if missing or extra:
        raise ValueError(f"config keys: missing {sorted(missing)}, unknown {sorted(extra)}; expected {sorted(_CONFIG_KEYS)}")
    check_choice(c["estimator"], ESTIMATOR_NAMES, "estimator")
    check_choice(c["loss"], GENERATOR_LOSSES, "loss")
    for key in ("lambda0", "lambda_init", "lr_g", "lr_d"):
        check_positive(float(c[key]), key)
    for key in ("n_data", "epochs", "iters", "width"):
        check_positive_int(c[key], key)
    if check_positive_int(c["batch"], "batch") < 2:
        raise ValueError(f"batch must be an integer >= 2 (leave-one-out baselines need two samples), got {c['batch']!r}")
    if isinstance(c["seed"], bool) or not isinstance(c["seed"], int) or c["seed"] < 0:
        raise ValueError(f"seed must be an integer >= 0, got {c['seed']!r}")
    if isinstance(c["var_reps"], bool) or not isinstance(c["var_reps"], int) or c["var_reps"] < 0 or c["var_reps"] == 1:
        raise ValueError(f"var_reps must be 0 (off) or an integer >= 2 (a variance needs two estimates), got {c['var_reps']!r}")
    if not isinstance(c["code"], str):
        raise ValueError(f"code must be a string (see code_version), got {c['code']!r}")
    if c["estimator"] in _USES_EPS_BW:
        check_positive(float(c["eps"]), "eps")
        if c["bw"] != "median" and (isinstance(c["bw"], (str, bool)) or not isinstance(c["bw"], (int, float)) or not c["bw"] > 0):
            raise ValueError(f"bw (the MMD kernel bandwidth) must be a number > 0 or 'median', got {c['bw']!r}")
    elif c["eps"] is not None or c["bw"] is not None:
        raise ValueError(f"eps and bw apply to {' and '.join(sorted(_USES_EPS_BW))} only; set them to None for {c['estimator']!r}")
    return c


def variance_epochs(epochs: int) -> list[int]:
    """Epochs after which gradient variance is measured: 0, 1, a quarter, half-way and the end."""
    return sorted({0, 1, epochs // 4, epochs // 2, epochs})


def _options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options of ``estimators.surrogate`` for this run (pWGF's ``eps`` and ``bandwidth``)."""
    if config["estimator"] in _USES_EPS_BW:
        return {"eps": float(config["eps"]), "bandwidth": config["bw"]}
    return {}


def _gradient_moments(config: Mapping[str, Any], lam: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator) -> dict[str, float]:
    """Mean and variance of ``var_reps`` estimates of d/dlambda E f at ``lam``, and the exact value."""
    name, n = config["estimator"], config["batch"]
    draws = torch.stack(
        [estimators.estimate(name, "poisson", lam, f, n, generator=generator, **_options(config)) for _ in range(config["var_reps"])]
    )[:, 0]
    exact = estimators.estimate("exact", "poisson", lam, f, n)[0]
    return {"lambda": float(lam[0]), "exact": float(exact), "mean": float(draws.mean()), "var": float(draws.var(unbiased=True))}


def train(config: Mapping[str, Any]) -> dict[str, Any]:
    """One GAN run (module docstring); returns ``lambda`` after each epoch, data statistics, variance
    checkpoints and the run's compute time in ``seconds``. A sweep runs it with :func:`pwgf.experiments.sweep.run_sweep`,
    which refuses to run it in a process whose library code is not the config's ``code``.
    """
    c = validate_config(config)
    started = time.perf_counter()
    return {**_train(c), "seconds": time.perf_counter() - started}


def _train(c: dict[str, Any]) -> dict[str, Any]:
    """The training loop of :func:`train` for a validated config."""
    dtype = torch.float64
    gen = torch.Generator().manual_seed(c["seed"])
    var_gen = torch.Generator().manual_seed(c["seed"] + _VARIANCE_STREAM)
    lambda0 = float(c["lambda0"])
    data = families.sample("poisson", torch.tensor([lambda0], dtype=dtype), c["n_data"], gen)
    disc = Discriminator(c["width"], data, gen)
    opt_d = torch.optim.Adam(disc.parameters(), lr=float(c["lr_d"]), betas=(0.5, 0.999))
    f = generator_cost(disc, c["loss"])
    eta = torch.tensor([math.log(float(c["lambda_init"]))], dtype=dtype, requires_grad=True)
    lo, hi = math.log(lambda0 / LAMBDA_BOX), math.log(lambda0 * LAMBDA_BOX)
    options = _options(c)
    trajectory, checkpoints, clipped = [float(c["lambda_init"])], [], 0
    measure_at = set(variance_epochs(c["epochs"])) if c["var_reps"] > 0 else set()
    for epoch in range(c["epochs"] + 1):
        if epoch in measure_at:
            checkpoints.append({"epoch": epoch, **_gradient_moments(c, eta.detach().exp(), f, var_gen)})
        if epoch == c["epochs"]:
            break
        for index in torch.randint(0, c["n_data"], (c["iters"], c["batch"]), generator=gen):
            fake = torch.poisson(eta.detach().exp().expand(c["batch"], 1), generator=gen)
            opt_d.zero_grad()
            discriminator_loss(disc, data[index], fake).backward()
            opt_d.step()
            g_surrogate = estimators.surrogate(c["estimator"], "poisson", eta.exp(), f, c["batch"], generator=gen, **options)
            (grad_eta,) = torch.autograd.grad(g_surrogate, eta)
            with torch.no_grad():
                eta -= float(c["lr_g"]) * grad_eta
                clipped += int(not lo <= float(eta.detach()) <= hi)
                eta.clamp_(lo, hi)
        trajectory.append(float(eta.detach().exp()))
    return {
        "lambda": trajectory,
        "data_mean": float(data.mean()),
        "data_var": float(data.var()),
        "clipped": clipped,
        "checkpoints": checkpoints,
    }


def _config(base: Mapping[str, Any], estimator: str, lambda0: float, seed: int, setting: Mapping[str, Any]) -> dict[str, Any]:
    """One run's config, validated: ``base`` (shared knobs, ``lambda_init`` as a multiple of lambda0) plus this run's choices."""
    shared = {k: v for k, v in base.items() if k != "lambda_init_ratio"}
    uses_pwgf = estimator in _USES_EPS_BW
    return validate_config({
        **shared,
        "estimator": estimator,
        "lambda0": float(lambda0),
        "lambda_init": float(base["lambda_init_ratio"]) * float(lambda0),
        "seed": int(seed),
        "lr_g": float(setting["lr_g"]),
        "eps": float(setting["eps"]) if uses_pwgf else None,
        "bw": setting["bw"] if uses_pwgf else None,
        "code": code_version(),
    })


def tuning_configs(
    base: Mapping[str, Any],
    estimator_names: Sequence[str],
    lambda0s: Sequence[float],
    seeds: Sequence[int],
    lr_grid: Sequence[float],
    eps_grid: Sequence[float],
    bw_grid: Sequence[float | str],
) -> list[dict[str, Any]]:
    """The tuning sweep: every estimator x lambda0 x seed x grid point (``eps`` x ``bw`` only for the pWGF-MMD estimators).

    Every config is validated here, so a bad setting fails before any run of the sweep starts.
    """
    configs = []
    for name in estimator_names:
        pwgf_grid = [(e, b) for e in eps_grid for b in bw_grid] if name in _USES_EPS_BW else [(None, None)]
        for lambda0 in lambda0s:
            for lr in lr_grid:
                for eps, bw in pwgf_grid:
                    configs += [_config(base, name, lambda0, s, {"lr_g": lr, "eps": eps, "bw": bw}) for s in seeds]
    return configs


def _final_lambdas(records: Sequence[Mapping[str, Any]], window: int) -> np.ndarray:
    """lambda over the last ``window`` epochs of every run, shape ``[runs, window]``."""
    return np.array([r["result"]["lambda"][-window:] for r in records], dtype=np.float64)


def _groups(records: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record["config"][k] for k in keys), []).append(record)
    return groups


def tuning_scores(records: Iterable[Mapping[str, Any]], window: int) -> list[dict[str, Any]]:
    r"""The selection criterion of every grid point: RMSE :math:`\sqrt{\mathrm{mean}(\lambda_t - \lambda_0)^2}`
    over the last ``window`` epochs and over the tuning seeds (bias and spread in one number).
    """
    window = check_positive_int(window, "window")
    rows = []
    for (name, lambda0, lr, eps, bw), group in _groups(records, ("estimator", "lambda0", "lr_g", "eps", "bw")).items():
        err = _final_lambdas(group, window) - lambda0
        rmse = float(np.sqrt(np.mean(err**2)))
        rows.append({"estimator": name, "lambda0": lambda0, "lr_g": lr, "eps": eps, "bw": bw, "n_seeds": len(group),
                     "rmse": rmse if math.isfinite(rmse) else math.inf})
    return rows


def select(scores: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """The grid point of smallest tuning RMSE for each (estimator, lambda0); ties go to the first in grid order."""
    best: dict[tuple[str, float], dict[str, Any]] = {}
    for row in scores:
        key = (row["estimator"], row["lambda0"])
        if key not in best or row["rmse"] < best[key]["rmse"]:
            best[key] = dict(row)
    return best


def final_configs(
    base: Mapping[str, Any], selected: Mapping[tuple[str, float], Mapping[str, Any]], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """The reported sweep: every selected (estimator, lambda0) setting on every reported seed."""
    return [_config(base, name, lambda0, s, setting) for (name, lambda0), setting in selected.items() for s in seeds]


def trajectories(records: Iterable[Mapping[str, Any]], estimator: str, lambda0: float) -> np.ndarray:
    """lambda after each epoch for every seed of one (estimator, lambda0), shape ``[seeds, epochs + 1]``."""
    runs = [r for r in records if r["config"]["estimator"] == estimator and r["config"]["lambda0"] == lambda0]
    if not runs:
        raise ValueError(f"no runs for estimator={estimator!r}, lambda0={lambda0!r}")
    return np.array([r["result"]["lambda"] for r in runs], dtype=np.float64)


def _std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1); NaN for a single value."""
    return float(x.std(ddof=1)) if len(x) > 1 else math.nan


def _check_window(window: int) -> int:
    """``window`` as an int >= 2 (a standard deviation needs two epochs), or a ValueError."""
    window = check_positive_int(window, "window")
    if window < 2:
        raise ValueError(f"window must be an integer >= 2 (a standard deviation needs two epochs), got {window}")
    return window


def summarize(records: Iterable[Mapping[str, Any]], window: int) -> list[dict[str, Any]]:
    """One row per (estimator, lambda0) with the fields :data:`SUMMARY_FIELDS`.

    ``final_*``: lambda after the last epoch, across seeds (``final_std`` with ddof = 1,
    ``final_sem`` = std / sqrt(seeds)); ``within_std``: the standard deviation of lambda over the last
    ``window`` epochs inside one run (ddof = 1), averaged over seeds; ``rmse``: root mean square of
    final lambda - lambda0; ``data_mean``: the real data's sample mean (the maximum-likelihood lambda),
    averaged over seeds; ``std_vs_data``: the standard deviation across seeds of final lambda minus
    that seed's data mean (the spread left once the finite-sample noise of the data is removed); ``clipped``: projections onto the lambda box, summed over seeds;
    ``paper_*``: the paper's Table 1 where it has the setting, else None.
    """
    window = _check_window(window)
    rows = []
    for (name, lambda0), group in _groups(records, ("estimator", "lambda0")).items():
        if window > len(group[0]["result"]["lambda"]):
            raise ValueError(f"window must be at most the number of recorded epochs + 1, got {window}")
        last = _final_lambdas(group, window)
        final = last[:, -1]
        data_mean = np.array([r["result"]["data_mean"] for r in group])
        first = group[0]["config"]
        paper = PAPER_TABLE1.get(name) if lambda0 == PAPER_LAMBDA0 else None
        rows.append({
            "estimator": name, "lambda0": lambda0, "n_seeds": len(group),
            "lr_g": first["lr_g"], "eps": first["eps"], "bw": first["bw"],
            "final_mean": float(final.mean()),
            "final_std": _std(final),
            "final_sem": _std(final) / math.sqrt(len(group)),
            "within_std": float(last.std(axis=1, ddof=1).mean()),
            "rmse": float(np.sqrt(np.mean((final - lambda0) ** 2))),
            "data_mean": float(data_mean.mean()),
            "std_vs_data": _std(final - data_mean),
            "clipped": int(sum(r["result"]["clipped"] for r in group)),
            "paper_mean": paper["mean"] if paper else None,
            "paper_std": paper["std"] if paper else None,
        })
    return rows


def write_summary(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` (``{"fields", "rows", **extra}``) and ``summary.csv`` atomically (:func:`pwgf.experiments.results.write_summary`); return both paths."""
    return results.write_summary(out_dir, SUMMARY_FIELDS, rows, extra)


def per_seed(records: Iterable[Mapping[str, Any]], window: int) -> list[dict[str, Any]]:
    """One row per run, the per-seed numbers behind :func:`summarize` that :func:`compare_spreads` resamples.

    ``final``: lambda after the last epoch; ``within_std``: the standard deviation (ddof = 1) of lambda
    over the last ``window`` epochs of the run; ``data_mean``: the run's real-data sample mean.
    """
    window = _check_window(window)
    rows = []
    for r in records:
        last = np.asarray(r["result"]["lambda"][-window:], dtype=np.float64)
        rows.append({"estimator": r["config"]["estimator"], "lambda0": float(r["config"]["lambda0"]), "seed": int(r["config"]["seed"]),
                     "final": float(last[-1]), "within_std": float(last.std(ddof=1)), "data_mean": float(r["result"]["data_mean"])})
    return rows


#: The spread measures of the Poisson verdict, as (per-seed field, statistic over seeds ``[..., seeds]``, lambda0):
#: ``final_std`` the standard deviation of the final lambda across seeds, ``within_std`` the mean over seeds of the
#: within-run standard deviation, ``rmse`` the root mean square of final lambda - lambda0.
SPREAD_MEASURES: dict[str, tuple[str, Callable[[np.ndarray, float], np.ndarray]]] = {
    "final_std": ("final", lambda x, lambda0: x.std(axis=-1, ddof=1)),
    "within_std": ("within_std", lambda x, lambda0: x.mean(axis=-1)),
    "rmse": ("final", lambda x, lambda0: np.sqrt(np.mean((x - lambda0) ** 2, axis=-1))),
}


def compare_spreads(
    rows: Iterable[Mapping[str, Any]], lambda0: float, estimator: str, reference: str = "st", measure: str = "final_std", *,
    level: float = 0.9,
) -> dict[str, Any]:
    """The Poisson verdict's decision rule: is ``estimator``'s spread smaller than ``reference``'s?

    ``rows`` are :func:`per_seed` rows; ``measure`` is a key of :data:`SPREAD_MEASURES`. Returns ``ratio`` =
    measure(reference) / measure(estimator) on all seeds, its two-sided ``level`` ``interval`` over the
    seeds, paired (both estimators ran on the same seeds and data), exact under normality:
    Pitman-Morgan for ``final_std`` (:func:`pwgf.experiments.decision.pitman_morgan_interval`), Fieller for the
    ratio of mean within-run spreads (``within_std``) and of mean squared errors (``rmse``, square-rooted;
    :func:`pwgf.experiments.decision.fieller_interval`). With two seeds the Pitman-Morgan interval is undefined and
    ``[0, inf)`` is returned. ``decision``: ``"smaller"`` if the interval lies above 1 (the
    estimator's spread is significantly smaller, one-sided at :math:`(1 - \\text{level})/2`), ``"larger"``
    if it lies below 1, ``"no significant difference"`` otherwise. The Poisson page's verdict and the
    Verdict chapter both decide with this function.
    """
    check_choice(measure, list(SPREAD_MEASURES), "measure")
    field, statistic = SPREAD_MEASURES[measure]
    rows = [r for r in rows if float(r["lambda0"]) == float(lambda0)]

    def values(name: str) -> tuple[np.ndarray, list[int]]:
        by_seed = {int(r["seed"]): float(r[field]) for r in rows if r["estimator"] == name}
        if not by_seed:
            raise ValueError(f"no per-seed rows for estimator={name!r}, lambda0={lambda0!r}")
        return np.array([by_seed[s] for s in sorted(by_seed)]), sorted(by_seed)

    (num, num_seeds), (den, den_seeds) = values(reference), values(estimator)
    if num_seeds != den_seeds:
        raise ValueError(f"{reference!r} and {estimator!r} must share their seeds for a paired comparison, got {num_seeds} and {den_seeds}")
    ratio = float(statistic(num, float(lambda0)) / statistic(den, float(lambda0)))
    low: float
    high: float
    if measure == "final_std" and len(num) < 3:
        low, high = 0.0, math.inf  # a correlation over two seeds is always +-1: the interval is undefined and decides nothing
    elif measure == "final_std":
        low, high = map(float, decision.pitman_morgan_interval(num, den, level=level))
    elif measure == "within_std":
        low, high = map(float, decision.fieller_interval(num, den, level=level))
    else:
        low, high = map(float, np.sqrt(decision.fieller_interval((num - lambda0) ** 2, (den - lambda0) ** 2, level=level)))
    decision_ = "smaller" if low > 1 else "larger" if high < 1 else "no significant difference"
    return {"measure": measure, "estimator": estimator, "reference": reference, "lambda0": float(lambda0), "level": level,
            "ratio": ratio, "interval": (low, high), "decision": decision_, "n_seeds": len(num_seeds)}


#: The estimators the page's comparison with Table 1 reads (pWGF against ST, and the oracle's rate).
PAGE_ESTIMATORS: tuple[str, ...] = ("pwgf_mmd", "st", "exact")


def validate_parameters(
    estimator_names: Sequence[str],
    n_seeds: int,
    n_tuning_seeds: int,
    base: Mapping[str, Any],
    lambda0: float,
    lambda0_extra: Sequence[float],
    lr_grid: Sequence[float],
    eps_grid: Sequence[float],
    bw_grid: Sequence[float | str],
    window: int,
    variance_repeats: int,
    scheduler: str,
    workers: int,
) -> None:
    """Check the parameters of ``notebooks/poisson_inference.md`` before any run; ValueError naming the parameter.

    Beyond what every config checks (:func:`validate_config`, on every tuning config and on every
    reported config a selection could make), the combinations that would otherwise fail after the
    sweeps: ``estimator_names`` must hold :data:`PAGE_ESTIMATORS`, which the page's tables compare;
    ``window`` must lie in [2, ``epochs`` + 1] (the recorded rates of a run); seeds 0..``n_seeds``-1
    (at least 2, a spread) must stay below the tuning seeds, 10000 onwards (at least 1); the rates
    ``lambda0`` and ``lambda0_extra`` must be distinct.
    """
    names = check_list(estimator_names, "estimator_names")
    missing = [name for name in PAGE_ESTIMATORS if name not in names]
    if missing:
        raise ValueError(f"estimator_names must include {list(PAGE_ESTIMATORS)} (the page compares pWGF with ST and the oracle), "
                         f"missing {missing} in {names}")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 2 <= n_seeds <= 10_000:
        raise ValueError(f"n_seeds must be an integer in [2, 10000] (a spread needs two seeds; tuning seeds start at 10000), got {n_seeds!r}")
    check_positive_int(n_tuning_seeds, "n_tuning_seeds")
    lambda0s = [float(lambda0), *map(float, lambda0_extra)]
    if len(set(lambda0s)) != len(lambda0s):
        raise ValueError(f"lambda0_extra must not repeat lambda0 = {lambda0} or itself, got {list(lambda0_extra)}")
    window = _check_window(window)
    if window > base["epochs"] + 1:
        raise ValueError(f"window must be at most epochs + 1 = {base['epochs'] + 1} (the rates a run records), got {window}")
    check_list(lr_grid, "lr_grid")
    if any(name in _USES_EPS_BW for name in names):
        check_list(eps_grid, "eps_grid")
        check_list(bw_grid, "bandwidth_grid")
    tuning = tuning_configs({**base, "var_reps": 0}, names, lambda0s, range(10_000, 10_000 + n_tuning_seeds), lr_grid, eps_grid, bw_grid)
    any_setting = {(c["estimator"], c["lambda0"]): c for c in tuning}  # a selection picks one setting per (estimator, lambda0)
    final_configs({**base, "var_reps": variance_repeats}, any_setting, range(n_seeds))
    sweep.check_scheduler(scheduler)
    check_positive_int(workers, "workers")
