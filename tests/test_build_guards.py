"""The build refuses to publish what it cannot vouch for.

A chapter whose cell raises, a missing bibtex key and a broken cross-reference each fail a
``jupyter-book build -W --keep-going`` with a message naming the file; a change to the library clears
the execution cache (which keys on cell source only) before the next build.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""
GOOD = "# Good\n\nSee {cite:p}`cheng2018straight`.\n\n```{code-cell} ipython3\nprint(1 + 1)\n```\n"
# A raising cell stops the build at once (raise_on_error), so it is built apart from the warnings,
# which -W --keep-going collects from every page of one build.
BROKEN = {
    "raises": "# Raises\n\n```{code-cell} ipython3\nraise RuntimeError('boom')\n```\n",
    "badcite": "# Bad cite\n\nAs shown by {cite:p}`no_such_key_2099`.\n",
    "badref": "# Bad ref\n\nBy {prf:ref}`thm-that-does-not-exist`.\n",
}
EXPECTED = {
    "raises": ("book/raises.md", "WARNING: Executing notebook failed"),
    "badcite": ("book/badcite.md", 'WARNING: could not find bibtex key "no_such_key_2099"'),
    "badref": ("book/badref", "WARNING: label 'thm-that-does-not-exist' not found"),
}


def build(site: Path, pages: dict[str, str]) -> tuple[int, str]:
    shutil.copy(ROOT / "_config.yml", site)
    shutil.copy(ROOT / "references.bib", site)
    shutil.copytree(ROOT / "_ext", site / "_ext")  # the configuration's local Sphinx extensions
    (site / "book").mkdir()
    # Citations resolve only against a bibliography directive, as on the book's References page.
    pages = {**pages, "references": "# References\n\n```{bibliography}\n```\n"}
    for name, body in {"good": GOOD, **pages}.items():
        (site / "book" / f"{name}.md").write_text(HEADER + body)
    chapters = "".join(f"  - file: book/{name}\n" for name in pages)
    (site / "_toc.yml").write_text(f"format: jb-book\nroot: book/good\nchapters:\n{chapters}")
    proc = subprocess.run(
        [BIN / "jupyter-book", "build", str(site), "--warningiserror", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return {
        "raises": build(tmp_path_factory.mktemp("raises"), {"raises": BROKEN["raises"]}),
        "warnings": build(tmp_path_factory.mktemp("warnings"), {k: BROKEN[k] for k in ("badcite", "badref")}),
    }


@pytest.mark.parametrize(("page", "which"), [("raises", "raises"), ("badcite", "warnings"), ("badref", "warnings")])
def test_failure_names_the_file(builds, page, which):
    returncode, log = builds[which]
    path, message = EXPECTED[page]
    assert returncode != 0
    assert any(path in line and message in line for line in log.splitlines()), log[-3000:]


def test_a_clean_page_builds_without_warnings(builds):
    _, log = builds["warnings"]
    assert "good.md" not in "".join(line for line in log.splitlines() if "WARNING:" in line)


def test_library_change_clears_execution_cache(tmp_path):
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "src", tmp_path / "src")
    cache = tmp_path / "_build" / ".jupyter_cache"

    def guard() -> str:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "entry").write_text("executed outputs")
        out = subprocess.run(["make", "-s", "cache-guard"], cwd=tmp_path, capture_output=True, text=True, check=True)
        return out.stdout

    assert "clearing" in guard()  # first build: no fingerprint yet
    assert guard() == "" and (cache / "entry").exists()  # nothing changed: the cache is kept
    module = tmp_path / "src" / "pwgf" / "exact.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert "clearing" in guard() and not (cache / "entry").exists()
