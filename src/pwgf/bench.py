r"""Wall-clock benchmark of every registered estimator: ``python -m pwgf.bench --output _build/bench.json``.

For each family, each estimator that applies to it (:data:`pwgf.estimators.ESTIMATORS`), each dimension
``d`` and each sample size ``n``, one call of :func:`pwgf.estimators.estimate` is timed with
``time.perf_counter``: a few warm-up calls, then ``repeats`` timed calls, reporting the median (and the
quartiles). The cost is :math:`f(z) = \frac1d\sum_i \operatorname{softplus}(a_i \cdot z_i + b_i)^2`
(summed over the category axis for one-hot samples): cheap, so the figures measure the estimators'
own overhead, and differentiable in :math:`z` as the pathwise estimators need. Parameters and draws are
seeded. Calls that are not possible (``exact`` enumerates :math:`|\mathcal{Z}|^d` states) are recorded
with the reason instead of a time.

The headline figure is the overhead of ``pwgf_mmd`` over ``st`` at ``d = 200``, ``n = 16``: the
target for Bernoulli is a ratio within 3; the Poisson and categorical ratios are reported too.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from pwgf import estimators
from pwgf._validate import check_positive_int
from pwgf.families import FAMILIES
from pwgf.results import atomic_write_json

__all__ = ["DIMENSIONS", "SAMPLE_SIZES", "CATEGORIES", "TARGET_RATIO", "problem", "time_call", "run", "main"]

DIMENSIONS: tuple[int, ...] = (10, 200)
SAMPLE_SIZES: tuple[int, ...] = (1, 16, 256)
#: Number of categories of the categorical family in the benchmark.
CATEGORIES: int = 5
#: Target for time(pwgf_mmd) / time(st) at d = 200, n = 16, Bernoulli.
TARGET_RATIO: float = 3.0


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
    """Time every (estimator, family, d, n); return the JSON-ready record with the ``pwgf_mmd`` / ``st`` ratios."""
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
    return {"meta": _meta(repeats, seed), "timings": rows, "overhead": overhead(rows)}


def overhead(rows: Sequence[dict[str, Any]], d: int = 200, n: int = 16) -> dict[str, dict[str, Any]]:
    """Per family, median time of ``pwgf_mmd`` and ``pwgf_st`` divided by that of ``st`` at (``d``, ``n``)."""
    table = {(r["estimator"], r["family"], r["d"], r["n"]): r.get("median_s") for r in rows}
    out: dict[str, dict[str, Any]] = {}
    for family in sorted({r["family"] for r in rows}):
        base = table.get(("st", family, d, n))
        if base is None:
            continue
        entry: dict[str, Any] = {"d": d, "n": n, "st_median_s": base}
        for name in ("pwgf_st", "pwgf_mmd"):
            t = table.get((name, family, d, n))
            if t is not None:
                entry[f"{name}_over_st"] = t / base
        if family == "bernoulli" and "pwgf_mmd_over_st" in entry:
            entry["target"] = TARGET_RATIO
            entry["within_target"] = entry["pwgf_mmd_over_st"] <= TARGET_RATIO
        out[family] = entry
    return out


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
    parser = argparse.ArgumentParser(prog="python -m pwgf.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("_build/bench.json"), help="where to write the JSON record")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per configuration (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 gives the steadiest timings)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(check_positive_int(args.threads, "threads"))
    record = run(args.repeats, seed=args.seed)
    atomic_write_json(args.output, record)
    for family, entry in record["overhead"].items():
        ratio = entry.get("pwgf_mmd_over_st", float("nan"))
        print(f"{family:12s} d={entry['d']} n={entry['n']}: pwgf_mmd / st = {ratio:.2f}, pwgf_st / st = {entry.get('pwgf_st_over_st', float('nan')):.2f}")
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
