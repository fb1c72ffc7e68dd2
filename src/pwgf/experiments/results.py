"""Experiment results on disk: atomic writes, JSON records, the file name of a run, and where the summaries live.

Every file is written atomically (a temporary file in the same folder, flushed and fsync'ed, then
``os.replace``), so a process killed mid-write leaves either the old file or the whole new one,
never a half-written one, and is created with the permissions the process's umask allows (as
``open`` would), so that collaborators on a shared filesystem can read it. :mod:`pwgf.experiments.sweep` stores
one such file per run of a sweep, named by :func:`run_key`: a readable prefix and a hash of the
config's canonical JSON (:func:`canonical_json`), so two different configs never share a file.

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
import math
import os
import re
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
    "check_json",
    "canonical_json",
    "run_key",
    "MAX_KEY_LENGTH",
    "write_summary",
    "results_dir",
    "summary_path",
    "read_summary",
]

#: Environment variable naming the folder that holds one sub-folder of results per experiment.
RESULTS_ENV = "PWGF_RESULTS_DIR"
#: Characters of the readable prefix of a run key, and of the hash that follows it.
_PREFIX_CHARS, _HASH_CHARS = 96, 20
#: Longest :func:`run_key`: result and checkpoint files, with the temporary names of atomic writes, stay far below 255 bytes.
MAX_KEY_LENGTH: int = _PREFIX_CHARS + 2 + _HASH_CHARS


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (changing it is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600 whatever the umask
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


def check_json(obj: Any, name: str, *, allow_nan: bool = True) -> None:
    """Raise TypeError unless ``obj`` reads back from JSON as itself, naming the first part that does not.

    Allowed: None, bool, int, float, str, lists and tuples of these, and dicts with string keys (JSON
    would turn other keys into strings, so ``{1: a}`` and ``{"1": a}`` would read back alike). With
    ``allow_nan=False`` a NaN or infinite float is refused too (ValueError): a config holding one is
    not equal to itself. ``name`` is how the error names ``obj``, e.g. ``"config"``.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        if not allow_nan and not math.isfinite(obj):
            raise ValueError(f"{name} is {obj!r}, which JSON cannot hold as a number: use a finite value or None")
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_json(item, f"{name}[{i}]", allow_nan=allow_nan)
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} has the key {key!r} of type {type(key).__name__}; JSON object keys must be strings")
            check_json(value, f"{name}[{key!r}]", allow_nan=allow_nan)
        return
    raise TypeError(
        f"{name} is a {type(obj).__module__}.{type(obj).__qualname__} ({obj!r:.60}), which is not JSON-serializable: "
        "use a Python number, string, bool, None, or a list or dict of these (e.g. float(x) or tensor.tolist())"
    )


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` (sorted keys, no spaces, finite numbers only; :func:`check_json` first).

    Equal configs give equal texts, and configs that differ as JSON values give different texts:
    ``0.0001`` and ``"0.0001"``, or ``"a/b"`` and ``"a-b"``, differ here.
    """
    check_json(obj, "config", allow_nan=False)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_key(config: Mapping[str, Any]) -> str:
    """The file name (without suffix) of one run: a readable prefix of its settings and a hash of its config.

    ``key=value`` pairs in sorted order (``code``, the library's version, left out: the hash covers
    it), characters other than letters, digits and ``._=+-`` replaced by ``-``, cut at the
    prefix's length; then ``__`` and the first hex digits of the SHA-256 of :func:`canonical_json`.
    The prefix is for reading only: the hash makes the key injective (different configs, different
    keys, up to a collision of the hash). At most :data:`MAX_KEY_LENGTH` characters.
    """
    digest = hashlib.sha256(canonical_json(dict(config)).encode("utf-8")).hexdigest()[:_HASH_CHARS]
    pairs = (f"{key}={config[key]}" for key in sorted(config) if key != "code")
    prefix = "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "-", pair) for pair in pairs)[:_PREFIX_CHARS]
    return f"{prefix}__{digest}"


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
