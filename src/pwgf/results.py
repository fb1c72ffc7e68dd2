"""Experiment results on disk: atomic writes and resumable sweeps.

Every run of a sweep writes one JSON file, atomically (a temporary file in the same folder, then
``os.replace``), so an interrupted sweep leaves only whole files behind and a rerun skips the runs
whose file already exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["atomic_write_text", "atomic_write_json", "read_json", "run_key", "run_sweep"]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Serialize ``obj`` as indented JSON and write it with :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Load a JSON file written by :func:`atomic_write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_key(config: Mapping[str, Any]) -> str:
    """A file-name-safe key for one run, e.g. ``estimator=st__seed=3``, from its config (sorted keys)."""
    parts = []
    for key in sorted(config):
        value = str(config[key]).replace("/", "-").replace(" ", "")
        parts.append(f"{key}={value}")
    return "__".join(parts)


def run_sweep(
    configs: Iterable[Mapping[str, Any]],
    run: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    out_dir: str | Path,
    *,
    desc: str = "sweep",
) -> list[dict[str, Any]]:
    """Run ``run(config)`` for every config whose result file is missing in ``out_dir``; return all results.

    Each result is stored as ``out_dir / f"{run_key(config)}.json"`` holding ``{"config": ..., "result": ...}``.
    Finished runs are read back, never recomputed; a tqdm bar shows progress over the whole sweep.
    """
    out_dir = Path(out_dir)
    configs = [dict(c) for c in configs]
    keys = [run_key(c) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("configs must be distinct: two runs would write the same result file")
    records = []
    for config, key in zip(tqdm(configs, desc=desc), keys):
        path = out_dir / f"{key}.json"
        if not path.exists():
            atomic_write_json(path, {"config": config, "result": dict(run(config))})
        records.append(read_json(path))
    return records
