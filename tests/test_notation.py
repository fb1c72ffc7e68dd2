"""The notation page covers the book: every Greek letter a chapter's math uses is listed there.

Math is read from the chapters' Markdown (inline ``$...$`` and display ``$$...$$``, code cells left
out); a Greek letter (a TeX command such as ``\\rho``) used in some chapter and absent from the
notation page fails the test, naming the chapters that use it. The macro for the maximum mean
discrepancy must not render as a letter that the book uses for something else.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTATION = ROOT / "book" / "notation.md"
CHAPTERS = sorted(path for path in (ROOT / "book").glob("*.md") if path != NOTATION)
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
CODE = re.compile(r"```\{code-cell\}.*?\n```", re.S)
GREEK = re.compile(
    r"\\(alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|xi|pi|varpi|rho|varrho|"
    r"sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|Phi|Psi|Omega)(?![A-Za-z])"
)


def greek_letters(markdown: str) -> set[str]:
    """The Greek letters of the math in ``markdown``, code cells left out."""
    return {m.group(1) for math in MATH.findall(CODE.sub("", markdown)) for m in GREEK.finditer(math)}


def test_every_greek_letter_of_the_book_is_on_the_notation_page():
    listed = greek_letters(NOTATION.read_text(encoding="utf-8"))
    missing: dict[str, list[str]] = {}
    for chapter in CHAPTERS:
        for letter in greek_letters(chapter.read_text(encoding="utf-8")) - listed:
            missing.setdefault(letter, []).append(chapter.name)
    assert not missing, f"symbols used but not on book/notation.md: {missing}"


def test_the_mmd_macro_is_not_a_letter():
    macros = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    assert not GREEK.fullmatch(macros["MMD"]), f"\\MMD renders as {macros['MMD']}, a letter with another meaning"


def test_the_scanner_finds_letters_outside_code():
    page = "Text $\\rho(x)$ and $$\\Delta_{K-1}$$\n\n```{code-cell} ipython3\n# $\\omega$\n```\n"
    assert greek_letters(page) == {"rho", "Delta"}
