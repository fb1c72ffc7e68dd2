"""One sweep engine for every experiment: resumable runs on this machine or on a Dask cluster.

A sweep is a list of configs (flat dicts), a run function and an output folder. :func:`run_sweep`
adds to every config the version of the library code the run executes (``code``,
:func:`code_version`), skips the runs whose result file holds exactly that config, runs the missing
ones on an executor, and writes each result as it arrives to ``out_dir / f"{run_key(config)}.json"``
(:func:`pwgf.experiments.results.run_key`: readable settings and a hash of the config), holding
``{"config": ..., "result": ...}``, atomically (:func:`pwgf.experiments.results.atomic_write_json`). An interrupted
sweep therefore leaves only whole result files, rerunning it computes only what is missing, and a
change of the library code the runs execute computes them again. The executor is chosen by ``scheduler``:

* ``"local"`` (default): ``workers`` processes on this machine, a :func:`local_cluster` started for
  the sweep; with one worker (or one missing run) the runs execute in this process, one after the other.
  The worker processes import the main script: a script that starts a sweep with several local
  workers must do so under ``if __name__ == "__main__":`` (:func:`run_sweep` refuses otherwise).
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

Every process that executes a run checks that its own library code has the config's ``code``
version: a worker started from another checkout refuses the run rather than file its numbers under
the wrong version.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import torch

from pwgf._extras import missing_extra
from pwgf._validate import check_positive_int
from pwgf.experiments.results import atomic_open, atomic_write_text, canonical_json, check_json, read_json, run_key

try:
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm
except ImportError as _err:
    raise missing_extra("experiments", _err) from _err

__all__ = [
    "run_sweep",
    "run_config",
    "code_version",
    "check_scheduler",
    "CorruptResultWarning",
    "local_cluster",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
]

#: A run function: ``run(config)``, or ``run(config, checkpoint=path)`` with ``checkpoints=True``.
RunFunction = Callable[..., Mapping[str, Any]]


def checkpoint_path(out_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Where the checkpoint of ``config``'s run lives: ``out_dir/checkpoints/<run_key(config)>.pt``."""
    return Path(out_dir) / "checkpoints" / f"{run_key(config)}.pt"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` with ``torch.save``, atomically (:func:`pwgf.experiments.results.atomic_open`).

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


def code_version(run: RunFunction) -> str:
    """First 12 hex digits of the SHA-256 of the sources of the ``pwgf`` modules that ``run`` executes.

    For a run function defined in a ``pwgf`` module (a :func:`functools.partial` of one included), the
    modules are that module and every ``pwgf`` module it imports, transitively (read from the sources'
    ``import`` statements), with the packages they lie in; for a run function defined elsewhere (a
    notebook, a test), every module of the ``pwgf`` package. A change of any of those sources changes
    the version, so :func:`run_sweep` recomputes exactly the runs of the changed code.
    """
    func: Any = run
    while isinstance(func, functools.partial):
        func = func.func
    module = getattr(func, "__module__", None) or ""
    names = _imported_modules(module) if module == "pwgf" or module.startswith("pwgf.") else _package_modules()
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + _source(name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no source file for the module {module!r}")
    return Path(spec.origin)


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


@functools.cache
def _package_modules() -> frozenset[str]:
    """Every module of the ``pwgf`` package, by dotted name."""
    root = _source("pwgf").parent
    return frozenset(
        ".".join(("pwgf", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__") for path in root.rglob("*.py")
    )


@functools.cache
def _imported_modules(module: str) -> frozenset[str]:
    """``module``, its parent packages and every ``pwgf`` module it imports, transitively."""
    seen: set[str] = set()
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parent packages run first
        package = name if _is_package(name) else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(_source(name).read_bytes())):
            if isinstance(node, ast.Import):
                stack += [alias.name for alias in node.names if alias.name.split(".")[0] == "pwgf"]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
                if base.split(".")[0] != "pwgf":
                    continue
                stack.append(base)
                if _is_package(base):  # `from pwgf import estimators` imports a module
                    stack += [f"{base}.{a.name}" for a in node.names if importlib.util.find_spec(f"{base}.{a.name}") is not None]
    return frozenset(seen)


def run_config(config: Mapping[str, Any], run: RunFunction, *, code: str | None = None) -> dict[str, Any]:
    """The config of ``run`` as :func:`run_sweep` stores it and passes it to the run: ``config`` with
    ``"code"`` set to :func:`code_version` of ``run`` (``code``, if given, saves computing it), read
    back from its canonical JSON (:func:`pwgf.experiments.results.canonical_json`; tuples become lists).

    A config that already holds ``"code"`` must hold this version (ValueError otherwise); a config
    that is not JSON-serializable is refused (TypeError, ValueError for NaN or infinity), naming the
    offending entry.
    """
    version = code_version(run) if code is None else code
    c = dict(config)
    if c.setdefault("code", version) != version:
        raise ValueError(f"config['code'] is {c['code']!r}, but the library code that run executes has version {version!r} "
                         "(leave 'code' out: the sweep engine adds it)")
    return json.loads(canonical_json(c))


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
    """Run ``run`` for every config without a result file in ``out_dir``; return every record.

    Each config is stored as :func:`run_config` makes it (with the ``code`` version of the library
    code ``run`` executes), in ``out_dir / f"{run_key(config)}.json"``, and ``configs`` must be
    distinct. A result file is reused only if the config stored in it equals the requested one; a
    file that cannot be read as a record, or that holds another config (a half-copied or hand-edited
    file), is moved aside to ``<name>.corrupt`` (``.corrupt-2``, ... if taken) with a
    :class:`CorruptResultWarning` naming both files, and its run is computed again.

    ``scheduler`` is ``"local"`` or the address of a Dask scheduler, ``"tcp://host:port"`` (module
    docstring); ``workers`` is the number of local worker processes (default: the cores available to
    this process, ``dask.system.CPU_COUNT``; ignored for a cluster, whose workers are its own). With
    more than one local worker, the workers are new Python processes that import the calling script
    as a module: a script (not a notebook) that calls ``run_sweep`` must do so under
    ``if __name__ == "__main__":``, or every worker would start the sweep again (a RuntimeError says
    so). With ``checkpoints=True`` the run is called as ``run(config, checkpoint=checkpoint_path(out_dir, config))``.
    A tqdm bar ``desc`` counts finished runs, those found on disk included. The records,
    ``{"config": ..., "result": ...}`` as read back from their files, come in the order of ``configs``.

    Refused before any run starts, naming the run: a config that is not JSON-serializable, or whose
    ``code`` is not that of ``run``; a bad ``scheduler`` or ``workers``. A run whose result is not a
    JSON-serializable mapping stops the sweep with a TypeError naming the run and the offending entry.
    A run that raises stops the sweep: runs not yet finished are cancelled, results already written
    stay, and a rerun computes only the missing runs (from their checkpoints, if any). A worker that
    dies while it holds runs costs only those runs: Dask runs them again on another worker, up to
    ``distributed.scheduler.allowed-failures`` deaths per run (then :class:`distributed.KilledWorker`).
    """
    check_scheduler(scheduler)
    workers = CPU_COUNT if workers is None else check_positive_int(workers, "workers")
    version = code_version(run)
    prepared = []
    for i, config in enumerate(configs):
        try:
            prepared.append(run_config(config, run, code=version))
        except (TypeError, ValueError) as err:
            raise type(err)(f"run {i} of the sweep ({_describe(config)}): {err}") from None
    keys = [run_key(c) for c in prepared]
    if len(set(keys)) != len(keys):
        first = next(i for i, key in enumerate(keys) if keys.count(key) > 1)
        raise ValueError(f"configs must be distinct: runs {[i for i, k in enumerate(keys) if k == keys[first]]} have the same config "
                         f"({_describe(prepared[first])}) and would write the same result file")
    out_dir = Path(out_dir).resolve()  # workers may run in another folder
    paths = [out_dir / f"{key}.json" for key in keys]
    records = [_stored_record(path, config) for path, config in zip(paths, prepared, strict=True)]
    todo = [i for i, record in enumerate(records) if record is None]
    tasks = [(i, prepared[i], checkpoint_path(out_dir, prepared[i]) if checkpoints else None) for i in todo]
    workers = min(workers, len(todo))
    if scheduler == "local" and workers > 1:
        _check_main_guard()
    finished = _results(tasks, run, scheduler, workers)
    with tqdm(total=len(prepared), initial=len(prepared) - len(todo), desc=desc) as bar, closing(finished):
        for i, result in finished:
            records[i] = _write_record(paths[i], prepared[i], result)
            if checkpoints:
                _remove_checkpoint(checkpoint_path(out_dir, prepared[i]))
            bar.update()
    return records  # type: ignore[return-value]


#: The address forms of a Dask scheduler, ``protocol://host:port``.
_ADDRESS = re.compile(r"(tcp|tls|ucx|inproc|ws|wss)://\S+")


def check_scheduler(scheduler: Any) -> str:
    """Return ``scheduler`` if it is ``"local"`` or a Dask scheduler address such as ``"tcp://host:8786"``; ValueError otherwise."""
    if scheduler == "local" or (isinstance(scheduler, str) and _ADDRESS.fullmatch(scheduler)):
        return scheduler
    raise ValueError(
        f"scheduler must be 'local' (worker processes on this machine) or a Dask scheduler address such as "
        f"'tcp://host:8786' (protocol://host:port), got {scheduler!r}"
    )


class CorruptResultWarning(UserWarning):
    """A result file could not be reused (unreadable, or holding another config): moved aside, its run computed again."""


def _describe(config: Any) -> str:
    text = repr(dict(config)) if isinstance(config, Mapping) else repr(config)
    return text if len(text) <= 200 else text[:197] + "..."


def _stored_record(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The record in ``path`` if it holds ``config``; None if there is none or it was moved aside (with a warning)."""
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = f"is not valid JSON ({err})"
    else:
        if not (isinstance(record, dict) and set(record) == {"config", "result"} and isinstance(record["result"], dict)):
            problem = "is not a result record {'config': ..., 'result': {...}}"
        elif json.dumps(record["config"], sort_keys=True) != json.dumps(config, sort_keys=True):
            problem = f"holds another config ({_describe(record['config'])})"
        else:
            return record
    aside = path.with_name(f"{path.name}.corrupt")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{n}")
    os.replace(path, aside)
    warnings.warn(f"result file {path} {problem}: moved to {aside.name}, and its run is computed again", CorruptResultWarning, stacklevel=3)
    return None


def _write_record(path: Path, config: dict[str, Any], result: Any) -> dict[str, Any]:
    """Write ``{"config", "result"}`` to ``path`` atomically; return it as read back. TypeError naming the run if ``result`` is not JSON."""
    try:
        if not isinstance(result, Mapping):
            raise TypeError(f"the result is a {type(result).__name__}, not a mapping")
        check_json(result, "result")
    except (TypeError, ValueError) as err:
        raise TypeError(f"run {path.stem} ({_describe(config)}) returned a result that cannot be stored as JSON: {err}. "
                        "Result files already written are kept; fix the run function and rerun the sweep") from None
    text = json.dumps({"config": config, "result": dict(result)}, indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    return json.loads(text)


def _call(run: RunFunction, config: Mapping[str, Any], checkpoint: Path | None) -> Mapping[str, Any]:
    """``run(config)`` (with its checkpoint path, if any) on one torch thread; the thread count is restored.

    A process whose library code differs from the config's ``code`` (a worker of a cluster started from
    another checkout) refuses the run rather than file its numbers under the wrong version.
    """
    version = code_version(run)
    if config["code"] != version:
        raise RuntimeError(f"run {run_key(config)} was made for library code {config['code']!r}, but this process runs {version!r}: "
                           "every worker of a sweep must run the same pwgf sources as the process that made the configs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(config) if checkpoint is None else run(config, checkpoint=checkpoint)
    finally:
        torch.set_num_threads(threads)


def _results(
    tasks: Sequence[tuple[int, Mapping[str, Any], Path | None]], run: RunFunction, scheduler: str, workers: int
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


def _check_main_guard() -> None:
    """RuntimeError if this call runs at the top level of a Python script outside ``if __name__ == "__main__":``.

    Local workers are spawned processes that import the main script; a sweep it starts at import would
    start again in every worker, and the cluster would fail with "Nanny failed to start".
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not str(path).endswith(".py"):
        return  # a notebook, an interactive session, `python -c`: workers do not import it
    frame: types.FrameType | None = sys._getframe()
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return  # not called while the script's top level runs
    line = frame.f_lineno
    tree = ast.parse(Path(path).read_bytes())
    if main.__name__ == "__main__" and any(
        isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or node.lineno) for node in tree.body
    ):
        return
    raise RuntimeError(
        f"run_sweep with local worker processes was called at the top level of the script {path} (line {line}), outside "
        "`if __name__ == \"__main__\":`. Each worker process imports the script and would start the sweep again: put the "
        "call under that guard (or run with workers=1, or on a Dask scheduler)"
    )


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(a, ast.Name) and a.id == "__name__" for a in sides) and any(
        isinstance(b, ast.Constant) and b.value == "__main__" for b in sides
    )


def _remove_checkpoint(path: Path) -> None:
    """Delete a finished run's checkpoint and any temporary file a killed save left beside it."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        for stray in path.parent.iterdir():
            if stray.name.startswith(f".{path.name}.") and stray.name.endswith(".tmp"):
                stray.unlink(missing_ok=True)
