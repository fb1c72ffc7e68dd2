"""Experiment results on disk: atomic writes, JSON records, the file name of a run, and where the summaries live.

Every file is written atomically (a temporary file in the same folder, flushed and fsync'ed, then
``os.replace``), so a process killed mid-write leaves either the old file or the whole new one,
never a half-written one. :mod:`pwgf.sweep` stores one such file per run of a sweep.

Each experiment notebook ``notebooks/<experiment>.md`` writes its summary to
``<results>/<experiment>/summary.json``, where ``<results>`` is the environment variable
``PWGF_RESULTS_DIR`` (an absolute path; ``make book`` and ``make test`` set it) or, when that is unset,
the ``results`` folder of the repository root (the nearest parent of the working directory that holds
``_toc.yml``). :func:`summary_path` is the one place that resolves it; chapters that report
experimental results read them with :func:`read_summary`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "RESULTS_ENV",
    "atomic_open",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "run_key",
    "code_version",
    "write_summary",
    "results_dir",
    "summary_path",
    "read_summary",
]

#: Environment variable naming the folder that holds one sub-folder of results per experiment.
RESULTS_ENV = "PWGF_RESULTS_DIR"


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
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as handle:
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


def code_version(modules: Sequence[str]) -> str:
    """First 12 hex digits of the SHA-256 of the sources of the ``pwgf`` modules a run executes (names without ``.py``).

    An experiment puts it in every run's config, so that results of other library code are never reused.
    """
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for name in modules:
        digest.update((root / f"{name}.py").read_bytes())
    return digest.hexdigest()[:12]


def write_summary(
    out_dir: str | Path, fields: Sequence[str], rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``summary.json`` (``{"fields", "rows", **extra}``) and ``summary.csv`` (one line per row) into ``out_dir``, atomically.

    Every row must have exactly ``fields``, in that order (ValueError otherwise, before anything is
    written). Returns both paths.
    """
    fields = list(fields)
    for row in rows:
        if list(row) != fields:
            raise ValueError(f"summary rows must have the fields {tuple(fields)}, got {tuple(row)}")
    out_dir = Path(out_dir)
    json_path = atomic_write_json(out_dir / "summary.json", {"fields": fields, "rows": list(rows), **(extra or {})})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return json_path, atomic_write_text(out_dir / "summary.csv", buffer.getvalue())


def results_dir(start: str | Path | None = None) -> Path:
    """The folder of experiment results: ``$PWGF_RESULTS_DIR``, else ``results/`` of the repository root.

    The repository root is the nearest of ``start`` (default: the working directory) and its parents
    that holds ``_toc.yml``. Raises FileNotFoundError if the variable is unset and no such folder exists,
    ValueError if the variable is set to a relative path.
    """
    configured = os.environ.get(RESULTS_ENV)
    if configured:
        path = Path(configured)
        if not path.is_absolute():
            raise ValueError(f"{RESULTS_ENV} must be an absolute path, got {configured!r}")
        return path
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder / "results"
    raise FileNotFoundError(
        f"{RESULTS_ENV} is not set and no parent of {here} holds _toc.yml: set {RESULTS_ENV} to the folder "
        "of experiment results, or run from inside the repository"
    )


def summary_path(experiment: str, start: str | Path | None = None) -> Path:
    """``<results>/<experiment>/summary.json``, the summary the notebook ``notebooks/<experiment>.md`` writes."""
    if not experiment or Path(experiment).name != experiment:
        raise ValueError(f"experiment must be a notebook name such as 'poisson_inference', got {experiment!r}")
    return results_dir(start) / experiment / "summary.json"


def read_summary(experiment: str, start: str | Path | None = None) -> Any:
    """The summary an experiment wrote (see :func:`summary_path`); a clear error if it has not been run."""
    path = summary_path(experiment, start)
    if not path.is_file():
        raise FileNotFoundError(
            f"no summary of the experiment {experiment!r} at {path}: run `make experiments` (book scale), or "
            f"execute notebooks/{experiment}.md with papermill and output_dir={path.parent} "
            f"(see the README), or point {RESULTS_ENV} at a folder that holds {experiment}/summary.json"
        )
    return read_json(path)
