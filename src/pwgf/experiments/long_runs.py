r"""Table 2 at convergence: the long runs on the embedded digits, committed with the repository and verified by replay.

The book-scale runs of ``notebooks/bernoulli_vae.md`` stop long before any model has converged, so
they cannot decide a claim about trained models (:func:`pwgf.experiments.vae_training.converged`).
The long runs can:

* **Protocol** (the parameter file ``notebooks/params/bernoulli_vae.long.yaml``, :func:`configs`):
  ARM's protocol :cite:`yin2019arm`, which the paper says Table 2 follows, on the 3,000 embedded
  training digits: batch 50, one learning rate and one setting of each estimator's knobs for every
  estimator (no per-estimator tuning), each run trained until the convergence rule holds
  (``until="converged"``) or a step cap, the test -ELBO at the best validation checkpoint.
* **Running** (``make long-runs``, :func:`run`): an ordinary resumable sweep
  (:func:`pwgf.experiments.sweep.run_sweep`) into ``<folder>/runs``, and a manifest
  (:data:`MANIFEST`) with the command, the parameters, the code version, the machine, the pinned
  numerics (:func:`pwgf.experiments.vae_training.numerics`) and the wall time of each invocation.
* **Reading** (:func:`load_records`, :func:`summary`): the raw run files, whatever code version made
  them, turned into summary rows by the same code as the book-scale experiment
  (:func:`pwgf.experiments.vae_experiment.summary_rows`), so every number is computed by the build.
* **Replay** (:func:`verify`, run by ``make book`` and ``make test``): for one committed run per
  architecture and estimator (its lowest seed), today's code re-executes the first steps
  (:func:`pwgf.experiments.vae_training.replay`), and the training -ELBO of every step, the
  evaluations among them and, at :data:`pwgf.experiments.vae_training.TRACE_STEPS`, the digest of
  every parameter must equal the recorded ones bit for bit. A committed result that today's code no
  longer reproduces raises :class:`ReplayMismatch`, naming the run and the command that recomputes it.

Command line: ``python -m pwgf.experiments.long_runs run PARAMS.yaml`` and
``python -m pwgf.experiments.long_runs verify FOLDER --steps N [--report FILE]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from pwgf._validate import check_choice, check_list, check_positive_int
from pwgf.experiments import results
from pwgf.experiments import vae_experiment as vx
from pwgf.experiments import vae_training as vt
from pwgf.experiments.sweep import run_sweep
from pwgf.experiments.vae import ARCHITECTURES
from pwgf.experiments.vae_objective import ESTIMATOR_NAMES, KNOBS

__all__ = [
    "COMMAND",
    "MANIFEST",
    "PARAMETERS",
    "FOLDER",
    "ReplayMismatch",
    "committed_folder",
    "read_parameters",
    "configs",
    "run",
    "load_records",
    "summary",
    "summary_or_none",
    "replay_targets",
    "verify",
]

#: The make target that computes the long runs (the recompute command a failed replay names).
COMMAND = "make long-runs"
#: The manifest written beside the runs.
MANIFEST = "manifest.json"
#: The parameter file of the committed long runs, relative to the repository root.
PARAMETERS = "notebooks/params/bernoulli_vae.long.yaml"
#: The folder of the committed long runs, relative to the repository root.
FOLDER = "results/bernoulli_vae_long"
# Keys of the parameter file.
_KEYS = frozenset({"archs", "estimator_names", "n_seeds", "data", "batch_size", "steps", "until", "eval_every", "checkpoint_every",
                   "lr", "temperature", "eps", "bandwidth", "workers", "output_dir"})


class ReplayMismatch(AssertionError):
    """A committed run that today's code no longer reproduces bit for bit."""


def committed_folder(start: str | Path | None = None) -> Path:
    """``results/bernoulli_vae_long`` of the repository root (the nearest of ``start``, default the working directory, and its parents holding ``_toc.yml``).

    The committed runs belong to the repository, not to a build, so ``$PWGF_RESULTS_DIR`` does not move them.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder / FOLDER
    raise FileNotFoundError(f"no parent of {here} holds _toc.yml: run from inside the repository")


def read_parameters(path: str | Path) -> dict[str, Any]:
    """The parameter file, checked: exactly the keys of ``notebooks/params/bernoulli_vae.long.yaml``; ValueError naming the bad one."""
    import yaml  # type: ignore[import-untyped]

    params = yaml.safe_load(Path(path).read_text())
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of parameters, got {type(params).__name__}")
    missing, extra = _KEYS - params.keys(), params.keys() - _KEYS
    if missing or extra:
        raise ValueError(f"parameters in {path}: missing {sorted(missing)}, unknown {sorted(extra)}")
    return params


def configs(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every architecture x estimator x seed ``0..n_seeds-1`` with the one learning rate and the one setting of each knob; validated."""
    for arch in check_list(params["archs"], "archs"):
        check_choice(arch, ARCHITECTURES, "arch (in archs)")
    for name in check_list(params["estimator_names"], "estimator_names"):
        check_choice(name, ESTIMATOR_NAMES, "estimator (in estimator_names)")
    check_positive_int(params["n_seeds"], "n_seeds")
    base = {"data": params["data"], "lim": None, "batch": params["batch_size"], "steps": params["steps"], "until": params["until"],
            "eval": params["eval_every"], "ckpt": params["checkpoint_every"], "var": 0, "k": 0, "k_n": None, "device": "cpu"}
    knobs = {"temp": params["temperature"], "eps": params["eps"], "bw": params["bandwidth"]}
    selected = {(arch, name): {"lr": float(params["lr"]), **{key: knobs[key] for key in KNOBS.get(name, {})}}
                for arch in params["archs"] for name in params["estimator_names"]}
    return vx.reported_configs(base, selected, params["archs"], params["estimator_names"], range(params["n_seeds"]))


def _machine() -> dict[str, Any]:
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return {"cpu": model, "logical_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def run(params_path: str | Path, *, root: str | Path = ".") -> list[dict[str, Any]]:
    """Run (or resume) the sweep of the parameter file into ``root/output_dir/runs`` and record this invocation in the manifest."""
    params = read_parameters(params_path)
    check_positive_int(params["workers"], "workers")
    folder = Path(root) / params["output_dir"]
    todo = configs(params)
    started, clock = datetime.now(UTC), time.perf_counter()
    records = run_sweep(todo, vt.train, folder / "runs", workers=params["workers"], desc="long runs", checkpoints=True)
    manifest_path = folder / MANIFEST
    previous = results.read_json(manifest_path)["invocations"] if manifest_path.is_file() else []
    invocation = {"started": started.isoformat(timespec="seconds"), "wall_seconds": time.perf_counter() - clock,
                  "workers": params["workers"], "machine": _machine(), "numerics": vt.numerics()}
    results.atomic_write_json(manifest_path, {
        "command": COMMAND, "parameters_file": str(params_path), "parameters": params, "code": vt.code_version(),
        "runs": len(records), "train_seconds": sum(r["result"]["train_seconds"] for r in records),
        "invocations": [*previous, invocation],
    })
    return records


def load_records(folder: str | Path) -> list[dict[str, Any]]:
    """The committed runs of ``folder/runs`` (``{"config", "result"}``, sorted by file name), whatever code version made them."""
    paths = sorted((Path(folder) / "runs").glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no run files in {Path(folder) / 'runs'}: compute them with `{COMMAND}`")
    return [{**results.read_json(p), "file": p.name} for p in paths]


def summary(folder: str | Path) -> dict[str, Any]:
    """The runs as the ``bernoulli_vae`` experiment's summary (``fields``, ``rows``, ``settings``), for :mod:`pwgf.experiments.verdict`."""
    records = load_records(folder)
    manifest = results.read_json(Path(folder) / MANIFEST)
    return {"fields": list(vx.SUMMARY_FIELDS), "rows": vx.summary_rows(records), "settings": manifest["parameters"], "manifest": manifest}


def summary_or_none(start: str | Path | None = None) -> dict[str, Any] | None:
    """:func:`summary` of the committed folder (:func:`committed_folder`), or None where it holds no runs."""
    folder = committed_folder(start)
    return summary(folder) if any((folder / "runs").glob("*.json")) else None


def replay_targets(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One run per architecture and estimator: its lowest seed."""
    chosen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["config"]["seed"]):
        chosen.setdefault((r["config"]["arch"], r["config"]["estimator"]), r)
    return list(chosen.values())


def _mismatch(record: Mapping[str, Any], what: str) -> ReplayMismatch:
    c = record["config"]
    return ReplayMismatch(
        f"the committed run {record.get('file', results.run_key(c))} ({c['estimator']} on {c['arch']}, seed {c['seed']}) is not reproduced "
        f"by today's code: {what}. It was recorded by code version {c['code']} with numerics {record['result']['numerics']}; today's code "
        f"is {vt.code_version()} with numerics {vt.numerics()}. Recompute the long runs with `{COMMAND}` (commit the new files of "
        f"{FOLDER}), or find the change that altered the training."
    )


def _check(record: Mapping[str, Any], steps: int) -> dict[str, Any]:
    config, recorded = record["config"], record["result"]
    started = time.perf_counter()
    steps = min(steps, recorded["steps"])
    replayed = vt.replay(config, steps)
    for t, (a, b) in enumerate(zip(recorded["trace"][:steps], replayed["trace"], strict=False), start=1):
        if a != b:
            raise _mismatch(record, f"the training -ELBO of step {t} is {b!r}, recorded {a!r} (difference {b - a:.3g})")
    if len(replayed["trace"]) != min(steps, len(recorded["trace"])):
        raise _mismatch(record, f"the replay ran {len(replayed['trace'])} traced steps, the record holds {len(recorded['trace'])}")
    old = {h["step"]: h for h in recorded["history"] if h["step"] <= steps}
    new = {h["step"]: h for h in replayed["history"]}
    if old.keys() != new.keys():
        raise _mismatch(record, f"evaluations at steps {sorted(new)}, recorded {sorted(old)}")
    for step, h in old.items():
        for key, value in h.items():
            if key != "seconds" and new[step][key] != value:
                raise _mismatch(record, f"{key} at step {step} is {new[step][key]!r}, recorded {value!r}")
    digest = replayed["steps"] == len(recorded["trace"])
    if digest and replayed["trace_digest"] != recorded["trace_digest"]:
        raise _mismatch(record, f"the parameters after step {steps} differ (digest {replayed['trace_digest'][:12]}, recorded {recorded['trace_digest'][:12]})")
    return {"file": record.get("file"), "arch": config["arch"], "estimator": config["estimator"], "seed": config["seed"], "steps": steps,
            "evaluations": len(old), "digest_compared": digest, "seconds": time.perf_counter() - started}


def verify(folder: str | Path, steps: int) -> dict[str, Any]:
    """Replay the first ``steps`` steps of one committed run per architecture and estimator (:func:`replay_targets`); :class:`ReplayMismatch` on the first difference.

    Returned: the runs checked (file, steps, evaluations compared, whether the parameter digest was
    compared, seconds), today's code version and numerics, and the total seconds.
    """
    check_positive_int(steps, "steps")
    torch.set_num_threads(1)  # as in the sweep engine, which recorded the runs
    pinned = vt.NUMERICS_ENVIRONMENT
    unpinned = {k: os.environ.get(k) for k, v in pinned.items() if os.environ.get(k) != v}
    if unpinned:
        raise RuntimeError(f"replay needs the pinned numerics of the recorded runs: set {pinned} (the Makefile does); found {unpinned}")
    started = time.perf_counter()
    checked = [_check(r, steps) for r in replay_targets(load_records(folder))]
    return {"steps": steps, "runs": checked, "code": vt.code_version(), "numerics": vt.numerics(), "seconds": time.perf_counter() - started}


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pwgf.experiments.long_runs", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run or resume the long runs of a parameter file")
    run_parser.add_argument("params", help=f"the parameter file ({PARAMETERS})")
    verify_parser = commands.add_parser("verify", help="replay the first steps of one committed run per architecture and estimator")
    verify_parser.add_argument("folder", help=f"the folder of the committed runs ({FOLDER})")
    verify_parser.add_argument("--steps", type=int, required=True, help="steps to replay per run")
    verify_parser.add_argument("--report", help="write the replay's report (JSON) here")
    args = parser.parse_args(argv)
    if args.command == "run":
        records = run(args.params)
        print(f"{len(records)} long runs in {read_parameters(args.params)['output_dir']}")
        return 0
    try:
        report = verify(args.folder, args.steps)
    except ReplayMismatch as err:
        print(f"replay failed: {err}", file=sys.stderr)
        return 1
    if args.report:
        results.atomic_write_json(args.report, report)
    print(f"replayed {args.steps} steps of {len(report['runs'])} committed runs bit for bit in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(_main())

