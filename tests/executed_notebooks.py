"""Keep what nbval executes, so the site is built from the same execution instead of a second one.

As a pytest plugin (``-p executed_notebooks --executed-dir DIR``), it writes every notebook whose
cells all passed under nbval to ``DIR/<name>.ipynb``, with the outputs nbval collected from the
kernel. As a script, it stores executed chapters in the execution cache that a Jupyter Book build
reads, and checks afterwards that the build executed no page itself::

    python tests/executed_notebooks.py cache CACHE_DIR EXECUTED.ipynb...
    python tests/executed_notebooks.py check CACHE_DIR

The cache matches a page to an entry by the source and metadata of its code cells, which jupytext
(the conversion nbval runs) and the build's MyST reader produce alike.
"""

import argparse
import sys
from pathlib import Path

import nbformat
import pytest

# --- pytest plugin -------------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption("--executed-dir", help="write each notebook that nbval executed without error here")


# Notebooks with a cell that failed or was skipped: never written.
INCOMPLETE = pytest.StashKey[set]()


def pytest_configure(config):
    config.stash[INCOMPLETE] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if hasattr(item, "test_outputs") and not report.passed:
        item.config.stash[INCOMPLETE].add(item.parent.nodeid)
    return report


def pytest_runtest_teardown(item, nextitem):
    folder = item.config.getoption("executed_dir")
    if folder is None or not hasattr(item, "test_outputs"):
        return
    # nbval's cell items share the notebook they were collected from; record this cell's outputs.
    item.cell.outputs = item.test_outputs or []
    item.cell.execution_count = item.cell_num + 1
    notebook_done = nextitem is None or nextitem.parent is not item.parent
    if notebook_done and item.parent.nodeid not in item.config.stash[INCOMPLETE]:
        nb = item.parent.nb
        nbformat.validate(nb)
        target = Path(folder) / Path(str(item.parent.path)).name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        nbformat.write(nb, partial)
        partial.replace(target)


# --- script: fill and check the build's execution cache -------------------------------------------


def cache_executed(cache_dir: Path, notebooks: list[Path]) -> None:
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_dir)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path)), check_validity=False, overwrite=True)


def check_nothing_executed(cache_dir: Path) -> int:
    """The build adds a page to the cache's project only when it had to execute it."""
    from jupyter_cache import get_cache

    executed = [record.uri for record in get_cache(cache_dir).list_project_records()]
    for uri in executed:
        print(f"{uri}: executed again by the site build (no outputs from nbval in the cache)", file=sys.stderr)
    return 1 if executed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fill = commands.add_parser("cache", help="store executed notebooks in a Jupyter Book execution cache")
    fill.add_argument("cache_dir", type=Path)
    fill.add_argument("notebooks", type=Path, nargs="+")
    check = commands.add_parser("check", help="fail if the build executed any page itself")
    check.add_argument("cache_dir", type=Path)
    args = parser.parse_args()
    if args.command == "cache":
        cache_executed(args.cache_dir, args.notebooks)
        return 0
    return check_nothing_executed(args.cache_dir)


if __name__ == "__main__":
    sys.exit(main())
