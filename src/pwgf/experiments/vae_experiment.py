r"""The Bernoulli VAE experiment (Table 2) assembled from runs of :func:`pwgf.experiments.vae_training.train`.

**Protocol**, the same for every estimator:

1. *Tuning.* Every setting of a small grid, the learning rate and the estimator's knobs
   (:data:`pwgf.experiments.vae_objective.KNOBS`: the temperature of the Gumbel family and ReinMax, pWGF's step and
   bandwidth), is trained on tuning seeds that are not reported, on every architecture or on one
   (``tuning_arch``), without test evaluations (:func:`tuning_configs`).
2. *Selection.* For each architecture and estimator, the setting with the lowest validation negative
   ELBO at its best validation checkpoint, averaged over the tuning seeds (:func:`select`).
3. *Reported runs.* The selected setting on fresh seeds, with the gradient-variance measurements and
   the test figures at each run's best validation checkpoint (:func:`reported_configs`).

Configs are flat dicts (:mod:`pwgf.experiments.vae_training`); every one is validated when it is made, so a bad
setting fails before any run starts. :func:`summary_rows` turns the reported records into the rows of
``summary.json`` and ``summary.csv`` (:data:`SUMMARY_FIELDS`), which :mod:`pwgf.experiments.verdict` reads: with
each run's ``steps`` (as trained: a run with ``until="converged"`` may stop early), ``best_step`` and whether it ``converged`` (:func:`converged`, the rule every
claim about trained models waits for), and for pWGF-MMD the mean ``reversed_share`` of units in the
estimator's sign-reversed regime (:func:`pwgf.experiments.vae_training.reversed_share`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pwgf import estimators
from pwgf._validate import check_choice, check_list, check_positive_int
from pwgf.experiments import results
from pwgf.experiments.sweep import check_scheduler
from pwgf.experiments.vae import ARCHITECTURES
from pwgf.experiments.vae_objective import ESTIMATOR_NAMES, KNOBS
from pwgf.experiments.vae_training import CONVERGENCE_TOLERANCE, CONVERGENCE_WINDOW, code_version, converged, validate_config

__all__ = [
    "ARM_PROTOCOL",
    "CONVERGENCE_TOLERANCE",
    "CONVERGENCE_WINDOW",
    "converged",
    "reversed_share",
    "BASE_KEYS",
    "SUMMARY_FIELDS",
    "settings",
    "tuning_configs",
    "select",
    "reported_configs",
    "tuning_rows",
    "summary_rows",
    "write_summary",
    "curve_rows",
    "variance_rows",
    "validate_parameters",
    "LABELS",
    "ORDER",
    "estimator_styles",
]

#: The protocol of ARM's MNIST scripts :cite:`yin2019arm`, which Table 2 follows: training images of the static
#: binarization, batch, epochs, Adam's learning rate, test -ELBO every so many epochs, importance samples of the
#: test bound (two-layer script only). The paper-scale command of the experiment page uses these.
ARM_PROTOCOL: dict[str, float] = {"train_images": 50_000, "batch": 50, "epochs": 1200, "lr": 1e-4, "test_every_epochs": 5, "bound_k": 1000}
#: The keys of a config shared by all runs of a sweep (the ``base`` argument below).
BASE_KEYS: tuple[str, ...] = ("data", "lim", "batch", "steps", "until", "eval", "ckpt", "var", "k", "k_n", "device")
#: Columns of the summary (one row per reported run); test figures start with ``test_``.
SUMMARY_FIELDS: tuple[str, ...] = (
    "arch", "estimator", "seed", "lr", "temperature", "eps", "bandwidth", "n_samples", "steps", "best_step", "converged", "valid_neg_elbo",
    "test_neg_elbo", "test_neg_elbo_se", "test_neg_elbo_samples", "test_nll_bound", "test_nll_bound_se", "test_nll_bound_k",
    "test_nll_bound_images", "test_neg_elbo_on_bound_images", "reversed_share", "seconds_per_step", "data", "device",
)
#: The estimators' names in figures and tables.
LABELS: dict[str, str] = {
    "pwgf_mmd": "pWGF-MMD", "st": "ST", "arm": "ARM", "relax": "RELAX", "rebar": "REBAR", "gumbel_softmax": "Gumbel-Softmax",
    "pwgf_mmd_argmin": "pWGF-MMD (paper's argmin step)", "reinforce": "REINFORCE (LOO)", "muprop": "MuProp", "disarm": "DisARM",
    "st_gumbel_softmax": "ST-Gumbel-Softmax", "reinmax": "ReinMax", "gumbel_rao": "Gumbel-Rao", "gapped_st": "Gapped ST",
}
#: The order of the estimators in figures and tables: the unbiased ones first, then the biased.
ORDER: list[str] = [e for e in ESTIMATOR_NAMES if e in estimators.UNBIASED] + [e for e in ESTIMATOR_NAMES if e not in estimators.UNBIASED]


def estimator_styles() -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Colour, line style and marker of every estimator, fixed by the library's list (:data:`ORDER`), not by a run's subset.

    So a figure of any run, on any page, draws an estimator the same way: unbiased estimators solid,
    biased ones dashed; the dark shades of matplotlib's ``tab20`` first, then the light ones.
    """
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors  # type: ignore[attr-defined]
    colors = {e: tab20[(2 * i) % 20 + (2 * i) // 20] for i, e in enumerate(ORDER)}
    return colors, {e: "-" if e in estimators.UNBIASED else "--" for e in ORDER}, dict(zip(ORDER, "osD^vP*Xh<>pd8", strict=True))


# The summary's names of the knobs.
_KNOB_FIELDS = {"temp": "temperature", "eps": "eps", "bw": "bandwidth"}


def reversed_share(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean over a run's evaluations of :func:`pwgf.experiments.vae_training.reversed_share` (None for estimators other than pWGF-MMD)."""
    shares = [h["reversed_share"] for h in history if h.get("reversed_share") is not None]
    return float(np.mean(shares)) if shares else None


def settings(
    estimator: str, lr_grid: Sequence[float], temp_grid: Sequence[float], eps_grid: Sequence[float], bw_grid: Sequence[float | str]
) -> list[dict[str, Any]]:
    """The grid of one estimator: every learning rate times every combination of the knobs it takes."""
    check_choice(estimator, ESTIMATOR_NAMES, "estimator")
    grids: dict[str, list[Any]] = {"temp": [float(t) for t in temp_grid], "eps": [float(e) for e in eps_grid], "bw": [b if isinstance(b, str) else float(b) for b in bw_grid]}
    combos: list[dict[str, Any]] = [{"lr": float(lr)} for lr in lr_grid]
    knobs: dict[str, str] = KNOBS.get(estimator, {})
    for key in knobs:
        combos = [{**combo, key: value} for combo in combos for value in grids[key]]
    if not combos:
        raise ValueError(f"the grid of {estimator!r} is empty: lr_grid and the grids of its knobs {sorted(KNOBS.get(estimator, {}))} need a value each")
    return combos


def _config(base: Mapping[str, Any], arch: str, estimator: str, seed: int, setting: Mapping[str, Any], test: bool) -> dict[str, Any]:
    missing = set(BASE_KEYS) - base.keys()
    if missing:
        raise ValueError(f"base is missing {sorted(missing)}; it needs {list(BASE_KEYS)}")
    shared = {key: base[key] for key in BASE_KEYS}
    if not test:
        shared.update(var=0, k=0)
    return validate_config({**shared, **setting, "arch": arch, "estimator": estimator, "seed": int(seed), "test": test, "code": code_version()})


def tuning_configs(
    base: Mapping[str, Any],
    archs: Sequence[str],
    estimator_names: Sequence[str],
    seeds: Sequence[int],
    lr_grid: Sequence[float],
    temp_grid: Sequence[float],
    eps_grid: Sequence[float],
    bw_grid: Sequence[float | str],
) -> list[dict[str, Any]]:
    """Every architecture x estimator x grid setting x tuning seed, without test figures or variance measurements; validated."""
    for arch in archs:
        check_choice(arch, ARCHITECTURES, "arch")
    return [
        _config(base, arch, name, seed, setting, test=False)
        for arch in archs
        for name in estimator_names
        for setting in settings(name, lr_grid, temp_grid, eps_grid, bw_grid)
        for seed in seeds
    ]


def _setting(config: Mapping[str, Any]) -> dict[str, Any]:
    """The tuned part of a config: the learning rate and the estimator's knobs."""
    return {"lr": config["lr"], **{key: config[key] for key in KNOBS.get(config["estimator"], {})}}


def _groups(records: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r["config"][k] for k in keys), []).append(r)
    return groups


def tuning_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per architecture, estimator and grid setting: the best validation -ELBO averaged over the tuning seeds."""
    by_setting: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        c = r["config"]
        key = (c["arch"], c["estimator"], tuple(sorted(_setting(c).items())))
        by_setting.setdefault(key, []).append(r["result"]["best_valid_neg_elbo"])
    return [
        {"arch": arch, "estimator": name, **dict(setting), "valid_neg_elbo": float(np.mean(values)), "n_seeds": len(values)}
        for (arch, name, setting), values in by_setting.items()
    ]


def select(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(arch, estimator) -> setting`` with the lowest mean best validation -ELBO over the tuning seeds (the first such in grid order on ties)."""
    best: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
    for row in tuning_rows(records):
        key = (row["arch"], row["estimator"])
        setting = {k: v for k, v in row.items() if k not in ("arch", "estimator", "valid_neg_elbo", "n_seeds")}
        if key not in best or row["valid_neg_elbo"] < best[key][0]:
            best[key] = (row["valid_neg_elbo"], setting)
    return {key: setting for key, (_, setting) in best.items()}


def reported_configs(
    base: Mapping[str, Any],
    selected: Mapping[tuple[str, str], Mapping[str, Any]],
    archs: Sequence[str],
    estimator_names: Sequence[str],
    seeds: Sequence[int],
    tuning_arch: str | None = None,
) -> list[dict[str, Any]]:
    """The selected setting of every architecture and estimator on ``seeds``, with test figures; validated.

    With ``tuning_arch``, every architecture uses the setting selected on that one.
    """
    configs = []
    for arch in archs:
        source = arch if tuning_arch is None else tuning_arch
        for name in estimator_names:
            if (source, name) not in selected:
                raise ValueError(f"no tuned setting for estimator {name!r} on arch {source!r}: run the tuning sweep for it first")
            configs += [_config(base, arch, name, seed, selected[(source, name)], test=True) for seed in seeds]
    return configs


def summary_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per reported run, with :data:`SUMMARY_FIELDS` (None where a figure was not computed or a knob does not apply)."""
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        if not c["test"]:
            raise ValueError(f"summary rows come from reported runs (test=True); got a tuning run of {c['estimator']!r} on {c['arch']!r}")
        knobs = {field: c.get(key) for key, field in _KNOB_FIELDS.items()}
        rows.append({
            "arch": c["arch"], "estimator": c["estimator"], "seed": c["seed"], "lr": c["lr"], **knobs,
            "n_samples": estimators.MIN_SAMPLES[c["estimator"]], "steps": res["steps"], "best_step": res["best_step"],
            "converged": converged(res["history"], res["steps"]),
            "valid_neg_elbo": res["best_valid_neg_elbo"], "test_neg_elbo": res["test_neg_elbo"], "test_neg_elbo_se": res["test_neg_elbo_se"],
            "test_neg_elbo_samples": res["test_neg_elbo_samples"], "test_nll_bound": res.get("test_nll_bound"),
            "test_nll_bound_se": res.get("test_nll_bound_se"), "test_nll_bound_k": c["k"] or None,
            "test_nll_bound_images": res.get("test_nll_bound_images"),
            "test_neg_elbo_on_bound_images": res.get("test_neg_elbo_on_bound_images"), "reversed_share": reversed_share(res["history"]),
            "seconds_per_step": res["seconds_per_step"],
            "data": c["data"], "device": c["device"],
        })
    return rows


def write_summary(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``summary.json`` and ``summary.csv`` in ``out_dir``, atomically (:func:`pwgf.experiments.results.write_summary`)."""
    return results.write_summary(out_dir, SUMMARY_FIELDS, rows, extra)


def curve_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Learning curves: one row per run and evaluation (step, training seconds so far, validation and training -ELBO)."""
    return [{"arch": r["config"]["arch"], "estimator": r["config"]["estimator"], "seed": r["config"]["seed"], **h}
            for r in records for h in r["result"]["history"]]


def variance_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Gradient-variance measurements: one row per run and checkpoint (:func:`pwgf.experiments.vae_evaluation.gradient_variance`)."""
    return [{"arch": r["config"]["arch"], "estimator": r["config"]["estimator"], "seed": r["config"]["seed"], **v}
            for r in records for v in r["result"]["variance"]]


def validate_parameters(
    archs: Sequence[str],
    estimator_names: Sequence[str],
    tuning_arch: str | None,
    n_seeds: int,
    n_tuning_seeds: int,
    base: Mapping[str, Any],
    lr_grid: Sequence[float],
    temp_grid: Sequence[float],
    eps_grid: Sequence[float],
    bw_grid: Sequence[float | str],
    scheduler: str,
    workers: int,
) -> None:
    """Check the parameters of ``notebooks/bernoulli_vae.md`` before any run; ValueError naming the parameter.

    ``archs`` and ``estimator_names``: non-empty lists without repeats, of :data:`pwgf.experiments.vae.ARCHITECTURES`
    and :data:`pwgf.experiments.vae_objective.ESTIMATOR_NAMES`; ``tuning_arch`` one of the architectures or None;
    ``n_seeds`` reported seeds 0..``n_seeds``-1, at least 2 (means over seeds) and below the tuning seeds,
    10000 onwards (``n_tuning_seeds`` >= 1); every config of the tuning sweep, and every config of the
    reported sweep whatever setting the tuning selects, validated (:func:`pwgf.experiments.vae_training.validate_config`),
    so that no setting fails after the tuning sweep has run; ``scheduler`` and ``workers`` as
    :func:`pwgf.experiments.sweep.run_sweep` takes them.
    """
    for arch in check_list(archs, "archs"):
        check_choice(arch, ARCHITECTURES, "arch (in archs)")
    for name in check_list(estimator_names, "estimator_names"):
        check_choice(name, ESTIMATOR_NAMES, "estimator (in estimator_names)")
    if tuning_arch is not None:
        check_choice(tuning_arch, ARCHITECTURES, "tuning_arch")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 2 <= n_seeds <= 10_000:
        raise ValueError(f"n_seeds must be an integer in [2, 10000] (means over seeds; tuning seeds start at 10000), got {n_seeds!r}")
    check_positive_int(n_tuning_seeds, "n_tuning_seeds")
    tuning_archs = list(archs) if tuning_arch is None else [tuning_arch]
    tuning = tuning_configs(base, tuning_archs, estimator_names, range(10_000, 10_000 + n_tuning_seeds), lr_grid, temp_grid, eps_grid, bw_grid)
    # Every grid setting is valid in a tuning config; a reported config adds the test figures and variance measurements.
    selected = {(c["arch"], c["estimator"]): _setting(c) for c in tuning}
    reported_configs(base, selected, archs, estimator_names, range(n_seeds), tuning_arch)
    check_scheduler(scheduler)
    check_positive_int(workers, "workers")
