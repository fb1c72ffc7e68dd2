r"""The book's verdict on the paper's experimental claims, computed from the experiments' summaries.

Each function below turns one experiment's ``summary.json`` (:func:`pwgf.results.read_summary`) into
rows of the Verdict chapter: a claim of :cite:`cheng2018straight`, its ``status`` (one of
:data:`STATUSES`) decided by a stated rule from the numbers, and the ``evidence`` (the numbers, as
text). No status is typed: a rerun at another scale prints the statuses its own numbers support.

* Table 1 (Poisson inference, ``poisson_inference``): the decision rule of the Poisson page,
  :func:`pwgf.poisson_gan.compare_spreads` (a paired bootstrap interval over seeds of a ratio of
  spreads; significant when the 90% interval excludes 1), applied to the per-seed rows the page writes.
* Gradient error against samples (``error_vs_samples``): the page's crossover, :func:`crossover`.
* Table 2 (Bernoulli VAE, ``bernoulli_vae``): the paper's numbers are :data:`PAPER_TABLE2`; our rows
  come from that experiment's summary once it exists (:func:`table2_claims`), and read "not yet run
  here" until then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from pwgf import poisson_gan
from pwgf.results import read_summary, summary_path

__all__ = [
    "STATUSES",
    "NOT_RUN",
    "PWGF_VARIANTS",
    "LEVEL",
    "PAPER_TABLE2",
    "ARM_PAPER_ARM",
    "TABLE2_CLAIMS",
    "comparability_margin",
    "TABLE2_EXPERIMENT",
    "TABLE2_METRIC",
    "summary_or_none",
    "table1_claims",
    "headline",
    "crossover",
    "error_vs_samples_claim",
    "table2_rows",
    "table2_claims",
]

#: The statuses a claim can have in the Verdict chapter.
STATUSES: tuple[str, ...] = (
    "holds", "holds with a correction", "hypothesis fails", "false", "reproduced", "not reproduced", "inconclusive", "not yet run here",
)
NOT_RUN = "not yet run here"
#: The pWGF estimators an experiment may have run: the book's Gauss-Newton step and the paper's literal argmin step.
PWGF_VARIANTS: dict[str, str] = {"pwgf_mmd": "pWGF-MMD (the book's step)", "pwgf_mmd_argmin": "pWGF-MMD (the paper's argmin step)"}
#: Two-sided level of every interval and test behind a status (the Poisson page's 90% bootstrap intervals).
LEVEL: float = 0.9

#: The paper's Table 2: test negative ELBO (nats) of a Bernoulli VAE on MNIST, by architecture and estimator
#: (the paper's numbers; ``None`` where the paper reports "NA").
PAPER_TABLE2: dict[str, dict[str, float | None]] = {
    "linear": {"pwgf_mmd": 119.8, "st": 119.1, "arm": 110.3, "relax": 122.1, "rebar": 123.2, "gumbel_softmax": 129.2},
    "two_layer": {"pwgf_mmd": 108.3, "st": 107.6, "arm": 98.2, "relax": 114.0, "rebar": 113.7, "gumbel_softmax": None},
    "nonlinear": {"pwgf_mmd": 104.6, "st": 104.2, "arm": 101.3, "relax": 110.9, "rebar": 111.6, "gumbel_softmax": 112.5},
}
#: The ARM paper's own figures for ARM (its Table 2(a), static MNIST, test :math:`-\\log p(x)` as it labels them) :cite:`yin2019arm`.
ARM_PAPER_ARM: dict[str, float] = {"linear": 107.2, "two_layer": 96.7, "nonlinear": 98.4}
TABLE2_EXPERIMENT = "bernoulli_vae"
#: The field of the ``bernoulli_vae`` summary rows compared with the paper's Table 2.
TABLE2_METRIC = "test_neg_elbo"


def summary_or_none(experiment: str) -> Any | None:
    """The experiment's summary, or None if it has not been written (any other failure still raises)."""
    return read_summary(experiment) if summary_path(experiment).is_file() else None


def _interval_text(comparison: Mapping[str, Any]) -> str:
    low, high = comparison["interval"]
    return f"{comparison['ratio']:.2f} ({comparison['level']:.0%} interval [{low:.2f}, {high:.2f}])"


#: How :func:`pwgf.poisson_gan.compare_spreads` decisions read, with pWGF as the subject.
_RELATION = {"smaller": "significantly smaller than", "larger": "significantly larger than",
             "no significant difference": "not significantly different from"}


def table1_claims(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for the Poisson claims, one per claim and pWGF variant present in the ``poisson_inference`` summary.

    * *lower std* (Table 1: pWGF 0.013 against ST 0.161): for each reading of the paper's "std", the
      across-seed spread of the final rate (``final_std``) and the within-run oscillation
      (``within_std``), the ratio ST / pWGF with its paired interval. ``reproduced`` if under some
      reading pWGF's spread is significantly smaller and the paper's ratio lies in the interval;
      ``holds with a correction`` if it is significantly smaller but the paper's ratio lies outside;
      ``not reproduced`` otherwise.
    * *higher accuracy* (Table 1 means): the ratio of root mean square errors of the final rate,
      ST / pWGF; ``reproduced`` if significantly above 1.
    * *superior on infinite support* (abstract): pWGF's RMSE against every other estimator (the oracle
      excluded) at every rate the page ran; ``reproduced`` if significantly smaller in every
      comparison.
    """
    rows = summary["per_seed"]
    lambda0 = poisson_gan.PAPER_LAMBDA0
    present = {r["estimator"] for r in rows}
    rates = sorted({float(r["lambda0"]) for r in rows})
    others = sorted(present - set(PWGF_VARIANTS) - {"exact"})
    paper = poisson_gan.PAPER_TABLE1
    paper_ratio = paper["st"]["std"] / paper["pwgf_mmd"]["std"]
    claims = []
    for name in (n for n in PWGF_VARIANTS if n in present):
        label = PWGF_VARIANTS[name]
        readings = {m: poisson_gan.compare_spreads(rows, lambda0, name, "st", m, level=LEVEL) for m in ("final_std", "within_std")}
        inside = {m: c["interval"][0] <= paper_ratio <= c["interval"][1] for m, c in readings.items()}
        smaller = {m: c["decision"] == "smaller" for m, c in readings.items()}
        if any(smaller[m] and inside[m] for m in readings):
            status = "reproduced"
        elif any(smaller.values()):
            status = "holds with a correction"
        else:
            status = "not reproduced"
        evidence = "; ".join(
            f"{m}: ST/pWGF = {_interval_text(c)}, pWGF's {_RELATION[c['decision']]} ST's, the paper's ratio "
            f"{paper_ratio:.1f} {'inside' if inside[m] else 'outside'} the interval"
            for m, c in readings.items()
        )
        steps = {r["estimator"]: r["lr_g"] for r in summary["rows"] if float(r["lambda0"]) == lambda0}
        if steps.get("st") != steps.get(name):
            evidence += f" (tuned step sizes differ, ST {steps.get('st'):g} and pWGF {steps.get(name):g}: a larger step oscillates more)"
        claims.append({"claim": "lower std", "estimator": name, "label": label, "status": status, "evidence": evidence})

        accuracy = poisson_gan.compare_spreads(rows, lambda0, name, "st", "rmse", level=LEVEL)
        claims.append({
            "claim": "higher accuracy", "estimator": name, "label": label,
            "status": "reproduced" if accuracy["decision"] == "smaller" else "not reproduced",
            "evidence": f"RMSE(ST)/RMSE(pWGF) = {_interval_text(accuracy)}, pWGF's {_RELATION[accuracy['decision']]} ST's",
        })

        verdicts = {(rate, other): poisson_gan.compare_spreads(rows, rate, name, other, "rmse", level=LEVEL) for rate in rates for other in others}
        claims.append({
            "claim": "superior on infinite support", "estimator": name, "label": label,
            "status": "reproduced" if all(c["decision"] == "smaller" for c in verdicts.values()) else "not reproduced",
            "evidence": "; ".join(
                f"λ0 = {rate:g}: pWGF's RMSE " + ", ".join(f"{_RELATION[verdicts[(rate, other)]['decision']]} {other}'s" for other in others)
                for rate in rates
            ),
        })
    if not claims:
        raise ValueError(f"the poisson_inference summary holds no pWGF estimator ({', '.join(PWGF_VARIANTS)}), only {sorted(present)}")
    return claims


#: How a status reads after "the reported advantage is".
_HEADLINE = {"reproduced": "reproduced", "holds with a correction": "smaller than reported", "not reproduced": "not reproduced"}


def headline(claims: Sequence[Mapping[str, Any]], claim: str) -> str:
    """One phrase for one claim of :func:`table1_claims`, naming the pWGF variant when more than one ran."""
    rows = [c for c in claims if c["claim"] == claim]
    if not rows:
        raise ValueError(f"no claim {claim!r}; claims are {sorted({c['claim'] for c in claims})}")
    if len(rows) == 1:
        return _HEADLINE[rows[0]["status"]]
    return "; ".join(f"{_HEADLINE[c['status']]} for {c['label']}" for c in rows)


def crossover(rows: Iterable[Mapping[str, Any]], estimator: str, d: int, reference: str = "reinforce") -> float:
    """The smallest ``n`` of the ``error_vs_samples`` grid at which ``reference`` has the lower relative MSE
    than ``estimator`` in dimension ``d`` (NaN if it never does)."""
    rows = [r for r in rows if r["d"] == d]
    mse = {(r["estimator"], r["n"]): r["rel_mse"] for r in rows}
    sizes = sorted({n for name, n in mse if name == estimator} & {n for name, n in mse if name == reference})
    if not sizes:
        raise ValueError(f"no runs of both {estimator!r} and {reference!r} at d = {d}")
    wins = [n for n in sizes if mse[(reference, n)] < mse[(estimator, n)]]
    return float(min(wins)) if wins else math.nan


def error_vs_samples_claim(summary: Sequence[Mapping[str, Any]], reference: str = "reinforce") -> dict[str, Any]:
    """Is straight-through (and pWGF) competitive with an unbiased estimator? From the ``error_vs_samples`` summary.

    For each biased estimator and dimension, :func:`crossover` against ``reference``. ``holds`` if the
    reference never wins on the grid; ``false`` if it wins already at the smallest sample size in every
    comparison; ``holds with a correction`` otherwise (the biased estimators win below a crossover).
    """
    biased = sorted({r["estimator"] for r in summary} - {reference})
    dims = sorted({r["d"] for r in summary})
    smallest = min(r["n"] for r in summary)
    points = {(e, d): crossover(summary, e, d, reference) for e in biased for d in dims}
    if all(math.isnan(n) for n in points.values()):
        status = "holds"
    elif all(n == smallest for n in points.values()):
        status = "false"
    else:
        status = "holds with a correction"
    evidence = "; ".join(
        f"than {e} " + ", ".join(f"at d = {d} {'never' if math.isnan(points[(e, d)]) else f'from N = {points[(e, d)]:g}'}" for d in dims)
        for e in biased
    )
    return {"claim": "competitive gradients", "status": status, "evidence": f"{reference} has the lower relative MSE {evidence}"}


def table2_rows(summary: Any, metric: str = TABLE2_METRIC) -> list[dict[str, Any]]:
    """Our Table 2 beside the paper's: one row per (architecture, estimator) of :data:`PAPER_TABLE2`.

    ``summary`` is the ``bernoulli_vae`` summary (a list of rows, or a mapping with the list under
    ``"rows"``; each row has ``arch``, ``estimator``, ``seed`` and ``metric``), or None if the
    experiment has not been run. Our columns are the mean over seeds and its standard error.
    """
    return _rows(summary, metric, [(arch, name, value) for arch, row in PAPER_TABLE2.items() for name, value in row.items()])


def _rows(summary: Any, metric: str, cells: Iterable[tuple[str, str, float | None]]) -> list[dict[str, Any]]:
    """Mean, standard error, number of seeds and per-seed ``values`` of ``metric`` for each ``(arch, estimator, paper value)`` of ``cells``."""
    ours: dict[tuple[str, str], list[float]] = {}
    if summary is not None:
        records = summary["rows"] if isinstance(summary, Mapping) else summary
        for r in records:
            if metric not in r:
                raise ValueError(f"bernoulli_vae summary rows need the field {metric!r}, got {sorted(r)}")
            ours.setdefault((r["arch"], r["estimator"]), []).append(float(r[metric]))
    table = []
    for arch, name, paper_value in cells:
        values = np.array(ours.get((arch, name), []))
        table.append({
            "arch": arch, "estimator": name, "paper": paper_value, "n_seeds": len(values),
            "mean": float(values.mean()) if len(values) else math.nan,
            "se": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan,
            "values": values.tolist(),
        })
    return table


def _difference(table: Sequence[Mapping[str, Any]], arch: str, a: str, b: str) -> tuple[float, float, tuple[float, float]]:
    """Welch's t-test over seeds of ``a`` against ``b`` on one architecture: (mean of a - mean of b, two-sided
    p-value, :data:`LEVEL` confidence interval of the difference); needs two seeds of each."""
    row = {r["estimator"]: r for r in table if r["arch"] == arch}
    for name in (a, b):
        if name not in row or row[name]["n_seeds"] < 2:
            raise ValueError(f"{TABLE2_EXPERIMENT} needs at least two seeds of {name!r} on {arch!r} for a verdict")
    test = stats.ttest_ind(row[a]["values"], row[b]["values"], equal_var=False)
    interval = test.confidence_interval(LEVEL)
    return row[a]["mean"] - row[b]["mean"], float(test.pvalue), (float(interval.low), float(interval.high))


def comparability_margin(arch: str) -> float:
    """The smallest distance, in the paper's Table 2 on ``arch``, between pWGF or ST and any other estimator (nats).

    The paper calls pWGF and ST comparable while it calls these gaps differences, so "comparable" is
    read as "closer than this": 2.3 nats on ``linear`` (pWGF against RELAX), 5.4 on ``two_layer``, 2.9 on
    ``nonlinear``.
    """
    row = PAPER_TABLE2[arch]
    ours = [v for name in ("pwgf_mmd", "st") if (v := row[name]) is not None]
    return min(abs(value - mine) for name, value in row.items() if name not in ("pwgf_mmd", "st") and value is not None for mine in ours)


#: The Table 2 claims (Appendix E): the paper's comparisons, then the same statement over every estimator run here.
TABLE2_CLAIMS: tuple[str, ...] = ("comparable", "beat relaxations", "ARM best", "beat all others")


def table2_claims(summary: Any, metric: str = TABLE2_METRIC) -> list[dict[str, Any]]:
    r"""Rows for the Table 2 claims (Appendix E), one per :data:`TABLE2_CLAIMS`; status "not yet run here" without a summary.

    Lower is better (``metric``: the test negative ELBO, or the NLL bound). Each comparison is Welch's
    t-test over the seeds (each mean rests on a few seeds, where a normal test would reject too often),
    with its two-sided :data:`LEVEL` confidence interval of the difference; every architecture present
    in the summary is tested.

    * *pWGF comparable with ST*, an equivalence: ``reproduced`` if on every architecture the interval
      of pWGF - ST lies inside :math:`\pm m` with :math:`m` the :func:`comparability_margin` (two one-sided
      tests); ``not reproduced`` if on some architecture it lies wholly outside; ``inconclusive`` otherwise.
    * *pWGF and ST beat RELAX, REBAR and Gumbel-Softmax* (where the paper reports them), *ARM beats
      pWGF and ST*, and *pWGF and ST beat every other estimator but ARM* (the paper's sentence read over
      every estimator run here; the variants in :data:`PWGF_VARIANTS` are pWGF itself, not others):
      ``reproduced`` if every comparison is significant (:math:`p < 1 -` :data:`LEVEL`) in the claimed
      direction; ``not reproduced`` if some comparison is significant in the other direction;
      ``inconclusive`` otherwise.
    """
    if summary is None:
        return [{"claim": claim, "status": NOT_RUN, "evidence": f"no {TABLE2_EXPERIMENT}/summary.json"} for claim in TABLE2_CLAIMS]
    records = summary["rows"] if isinstance(summary, Mapping) else summary
    archs = [arch for arch in PAPER_TABLE2 if any(r["arch"] == arch for r in records)]
    if not archs:
        raise ValueError(f"the {TABLE2_EXPERIMENT} summary holds no architecture of Table 2 ({', '.join(PAPER_TABLE2)})")
    present = {arch: sorted({r["estimator"] for r in records if r["arch"] == arch}) for arch in archs}
    table = _rows(summary, metric, [(arch, name, None) for arch in archs for name in present[arch]])
    pairs = {
        "comparable": {arch: [("pwgf_mmd", "st")] for arch in archs},
        "beat relaxations": {arch: [(a, b) for a in ("pwgf_mmd", "st") for b in ("relax", "rebar", "gumbel_softmax")
                                    if PAPER_TABLE2[arch][b] is not None] for arch in archs},
        "ARM best": {arch: [("arm", b) for b in ("pwgf_mmd", "st")] for arch in archs},
        "beat all others": {arch: [(a, b) for a in ("pwgf_mmd", "st") for b in present[arch]
                                   if b not in {"pwgf_mmd", "st", "arm", *PWGF_VARIANTS}] for arch in archs},
    }
    alpha = 1 - LEVEL
    rows = []
    for claim in TABLE2_CLAIMS:
        tests = {(arch, a, b): _difference(table, arch, a, b) for arch in archs for a, b in pairs[claim][arch]}
        if claim == "comparable":
            margins = {arch: comparability_margin(arch) for arch in archs}
            inside = [-margins[arch] < low and high < margins[arch] for (arch, _, _), (_, _, (low, high)) in tests.items()]
            outside = [low > margins[arch] or high < -margins[arch] for (arch, _, _), (_, _, (low, high)) in tests.items()]
            status = "reproduced" if all(inside) else "not reproduced" if any(outside) else "inconclusive"
            evidence = "; ".join(f"{arch}: {a} - {b} = {diff:+.1f} nats, {LEVEL:.0%} interval [{low:+.1f}, {high:+.1f}] "
                                 f"against the margin ±{margins[arch]:.1f}" for (arch, a, b), (diff, _, (low, high)) in tests.items())
        else:
            confirmed = [diff < 0 and p < alpha for diff, p, _ in tests.values()]
            contradicted = [diff > 0 and p < alpha for diff, p, _ in tests.values()]
            status = "reproduced" if all(confirmed) else "not reproduced" if any(contradicted) else "inconclusive"
            evidence = "; ".join(f"{arch}: {a} - {b} = {diff:+.1f} nats (p = {p:.2g})" for (arch, a, b), (diff, p, _) in tests.items())
        rows.append({"claim": claim, "status": status, "metric": metric, "evidence": evidence})
    return rows
