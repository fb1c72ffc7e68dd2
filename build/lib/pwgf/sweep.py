"""One sweep engine for every experiment: resumable runs on this machine or on a Dask cluster.

A sweep is a list of configs (flat dicts), a run function and an output folder. :func:`run_sweep`
skips the runs whose result file exists, runs the missing ones on an executor, and writes each
result as it arrives to ``out_dir / f"{run_key(config)}.json"``, holding ``{"config": ..., "result": ...}``,
atomically (:func:`pwgf.results.atomic_write_json`). An interrupted sweep therefore leaves only whole
result files, and rerunning it computes only what is missing. The executor is chosen by ``scheduler``:

* ``"local"`` (default): ``workers`` processes on this machine, a :func:`local_cluster` started for
  the sweep; with one worker (or one missing run) the runs execute in this process, one after the other.
* the address of a running Dask scheduler, e.g. ``"tcp://scheduler-host:8786"``: the runs go to that
  cluster's workers through :class:`distributed.Client` (they need the same environment and the same
  ``pwgf`` code as this process).

Results are written by this (the client) process only; workers write nothing but checkpoints.

**Run functions.** ``run(config) -> Mapping`` returns a JSON-serializable mapping. It must depend on
its config alone: seed every random draw from the config, give every tensor its dtype explicitly,
and read no global state this process may have set, because a run can execute in another process
or on another machine; it then gives the same numbers whichever executor runs it. The engine runs
it with one torch thread (restored afterwards), so parallel runs do not contend for cores and
reductions are computed in one order.

**Checkpoints** (``checkpoints=True``): the engine calls ``run(config, checkpoint=path)`` with
``path = checkpoint_path(out_dir, config)`` = ``out_dir/checkpoints/<run_key(config)>.pt``. The run
resumes from it and saves it as it goes::

    def train(config, *, checkpoint):
        generator = torch.Generator().manual_seed(config["seed"])
        model = Model(...)                                  # initialised from generator
        optimizer = torch.optim.Adam(model.parameters())
        step, history = 0, []
        state = load_checkpoint(checkpoint)
        if state is not None:                               # a restarted run: continue where it stopped
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            step, history = state["step"], state["history"]
        while step < config["steps"]:
            ...one step, drawing only from generator...
            step += 1
            if step % config["checkpoint_every"] == 0 or step == config["steps"]:
                save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "generator": generator.get_state(), "step": step, "history": history})
        return {"history": history}

A resumed run ends with exactly the numbers of an uninterrupted one provided the checkpoint holds
*every* state the remaining steps read: parameters and optimizer state (``state_dict``), the state
of every random generator (``torch.Generator.get_state()``; ``torch.get_rng_state()`` if the global
generator is used, better avoided; ``numpy.random.Generator.bit_generator.state``), the step, and
every accumulated Python value (histories, running sums, counters). A run restarted by a Dask
worker after its predecessor died finds the checkpoint at the same path, so ``out_dir`` must be on
a filesystem that every worker mounts at the same absolute path. The engine deletes a run's
checkpoint once its result file is written: a checkpoint exists only for an unfinished run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import torch

from pwgf._extras import missing_extra
from pwgf._validate import check_positive_int
from pwgf.results import atomic_open, atomic_write_json, read_json, run_key

try:
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm
except ImportError as _err:
    raise missing_extra("experiments", _err) from _err

__all__ = ["run_sweep", "local_cluster", "checkpoint_path", "save_checkpoint", "load_checkpoint"]

#: A run function: ``run(config)``, or ``run(config, checkpoint=path)`` with ``checkpoints=True``.
RunFunction = Callable[..., Mapping[str, Any]]


def checkpoint_path(out_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Where the checkpoint of ``config``'s run lives: ``out_dir/checkpoints/<run_key(config)>.pt``."""
    return Path(out_dir) / "checkpoints" / f"{run_key(config)}.pt"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` with ``torch.save``, atomically (:func:`pwgf.results.atomic_open`).

    ``state`` is a dict of tensors, ``state_dict``\\ s, generator states (``torch.Generator.get_state()``,
    ``numpy.random.Generator.bit_generator.state``, ``random.Random.getstate()``), numbers, strings,
    ``None`` and lists, tuples and dicts of these: what :func:`load_checkpoint` reads back with
    ``torch.load(weights_only=True)``. A process killed while saving leaves the previous checkpoint.
    """
    with atomic_open(path, "wb") as handle:
        torch.save(dict(state), handle)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = None) -> dict[str, Any] | None:
    """The state last saved by :func:`save_checkpoint` at ``path``, or ``None`` if there is none yet.

    ``map_location`` as in :func:`torch.load`: ``"cpu"`` reads a checkpoint written on a GPU on any
    machine (generator states must be CPU tensors for ``set_state``; ``load_state_dict`` of a module or
    optimizer copies tensors to the device of its parameters).
    """
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, weights_only=True, map_location=map_location)


def run_sweep(
    configs: Iterable[Mapping[str, Any]],
    run: RunFunction,
    out_dir: str | Path,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    desc: str = "sweep",
    checkpoints: bool = False,
) -> list[dict[str, Any]]:
    """Run ``run`` for every config whose result file is missing in ``out_dir``; return every record.

    ``configs`` must be distinct (two runs would write one file). ``scheduler`` is ``"local"`` or the
    address of a Dask scheduler (module docstring); ``workers`` is the number of local worker processes
    (default: the cores available to this process, ``dask.system.CPU_COUNT``; ignored for a cluster, whose workers are its own).
    With ``checkpoints=True`` the run is called as ``run(config, checkpoint=checkpoint_path(out_dir, config))``.
    A tqdm bar ``desc`` counts finished runs, those found on disk included. The records,
    ``{"config": ..., "result": ...}`` as read back from their files, come in the order of ``configs``.

    A run that raises stops the sweep: runs not yet finished are cancelled, results already written
    stay, and a rerun computes only the missing runs (from their checkpoints, if any). A worker that
    dies while it holds runs costs only those runs: Dask runs them again on another worker, up to
    ``distributed.scheduler.allowed-failures`` deaths per run (then :class:`distributed.KilledWorker`).
    """
    configs = [dict(c) for c in configs]
    keys = [run_key(c) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("configs must be distinct: two runs would write the same result file")
    if not isinstance(scheduler, str) or not scheduler:
        raise ValueError(f"scheduler must be 'local' or a Dask scheduler address such as 'tcp://host:8786', got {scheduler!r}")
    workers = CPU_COUNT if workers is None else check_positive_int(workers, "workers")
    out_dir = Path(out_dir).resolve()  # workers may run in another folder
    paths = [out_dir / f"{key}.json" for key in keys]
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    tasks = [(i, configs[i], checkpoint_path(out_dir, configs[i]) if checkpoints else None) for i in todo]
    finished = _results(tasks, run, scheduler, min(workers, len(todo)))
    with tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc) as bar, closing(finished):
        for i, result in finished:
            atomic_write_json(paths[i], {"config": configs[i], "result": dict(result)})
            if checkpoints:
                _remove_checkpoint(checkpoint_path(out_dir, configs[i]))
            bar.update()
    return [read_json(path) for path in paths]


def _call(run: RunFunction, config: Mapping[str, Any], checkpoint: Path | None) -> Mapping[str, Any]:
    """``run(config)`` (with its checkpoint path, if any) on one torch thread; the thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(config) if checkpoint is None else run(config, checkpoint=checkpoint)
    finally:
        torch.set_num_threads(threads)


def _results(
    tasks: list[tuple[int, Mapping[str, Any], Path | None]], run: RunFunction, scheduler: str, workers: int
) -> Generator[tuple[int, Mapping[str, Any]], None, None]:
    """``(index, result)`` of every task, in the order the runs finish."""
    if not tasks:
        return
    if scheduler == "local" and workers == 1:
        for i, config, checkpoint in tasks:
            yield i, _call(run, config, checkpoint)
        return
    with _client(scheduler, workers) as client:
        # pure=False: every submission is a new task, so a run that failed in an earlier sweep is
        # tried afresh, never served from the scheduler's memory of that failure.
        futures = {client.submit(_call, run, config, checkpoint, pure=False): i for i, config, checkpoint in tasks}
        for future in as_completed(futures, loop=client.loop):
            yield futures.pop(future), future.result()


def local_cluster(workers: int) -> LocalCluster:
    """A Dask cluster of ``workers`` single-threaded worker processes on this machine, on the loopback
    interface only (``"local"`` sweeps run on one; to keep one across sweeps, pass its ``scheduler_address``)."""
    return LocalCluster(
        n_workers=check_positive_int(workers, "workers"), threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # health checks on a free port
        silence_logs=logging.ERROR,
    )


@contextmanager
def _client(scheduler: str, workers: int) -> Iterator[Client]:
    """A Dask client of ``scheduler``, or of a new :func:`local_cluster` of ``workers`` for ``"local"``."""
    if scheduler != "local":
        with Client(scheduler, set_as_default=False) as client:
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _remove_checkpoint(path: Path) -> None:
    """Delete a finished run's checkpoint and any temporary file a killed save left beside it."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        for stray in path.parent.iterdir():
            if stray.name.startswith(f".{path.name}.") and stray.name.endswith(".tmp"):
                stray.unlink(missing_ok=True)
