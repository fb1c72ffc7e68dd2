"""Experiment results on disk: atomic writes, JSON records and the file name of a run.

Every file is written atomically (a temporary file in the same folder, flushed and fsync'ed, then
``os.replace``), so a process killed mid-write leaves either the old file or the whole new one,
never a half-written one. :mod:`pwgf.sweep` stores one such file per run of a sweep.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json", "read_json", "run_key"]


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing (``mode`` ``"w"`` or ``"wb"``); on a clean exit
    it is fsync'ed and renamed onto ``path``, on an exception it is removed and ``path`` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


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
