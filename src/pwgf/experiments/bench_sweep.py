r"""Overhead of the sweep engine per run: ``python -m pwgf.experiments.bench_sweep --output _build/bench_sweep.json``.

The run function :func:`busy` keeps one core busy for a fixed wall-clock time ``seconds`` (small
float64 matrix products until ``time.perf_counter`` passes a deadline). Busy rather than asleep: like
a real run it holds a core, so the engine's own processes (this client, the scheduler, the nannies)
must compete with the runs for the cores, as in a real sweep; and a fixed duration makes the direct
baseline :math:`N d` whatever else loads the machine.

For each run duration :math:`d` in :data:`DURATIONS`, :math:`N` runs are timed (wall clock :math:`T`):

* ``direct``: a Python loop calling :func:`busy` :math:`N` times, the baseline :math:`T_0 \approx N d`;
* ``in-process``: :func:`pwgf.experiments.sweep.run_sweep` with ``workers=1`` (result files, progress bar, one thread);
* ``local``: ``run_sweep(workers=W)``, which starts and stops its own LocalCluster of :math:`W`
  worker processes inside :math:`T`;
* ``cluster``: ``run_sweep(scheduler=address)`` on a LocalCluster of :math:`W` workers that is
  already running and warm (each worker has run one sweep before), as a long-lived cluster is.

The overhead per run is the core time the engine costs beyond the runs themselves,
:math:`(T W - T_0) / N` (:math:`W = 1` in process), also given in percent of :math:`d`; idle workers
while the last runs finish count as overhead, so :math:`N` is a multiple of :math:`W`. ``local``
includes the start-up of its cluster, a cost paid once per sweep and spread over its :math:`N` runs;
it is also reported alone (``startup_s``: the wall time of a local sweep of :math:`W` runs of zero
duration, which starts the cluster, imports the library in every worker and stops it). ``cluster``
is the steady state. The goal is below :data:`GOAL_PERCENT` for 1 s runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pwgf._validate import check_positive, check_positive_int
from pwgf.experiments.results import atomic_write_json
from pwgf.experiments.sweep import local_cluster, run_sweep

__all__ = ["DURATIONS", "RUNS", "GOAL_PERCENT", "busy", "measure", "run", "main"]

#: Run durations (seconds) and the number of runs timed for each.
DURATIONS: tuple[float, ...] = (0.1, 1.0)
RUNS: tuple[int, ...] = (40, 12)
#: Goal for the overhead of 1 s runs, in percent.
GOAL_PERCENT: float = 5.0


def busy(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keep one core busy for ``config["seconds"]`` of wall-clock time; return the number of matrix products."""
    deadline = time.perf_counter() + float(config["seconds"])
    x = torch.ones(32, 32, dtype=torch.float64)
    products = 0
    while time.perf_counter() < deadline:
        x = x @ x / 32  # stays all ones: no overflow however long it runs
        products += 1
    return {"products": products}


def _empty_runs(workers: int) -> list[dict[str, Any]]:
    """One run of zero duration per worker."""
    return [{"seconds": 0.0, "index": i} for i in range(workers)]


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _row(mode: str, seconds: float, runs: int, workers: int, wall: float, direct: float) -> dict[str, Any]:
    per_run = (wall * workers - direct) / runs
    return {"mode": mode, "run_s": seconds, "runs": runs, "workers": workers, "wall_s": wall,
            "overhead_per_run_s": per_run, "overhead_percent": 100 * per_run / seconds}


def measure(seconds: float, runs: int, workers: int, address: str, folder: Path) -> list[dict[str, Any]]:
    """The rows of every mode for ``runs`` runs of ``seconds`` (module docstring), result files in ``folder``."""
    configs = [{"seconds": seconds, "index": i} for i in range(runs)]
    busy({"seconds": 0.01})  # the first matrix product of a process sets up torch's kernels: not part of the baseline
    direct = _timed(lambda: [busy(c) for c in configs])
    rows = [_row("direct", seconds, runs, 1, direct, direct)]

    def sweep(mode: str, **kwargs: Any) -> float:
        return _timed(lambda: run_sweep(configs, busy, folder / f"{seconds}-{mode}", desc=f"{mode}, {seconds} s runs", **kwargs))

    rows.append(_row("in-process", seconds, runs, 1, sweep("in-process", workers=1), direct))
    startup = _timed(lambda: run_sweep(_empty_runs(workers), busy, folder / f"{seconds}-startup", workers=workers, desc="local start-up"))
    rows.append({**_row("local", seconds, runs, workers, sweep("local", workers=workers), direct), "startup_s": startup})
    rows.append(_row("cluster", seconds, runs, workers, sweep("cluster", scheduler=address), direct))
    return rows


def run(durations: Sequence[float] = DURATIONS, runs: Sequence[int] = RUNS, workers: int = 2) -> dict[str, Any]:
    """Measure every duration (module docstring); return the JSON-ready record."""
    workers = check_positive_int(workers, "workers")
    if len(runs) != len(durations):
        raise ValueError(f"runs must give one count per duration, got {len(runs)} counts for {len(durations)} durations")
    for seconds, n in zip(durations, runs, strict=True):
        check_positive(seconds, "durations entry")
        if check_positive_int(n, "runs entry") % workers:
            raise ValueError(f"runs entries must be multiples of workers ({workers}), got {n}")
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder, local_cluster(workers) as cluster:
        run_sweep(_empty_runs(workers), busy, Path(folder) / "warm-up", scheduler=cluster.scheduler_address, desc="cluster warm-up")
        for seconds, n in zip(durations, runs, strict=True):
            rows += measure(seconds, n, workers, cluster.scheduler_address, Path(folder))
    meta = {
        "run": "busy: float64 32x32 matrix products until a wall-clock deadline (one core held)",
        "overhead_per_run": "(wall x workers - direct wall) / runs; percent of the run duration",
        "workers": workers, "cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    long_runs = [r for r in rows if r["run_s"] == max(durations) and r["mode"] != "direct"]
    goal = {"run_s": max(durations), "percent": GOAL_PERCENT,
            "met_by": sorted(r["mode"] for r in long_runs if r["overhead_percent"] < GOAL_PERCENT)}
    return {"meta": meta, "rows": rows, "goal": goal}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``--output`` JSON path, ``--workers``, ``--runs`` (one count per duration of :data:`DURATIONS`)."""
    parser = argparse.ArgumentParser(prog="python -m pwgf.experiments.bench_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("_build/bench_sweep.json"), help="where to write the JSON record")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the local and cluster modes")
    parser.add_argument("--runs", type=int, nargs=len(DURATIONS), default=list(RUNS),
                        help=f"runs timed for each duration {DURATIONS} s (multiples of --workers)")
    args = parser.parse_args(argv)
    record = run(DURATIONS, args.runs, args.workers)
    atomic_write_json(args.output, record)
    for row in record["rows"]:
        extra = f" (start-up alone: {row['startup_s']:.1f} s)" if "startup_s" in row else ""
        print(f"{row['run_s']:>4} s runs, {row['mode']:10s} x{row['workers']}: wall {row['wall_s']:6.2f} s, "
              f"overhead {row['overhead_per_run_s'] * 1000:+8.1f} ms per run = {row['overhead_percent']:+6.1f}%{extra}")
    print(f"goal: below {GOAL_PERCENT}% for {record['goal']['run_s']} s runs, met by {record['goal']['met_by'] or 'none'}")
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()
