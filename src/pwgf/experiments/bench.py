r"""Wall-clock benchmark of every registered estimator: ``python -m pwgf.experiments.bench --output _build/bench.json``.

For each family, each estimator that applies to it (:data:`pwgf.estimators.ESTIMATORS`), each dimension
``d`` and each sample size ``n``, one call of :func:`pwgf.estimators.estimate` is timed with
``time.perf_counter``: a few warm-up calls, then ``repeats`` timed calls, reporting the median (and the
quartiles). The cost is :math:`f(z) = \frac1d\sum_i \operatorname{softplus}(a_i \cdot z_i + b_i)^2`
(summed over the category axis for one-hot samples): cheap, so the figures measure the estimators'
own overhead, and differentiable in :math:`z` as the pathwise estimators need. Parameters and draws are
seeded. Calls that are not possible (``exact`` enumerates :math:`|\mathcal{Z}|^d` states) are recorded
with the reason instead of a time.

The headline figure is the overhead of ``pwgf_mmd`` over ``st`` at ``d = 200``, ``n = 16``: the target
is a ratio within 3 for every family.

A second table times the estimators at the shapes of a Bernoulli VAE (:func:`run_model`): a batch of
50 examples, 200 Bernoulli units with logits from a linear encoder, a linear decoder to 784 pixels with a
Bernoulli likelihood, float32, one torch thread; one training step ``surrogate(...).sum().backward()``
is timed per estimator, with one sample per example (two for REINFORCE's leave-one-out baseline), and
reported relative to ST in the same run against :data:`MODEL_TARGETS`, and ST relative to a plain-PyTorch
ST step (sample, ``z + p - p.detach()``, decoder, loss, backward) against :data:`FLOOR_TARGET`. Its
estimators take turns within each repeat, so a change of machine load affects all of them alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn import functional as F

from pwgf import estimators
from pwgf._validate import check_positive_int
from pwgf.experiments.results import atomic_write_json
from pwgf.families import FAMILIES

__all__ = [
    "DIMENSIONS", "SAMPLE_SIZES", "CATEGORIES", "TARGET_RATIO", "MODEL_SHAPE", "MODEL_TARGETS", "FLOOR_TARGET",
    "problem", "time_call", "run", "model_problem", "run_model", "main",
]

DIMENSIONS: tuple[int, ...] = (10, 200)
SAMPLE_SIZES: tuple[int, ...] = (1, 16, 256)
#: Number of categories of the categorical family in the benchmark.
CATEGORIES: int = 5
#: Target for time(pwgf_mmd) / time(st) at d = 200, n = 16, every family.
TARGET_RATIO: float = 3.0
#: Batch, latent units and pixels of the VAE-shaped benchmark.
MODEL_SHAPE: dict[str, int] = {"batch": 50, "latent": 200, "pixels": 784}
#: Goals for time(estimator) / time(st) of one training step at VAE shapes.
MODEL_TARGETS: dict[str, float] = {
    "reinmax": 1.5, "gapped_st": 1.5, "st_gumbel_softmax": 1.5, "gumbel_rao": 2.5, "arm": 3.0, "disarm": 3.0, "rebar": 5.0, "relax": 6.0,
}


def problem(family: str, d: int, seed: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """A seeded parameter ``theta`` of ``family`` in dimension ``d`` and the benchmark cost ``f``."""
    g = torch.Generator().manual_seed(seed)
    shape = (d, CATEGORIES) if family == "categorical" else (d,)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    if family == "bernoulli":
        theta = 0.1 + 0.8 * torch.rand(d, generator=g, dtype=torch.float64)
    elif family == "poisson":
        theta = 1.0 + 9.0 * torch.rand(d, generator=g, dtype=torch.float64)
    else:
        theta = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), -1)

    def f(z: torch.Tensor) -> torch.Tensor:
        terms = F.softplus(a * z + b) ** 2
        return terms.flatten(1).sum(-1) / d

    return theta, f


def time_call(call: Callable[[], Any], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median and quartiles (seconds) of ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": median, "q1_s": q1, "q3_s": q3}


def run(
    repeats: int = 15,
    *,
    dimensions: Sequence[int] = DIMENSIONS,
    sample_sizes: Sequence[int] = SAMPLE_SIZES,
    families: Sequence[str] = FAMILIES,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time every (estimator, family, d, n); return the JSON-ready record (:func:`overhead` gives the headline ratios)."""
    repeats = check_positive_int(repeats, "repeats")
    names = sorted(estimators.ESTIMATORS) if names is None else list(names)
    rows: list[dict[str, Any]] = []
    for family in families:
        for d in dimensions:
            theta, f = problem(family, d, seed)
            for name in names:
                if family not in estimators.ESTIMATORS[name]:
                    continue
                for n in sample_sizes:
                    row: dict[str, Any] = {"estimator": name, "family": family, "d": d, "n": n}
                    g = torch.Generator().manual_seed(seed)

                    def call() -> torch.Tensor:
                        return estimators.estimate(name, family, theta, f, n, generator=g)  # noqa: B023

                    try:
                        row.update(time_call(call, repeats))
                    except ValueError as err:  # e.g. ``exact`` cannot enumerate |Z|^d states
                        row["skipped"] = f"{type(err).__name__}: {err}"
                    rows.append(row)
    return {"meta": _meta(repeats, seed), "timings": rows}


#: The estimators of the headline comparison, timed against ``st`` in turns.
HEADLINE: tuple[str, ...] = ("st", "pwgf_st", "pwgf_mmd", "pwgf_mmd_argmin")


def overhead(repeats: int, *, families: Sequence[str] = FAMILIES, d: int = 200, n: int = 16, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per family, the time of each :data:`HEADLINE` estimator over that of ``st`` at (``d``, ``n``), measured in turns.

    In each of ``repeats`` rounds every estimator is called once, in turn, so that a change of machine
    load reaches all of them alike; the ratio is that of medians of the calling thread's CPU time
    (``time.thread_time``: with one torch thread it counts the call's own work and not the time the
    process waited for a core), with the wall-clock medians reported beside it.
    """
    repeats = check_positive_int(repeats, "repeats")
    out: dict[str, dict[str, Any]] = {}
    for family in families:
        theta, f = problem(family, d, seed)
        g = torch.Generator().manual_seed(seed)
        cpu: dict[str, list[float]] = {name: [] for name in HEADLINE}
        wall: dict[str, list[float]] = {name: [] for name in HEADLINE}
        for name in HEADLINE:  # warm-up
            estimators.estimate(name, family, theta, f, n, generator=g)
        for _ in range(repeats):
            for name in HEADLINE:
                start_cpu, start_wall = time.thread_time(), time.perf_counter()
                estimators.estimate(name, family, theta, f, n, generator=g)
                cpu[name].append(time.thread_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
        base = statistics.median(cpu["st"])
        entry: dict[str, Any] = {"d": d, "n": n, "st_cpu_median_s": base, "st_wall_median_s": statistics.median(wall["st"])}
        for name in HEADLINE[1:]:
            entry[f"{name}_over_st"] = statistics.median(cpu[name]) / base
            entry[f"{name}_over_st_wall"] = statistics.median(wall[name]) / statistics.median(wall["st"])
        entry["target"] = TARGET_RATIO
        entry["within_target"] = entry["pwgf_mmd_over_st"] <= TARGET_RATIO
        out[family] = entry
    return out


def model_problem(seed: int) -> tuple[Callable[[], torch.distributions.Distribution], Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor]]:
    """A seeded VAE-shaped problem: a function building the encoder's distribution (a fresh graph per step),
    the decoder's negative log-likelihood ``f`` (``[n, batch, latent] -> [n, batch]``) and the parameters."""
    g = torch.Generator().manual_seed(seed)
    batch, latent, pixels = MODEL_SHAPE["batch"], MODEL_SHAPE["latent"], MODEL_SHAPE["pixels"]
    dtype = torch.float32
    x = (torch.rand(batch, pixels, generator=g, dtype=dtype) < 0.3).to(dtype)
    encoder = torch.randn(pixels, latent, generator=g, dtype=dtype) / pixels**0.5
    decoder = torch.randn(latent, pixels, generator=g, dtype=dtype) / latent**0.5
    bias = torch.zeros(pixels, dtype=dtype)
    params = [p.requires_grad_(True) for p in (encoder, decoder, bias)]

    def dist() -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=(2 * x - 1) @ encoder), 1)

    def f(z: torch.Tensor) -> torch.Tensor:
        logits = z @ decoder + bias
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    return dist, f, params


#: Goal for time(st) / time(floor): the library's ST step against the plain-PyTorch ST step.
FLOOR_TARGET: float = 1.1


def _floor_step(model: tuple[Callable[[], torch.distributions.Distribution], Callable[[torch.Tensor], torch.Tensor], list[torch.Tensor]], g: torch.Generator) -> Callable[[], None]:
    """The plain-PyTorch ST training step the library's ``st`` is measured against: sample, ``z + p - p.detach()``, decoder, loss, backward."""
    dist, f, params = model

    def step() -> None:
        p = cast(Any, dist()).base_dist.probs
        z = (torch.rand(p.shape, generator=g, dtype=p.dtype) < p.detach()).to(p.dtype)
        f((z + p - p.detach()).unsqueeze(0)).mean(0).sum().backward()
        for w in params:
            w.grad = None

    return step


def run_model(repeats: int = 15, *, names: Sequence[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Median seconds per training step at :data:`MODEL_SHAPE` per Bernoulli estimator, and the ratios to ST and to the plain-PyTorch floor.

    Besides the registered estimators, two rows: ``floor``, the plain-PyTorch ST step
    (:func:`_floor_step`), and ``relax_eta0``, RELAX with a fixed ``eta = 0`` and a linear control
    :math:`r(s) = s^\\top w`, whose only evaluation of the cost is at the sample (``cost_points`` counts
    the rows of ``f``'s input batches per step). Steps take turns within each repeat; the ratios are
    those of medians of the calling thread's CPU time (``time.thread_time``; one torch thread), with
    the wall-clock medians beside them.
    """
    repeats = check_positive_int(repeats, "repeats")
    # exact and unordered_set enumerate an example's states: 2**200 at these shapes.
    names = sorted(n for n, fams in estimators.ESTIMATORS.items() if "bernoulli" in fams and n not in ("exact", "unordered_set")) if names is None else list(names)
    if "st" not in names:
        names = ["st", *names]
    model = model_problem(seed)
    dist, f, params = model
    g = torch.Generator().manual_seed(seed)
    points = {"count": 0}

    def counted(z: torch.Tensor) -> torch.Tensor:
        points["count"] += z.shape[0]
        return f(z)

    control_weight = torch.zeros(MODEL_SHAPE["latent"], dtype=torch.float32, requires_grad=True)

    def control(s: torch.Tensor) -> torch.Tensor:
        return s @ control_weight

    def estimator_step(name: str, **opts: Any) -> Callable[[], None]:
        def step() -> None:
            estimators.surrogate(name, dist(), counted, estimators.MIN_SAMPLES[name], generator=g, **opts).sum().backward()
            for p in [*params, control_weight]:
                p.grad = None

        return step

    steps: dict[str, Callable[[], None]] = {"floor": _floor_step(model, g)}
    steps.update({name: estimator_step(name) for name in names})
    steps["relax_eta0"] = estimator_step("relax", eta=0.0, control=control)
    cost_points: dict[str, float] = {}
    for label, step in steps.items():  # warm-up, and the evaluations of f per step
        points["count"] = 0
        step()
        cost_points[label] = points["count"]
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    wall: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            step()
            cpu[label].append(time.thread_time() - start_cpu)
            wall[label].append(time.perf_counter() - start_wall)
    st_cpu, floor_cpu = statistics.median(cpu["st"]), statistics.median(cpu["floor"])
    rows = []
    for label in steps:
        median = statistics.median(cpu[label])
        row: dict[str, Any] = {
            "estimator": label, "n_samples": 1 if label in ("floor", "relax_eta0") else estimators.MIN_SAMPLES[label],
            "median_s": median, "wall_median_s": statistics.median(wall[label]),
            "over_st": median / st_cpu, "over_floor": median / floor_cpu, "cost_points": cost_points[label],
        }
        if label in MODEL_TARGETS:
            row.update(target=MODEL_TARGETS[label], within_target=median / st_cpu <= MODEL_TARGETS[label])
        if label == "st":
            row.update(floor_target=FLOOR_TARGET, within_floor_target=median / floor_cpu <= FLOOR_TARGET)
        rows.append(row)
    return {"shape": dict(MODEL_SHAPE), "dtype": "float32", "repeats": repeats, "statistic": "median thread CPU time", "rows": rows}


def _meta(repeats: int, seed: int) -> dict[str, Any]:
    return {
        "repeats": repeats,
        "statistic": "median of repeats (q1, q3 quartiles) of time.perf_counter per estimate() call",
        "seed": seed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "categories": CATEGORIES,
        "cost": "f(z) = sum softplus(a z + b)^2 / d",
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--output`` JSON path, ``--repeats``, ``--threads`` (torch intra-op threads, default 1)."""
    parser = argparse.ArgumentParser(prog="python -m pwgf.experiments.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("_build/bench.json"), help="where to write the JSON record")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per configuration (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 gives the steadiest timings)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(check_positive_int(args.threads, "threads"))
    record = run(args.repeats, seed=args.seed)
    record["overhead"] = overhead(4 * args.repeats, seed=args.seed)
    record["model"] = run_model(args.repeats, seed=args.seed)
    atomic_write_json(args.output, record)
    for family, entry in record["overhead"].items():
        ratio = entry.get("pwgf_mmd_over_st", float("nan"))
        print(f"{family:12s} d={entry['d']} n={entry['n']}: CPU time over st: pwgf_mmd {ratio:.2f} (target {entry['target']:g}), pwgf_mmd_argmin {entry['pwgf_mmd_argmin_over_st']:.2f}, pwgf_st {entry['pwgf_st_over_st']:.2f}")
    for row in record["model"]["rows"]:
        goal = f" (goal <= {row['target']:g}: {'met' if row['within_target'] else 'MISSED'})" if "target" in row else ""
        if "floor_target" in row:
            goal = f" = {row['over_floor']:.2f} x floor (goal <= {row['floor_target']:g}: {'met' if row['within_floor_target'] else 'MISSED'})"
        print(f"VAE step {row['estimator']:18s} {1e3 * row['median_s']:7.2f} ms = {row['over_st']:.2f} x st{goal}; f at {row['cost_points']} points")
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
