"""The paper's numbers as the library holds them, against a second transcription made separately.

The rows below are copied as text from the paper's tables (Table 1, Section 3.1: mean and standard
deviation of the inferred Poisson rate after 100 epochs, lambda0 = 5; Table 2, Appendix E: test
negative ELBO of the Bernoulli VAE on MNIST) and from the ARM paper's Table 2(a) (ARM's own row,
static MNIST), and parsed here; the verdict's tests build their inputs from the library's copies,
so a typo there would otherwise go unnoticed.
"""

from __future__ import annotations

import math

from pwgf.experiments import poisson_gan, verdict

TABLE1_TEXT = """
pWGF 5.0076 0.013
ST 5.1049 0.161
Muprop 5.0196 0.159
Reinforce 4.9452 0.173
"""
TABLE2_TEXT = """
pWGF ST ARM RELAX REBAR Gumbel-Softmax
Linear 119.8 119.1 110.3 122.1 123.2 129.2
Two Layers 108.3 107.6 98.2 114 113.7 NA
Nonlinear 104.6 104.2 101.3 110.9 111.6 112.5
"""
ARM_TEXT = "ARM 107.2 +- 0.1 / 98.4 +- 0.3 / 96.7 +- 0.3"  # Linear / Nonlinear / Two layers
NAMES = {"pWGF": "pwgf_mmd", "ST": "st", "Muprop": "muprop", "Reinforce": "reinforce", "ARM": "arm", "RELAX": "relax",
         "REBAR": "rebar", "Gumbel-Softmax": "gumbel_softmax"}
ARCHS = {"Linear": "linear", "Two Layers": "two_layer", "Nonlinear": "nonlinear"}


def number(text: str) -> float | None:
    return None if text == "NA" else float(text)


def test_table1_is_the_papers():
    parsed = {}
    for line in TABLE1_TEXT.strip().splitlines():
        name, mean, std = line.split()
        parsed[NAMES[name]] = {"mean": float(mean), "std": float(std)}
    assert poisson_gan.PAPER_TABLE1 == parsed
    assert poisson_gan.PAPER_LAMBDA0 == 5.0


def test_table2_is_the_papers():
    header, *rows = TABLE2_TEXT.strip().splitlines()
    columns = [NAMES[name] for name in header.split()]
    parsed = {}
    for line in rows:
        label = next(a for a in ARCHS if line.startswith(a + " "))
        values = line[len(label):].split()
        parsed[ARCHS[label]] = dict(zip(columns, map(number, values), strict=True))
    assert verdict.PAPER_TABLE2 == parsed
    assert all(v is None or math.isfinite(v) for row in verdict.PAPER_TABLE2.values() for v in row.values())


def test_arms_own_figures_are_the_arm_papers():
    means = [float(part.split("+-")[0]) for part in ARM_TEXT.removeprefix("ARM").split("/")]
    assert verdict.ARM_PAPER_ARM == dict(zip(("linear", "nonlinear", "two_layer"), means, strict=True))
