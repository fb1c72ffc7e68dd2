"""Every number a chapter's prose states is computed by the build or is a reference, never typed.

The chapters' Markdown is parsed as MyST (markdown-it with the MyST plugins). Math (``$...$``,
``$$...$$``, amsmath environments, ``{math}`` directives), inline and fenced code (code cells
included), roles (``{cite:p}``, ``{prf:ref}``, ``{glue:text}``, ...), directive options and labels,
link targets and targets ``(label)=`` are removed; a numeral left in the remaining text fails the test,
unless it is a reference to a numbered part of a source (the allow-list ``REFERENCE`` below: "Theorem
2.1", "Appendix D", "Table 1", "Eq. (16)" or "(16)" for an equation of the paper, "Thm 8.3.1" of a
cited book) or a name with a number in it (``NAMES``: "2-Wasserstein"). A result belongs in a
``{glue:text}`` role, a parameter of a check in math (``$R = 150$``) next to the code that uses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.amsmath import amsmath_plugin
from mdit_py_plugins.colon_fence import colon_fence_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.front_matter import front_matter_plugin
from mdit_py_plugins.myst_blocks import myst_block_plugin
from mdit_py_plugins.myst_role import myst_role_plugin

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))

# A numbered part of the paper or of a cited text, possibly a list: "Theorems C.1 and C.2", "Eq. (16)",
# "Section 2.1", "Thm 8.3.1 and Prop 8.4.5", "Ch. 13", "Remark 2.19".
_KIND = (
    r"(?:Theorems?|Thms?\.?|Lemmas?|Remarks?|Sections?|Secs?\.|Appendi(?:x|ces)|Tables?|Figures?|Figs?\.|"
    r"Eqs?\.|Equations?|Formulas?|Propositions?|Props?\.?|Corollar(?:y|ies)|Chapters?|Chs?\.|Definitions?|Examples?)"
)
_LABEL = r"\(?[A-Z]?\d+(?:\.\d+)*\)?"
REFERENCE = re.compile(rf"\b{_KIND}\s+{_LABEL}(?:\s*(?:,|and|to|&|–|-)\s*{_LABEL})*|\(\d+\)(?!\w)")
# Names that contain a number and state no quantity.
NAMES = re.compile(r"\b(?:2-Wasserstein|1-strong|1-Lipschitz)\b")
# A numeral: digits not glued to a word (float64, W2 and log1p are names, not numbers).
NUMERAL = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:%|x\b)?(?![A-Za-z_\d])")
# Directive bodies that are not prose.
NOT_PROSE = {"math", "code-cell", "bibliography", "glue:figure", "glue:math"}

_PARSER = (
    MarkdownIt("commonmark")
    .use(front_matter_plugin)
    .use(myst_block_plugin)
    .use(myst_role_plugin)
    .use(dollarmath_plugin, allow_labels=True, allow_space=True, allow_digits=True, double_inline=True)
    .use(amsmath_plugin)
    .use(colon_fence_plugin)
    .enable("table")
)


def _inline_text(token: Token) -> str:
    """The prose of an inline token; removed parts keep their line breaks so that line numbers stay right."""
    parts = []
    for child in token.children or []:
        if child.type == "text":
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type in ("code_inline", "math_inline", "math_inline_double", "myst_role"):
            parts.append(" " + "\n" * child.content.count("\n") + " ")
    return "".join(parts)


def _directive(info: str, body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """Prose of a ``{name} argument`` directive: its argument (a title) and its body without the options."""
    match = re.match(r"\{([^}]+)\}\s*(.*)", info.strip())
    if not match:  # a plain fence (```bash): code
        return
    name, argument = match.groups()
    if name in NOT_PROSE:
        return
    yield first_line - 1, argument
    lines = body.split("\n")
    skip = 0
    if lines and lines[0].strip() == "---":  # YAML options block
        skip = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0) + 1
    while skip < len(lines) and lines[skip].startswith(":"):  # :label:, :class:, ...
        skip += 1
    yield from prose_lines("\n".join(lines[skip:]), first_line + skip)


def prose_lines(markdown: str, first_line: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, text) for every piece of prose in ``markdown``, line numbers counted from ``first_line``."""
    for token in _PARSER.parse(markdown):
        if token.map is None:
            continue
        line = first_line + token.map[0]
        if token.type == "inline":
            yield line, _inline_text(token)
        elif token.type in ("fence", "colon_fence"):
            yield from _directive(token.info, token.content, line + 1)


def typed_numbers(markdown: str) -> list[tuple[int, str, str]]:
    """(line, numeral, the line's prose) for every numeral of the prose that is neither glued nor a reference."""
    found = []
    for line, text in prose_lines(markdown):
        for offset, piece in enumerate(text.split("\n")):
            cleaned = NAMES.sub(" ", REFERENCE.sub(" ", piece))
            found += [(line + offset, m.group(), piece.strip()) for m in NUMERAL.finditer(cleaned)]
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.name for path in CHAPTERS])
def test_no_typed_numbers_in_prose(chapter):
    found = typed_numbers(chapter.read_text(encoding="utf-8"))
    report = "\n".join(f"{chapter.relative_to(ROOT)}:{line}: {numeral!r} in: {text}" for line, numeral, text in found)
    assert not found, f"numbers typed into prose (glue them, or put parameters in math):\n{report}"


SYNTHETIC = """---
kernelspec:
  name: python3
---
# A page

The estimator's bias is 0.42 at $p = 0.3$, see Theorem 2.1 and Eq. (16) {cite:p}`cheng2018straight`.
Its variance is {glue:text}`variance:.3f`, with `n_samples = 8` and a 2-Wasserstein step.

:::{prf:theorem} Theorem C.2 of the paper
:label: thm-7

The change is at most 3 times the step.
:::

```{code-cell} ipython3
assert 17 > 3
```

$$
x = 12
$$
"""


def test_the_scanner_catches_a_typed_number():
    found = typed_numbers(SYNTHETIC)
    assert [(line, numeral) for line, numeral, _ in found] == [(7, "0.42"), (13, "3")]


@pytest.mark.parametrize(
    "allowed",
    ["See Theorems C.1 and C.2.", "Thm 8.3.1 and Prop 8.4.5 of the book.", "In Appendix D, Table 2.", "float64 and log1p."],
)
def test_references_and_names_are_not_numbers(allowed):
    assert typed_numbers(allowed) == []
