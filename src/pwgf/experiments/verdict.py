r"""The book's verdict on the paper's experimental claims, computed from the experiments' summaries.

Each function below turns one experiment's ``summary.json`` (:func:`pwgf.experiments.results.read_summary`) into
rows of the Verdict chapter: a claim of :cite:`cheng2018straight`, its ``status`` (one of
:data:`STATUSES`) decided by a stated, calibrated rule from the numbers (:mod:`pwgf.experiments.decision`), and the
``evidence`` (the numbers, as text). No status is typed: a rerun at another scale prints the statuses
its own numbers support. A claim whose inputs were not run (an estimator left out, fewer than two
seeds) reads :data:`NOT_RUN` and says what is missing.

* Table 1 (Poisson inference, ``poisson_inference``): the decision rule of the Poisson page,
  :func:`pwgf.experiments.poisson_gan.compare_spreads` (exact 90% intervals over paired seeds of a ratio of spreads:
  Pitman-Morgan for standard deviations, Fieller for means), applied to the per-seed rows the page
  writes; the paper's "std" is read primarily as the within-run oscillation (:data:`PRIMARY_READING`).
* Gradient error against samples (``error_vs_samples``): the page's crossover, decided beyond two
  standard errors (:func:`crossover`), a proxy for the abstract's claim.
* Table 2 (Bernoulli VAE, ``bernoulli_vae``): the paper's numbers are :data:`PAPER_TABLE2`; our rows
  come from that experiment's summary once it exists (:func:`table2_claims`), one set of claims per
  pWGF variant, decided only on converged runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pwgf.experiments import decision, poisson_gan
from pwgf.experiments.results import read_summary, summary_path

__all__ = [
    "STATUSES",
    "NOT_RUN",
    "PWGF_VARIANTS",
    "LEVEL",
    "ALPHA",
    "PAPER_TABLE2",
    "ARM_PAPER_ARM",
    "TABLE2_CLAIMS",
    "TABLE2_SOURCES",
    "PRIMARY_READING",
    "comparability_margin",
    "COMPARABILITY_MARGIN",
    "TABLE2_EXPERIMENT",
    "TABLE2_METRIC",
    "summary_or_none",
    "TABLE1_CLAIMS",
    "table1_claims",
    "headline",
    "crossover",
    "CROSSOVER_SE",
    "error_vs_samples_claim",
    "table2_rows",
    "table2_claims",
    "TABLE2_SCALES",
    "table2_decided",
    "table2_claim",
    "status_phrase",
]

#: The statuses a claim can have in the Verdict chapter.
STATUSES: tuple[str, ...] = (
    "holds", "holds with a correction", "hypothesis fails", "false", "reproduced", "not reproduced", "inconclusive", "not yet run here",
)
NOT_RUN = "not yet run here"
#: The pWGF estimators an experiment may have run: the book's Gauss-Newton step and the paper's literal argmin step.
PWGF_VARIANTS: dict[str, str] = {"pwgf_mmd": "pWGF-MMD (the book's step)", "pwgf_mmd_argmin": "pWGF-MMD (the paper's argmin step)"}
#: One-sided level of every test, and familywise level of every "not reproduced" (:data:`pwgf.experiments.decision.ALPHA`).
ALPHA: float = decision.ALPHA
#: Two-sided level of every interval shown beside a status: each end is a one-sided test at :data:`ALPHA`.
LEVEL: float = 1 - 2 * ALPHA

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
#: The reading of the paper's Table 1 "std" fixed in advance to decide "lower std": the within-run oscillation of
#: the rate late in training, the reading the Poisson page argues from the paper's Figure 3 and from its ST, MuProp and
#: REINFORCE values lying within a few thousandths of each other; the across-seed spread of the final rate is secondary.
PRIMARY_READING = "within_std"


def summary_or_none(experiment: str) -> Any | None:
    """The experiment's summary, or None if it has not been written (any other failure still raises)."""
    return read_summary(experiment) if summary_path(experiment).is_file() else None


def _interval_text(comparison: Mapping[str, Any]) -> str:
    low, high = comparison["interval"]
    return f"{comparison['ratio']:.2f} ({comparison['level']:.0%} interval [{low:.2f}, {high:.2f}])"


#: How :func:`pwgf.experiments.poisson_gan.compare_spreads` decisions read, with pWGF as the subject.
_RELATION = {"smaller": "significantly smaller than", "larger": "significantly larger than",
             "no significant difference": "not significantly different from"}


def _ratio_status(comparison: Mapping[str, Any], paper_ratio: float) -> tuple[str, str]:
    """Three outcomes for "pWGF's spread is smaller by the paper's factor" from a ratio reference / pWGF and its interval.

    ``reproduced`` if the interval lies above 1 and does not lie above the paper's ratio (the advantage is
    at least the paper's, within the interval); ``holds with a correction`` if it lies above 1 but below
    the paper's ratio (an advantage, smaller than reported); ``not reproduced`` if it does not lie above 1
    and excludes the paper's ratio; ``inconclusive`` if it does not lie above 1 yet contains the paper's ratio.
    """
    low, high = comparison["interval"]
    inside = low <= paper_ratio <= high
    if comparison["decision"] == "smaller":
        status = "holds with a correction" if high < paper_ratio else "reproduced"
    else:
        status = "inconclusive" if inside else "not reproduced"
    return status, f"the paper's ratio {paper_ratio:.1f} {'inside' if inside else 'outside'} the interval"


def _paper_rmse(name: str) -> float:
    row = poisson_gan.PAPER_TABLE1[name]
    return math.hypot(row["mean"] - poisson_gan.PAPER_LAMBDA0, row["std"])


#: The Table 1 claims, each judged once per pWGF variant.
TABLE1_CLAIMS: tuple[str, ...] = ("lower std", "higher accuracy", "superior on infinite support")


def table1_claims(summary: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    r"""Rows for the Poisson claims, one per claim of :data:`TABLE1_CLAIMS` and pWGF variant of :data:`PWGF_VARIANTS`.

    A claim whose runs are absent (no summary, the variant or ST not run at the rate, fewer than two
    seeds, no other estimator to compare with) reads :data:`NOT_RUN` and says what is missing.

    Every interval is :func:`pwgf.experiments.poisson_gan.compare_spreads` at :data:`LEVEL` over paired seeds, and
    every status has the three outcomes of :func:`_ratio_status` against the paper's effect:

    * *lower std* (Table 1: pWGF 0.013 against ST 0.161, a ratio of 12.4): decided on the
      :data:`PRIMARY_READING` of "std", the within-run oscillation (Fieller interval of the ratio of
      mean within-run standard deviations, ST / pWGF); the across-seed spread of the final rate
      (``final_std``, Pitman-Morgan interval) is reported beside it as the secondary reading and
      decides nothing.
    * *higher accuracy* (Table 1 means and stds): the ratio of root mean square errors of the final rate,
      ST / pWGF (Fieller interval of the ratio of mean squared errors, square-rooted), against the
      paper's ratio :math:`\sqrt{(\bar\lambda - \lambda_0)^2 + s^2}` of its two rows.
    * *superior on infinite support* (abstract): pWGF's RMSE against every other estimator (the oracle
      excluded) at every rate the page ran, :math:`K` comparisons. ``reproduced`` if every
      :data:`LEVEL` interval lies above 1 (an intersection-union test at :data:`ALPHA`); ``not
      reproduced`` if some comparison's Bonferroni interval (two-sided level :math:`1 - 2\alpha/K`) lies
      below 1 (familywise :data:`ALPHA`); ``inconclusive`` otherwise.
    """
    if summary is None:
        return [{"claim": claim, "estimator": name, "label": label, "status": NOT_RUN, "evidence": "not run here: no poisson_inference/summary.json"}
                for name, label in PWGF_VARIANTS.items() for claim in TABLE1_CLAIMS]
    rows = summary["per_seed"]
    lambda0 = poisson_gan.PAPER_LAMBDA0
    present = {r["estimator"] for r in rows}
    rates = sorted({float(r["lambda0"]) for r in rows})
    others = sorted(present - set(PWGF_VARIANTS) - {"exact"})
    paper = poisson_gan.PAPER_TABLE1
    paper_ratio = paper["st"]["std"] / paper["pwgf_mmd"]["std"]
    paper_accuracy = _paper_rmse("st") / _paper_rmse("pwgf_mmd")

    def seeds(name: str, rate: float) -> int:
        return len({int(r["seed"]) for r in rows if r["estimator"] == name and float(r["lambda0"]) == rate})

    claims = []
    for name, label in PWGF_VARIANTS.items():
        missing = [f"{n} at λ0 = {lambda0:g}" for n in (name, "st") if seeds(n, lambda0) < 2]
        if missing:
            claims += [{"claim": claim, "estimator": name, "label": label, "status": NOT_RUN,
                        "evidence": f"not run here: fewer than two seeds of {' and '.join(missing)}"} for claim in TABLE1_CLAIMS]
            continue
        readings = {m: poisson_gan.compare_spreads(rows, lambda0, name, "st", m, level=LEVEL) for m in (PRIMARY_READING, "final_std")}
        status, where = _ratio_status(readings[PRIMARY_READING], paper_ratio)
        evidence = "; ".join(
            f"{m} ({'primary' if m == PRIMARY_READING else 'secondary'} reading): ST/pWGF = {_interval_text(c)}, "
            f"pWGF's {_RELATION[c['decision']]} ST's" + (f", {where}" if m == PRIMARY_READING else "")
            for m, c in readings.items()
        )
        steps = {r["estimator"]: r["lr_g"] for r in summary["rows"] if float(r["lambda0"]) == lambda0}
        if steps.get("st") != steps.get(name):
            evidence += f" (tuned step sizes differ, ST {steps.get('st'):g} and pWGF {steps.get(name):g}: a larger step oscillates more)"
        claims.append({"claim": "lower std", "estimator": name, "label": label, "status": status, "evidence": evidence})

        accuracy = poisson_gan.compare_spreads(rows, lambda0, name, "st", "rmse", level=LEVEL)
        status, where = _ratio_status(accuracy, paper_accuracy)
        claims.append({
            "claim": "higher accuracy", "estimator": name, "label": label, "status": status,
            "evidence": f"RMSE(ST)/RMSE(pWGF) = {_interval_text(accuracy)}, pWGF's {_RELATION[accuracy['decision']]} ST's, {where}",
        })

        pairs = [(rate, other) for rate in rates for other in others if seeds(name, rate) >= 2 and seeds(other, rate) >= 2]
        if not pairs:
            claims.append({"claim": "superior on infinite support", "estimator": name, "label": label, "status": NOT_RUN,
                           "evidence": "not run here: no other estimator with two seeds at a rate where pWGF ran"})
            continue
        familywise = 1 - 2 * ALPHA / max(len(pairs), 1)
        verdicts = {pair: poisson_gan.compare_spreads(rows, pair[0], name, pair[1], "rmse", level=LEVEL) for pair in pairs}
        corrected = {pair: poisson_gan.compare_spreads(rows, pair[0], name, pair[1], "rmse", level=familywise) for pair in pairs}
        status = ("reproduced" if all(c["decision"] == "smaller" for c in verdicts.values())
                  else "not reproduced" if any(c["decision"] == "larger" for c in corrected.values()) else "inconclusive")
        claims.append({
            "claim": "superior on infinite support", "estimator": name, "label": label, "status": status,
            "evidence": "; ".join(
                f"λ0 = {rate:g}: pWGF's RMSE " + ", ".join(f"{_RELATION[verdicts[(r, other)]['decision']]} {other}'s" for r, other in pairs if r == rate)
                for rate in sorted({r for r, _ in pairs})
            ) + f" ({len(pairs)} comparisons; a contradiction needs a Bonferroni interval at {familywise:.2%})",
        })
    return claims


#: How a status reads after "the reported advantage is".
_HEADLINE = {"reproduced": "reproduced", "holds with a correction": "smaller than reported", "not reproduced": "not reproduced",
             "inconclusive": "inconclusive", NOT_RUN: NOT_RUN}


def headline(claims: Sequence[Mapping[str, Any]], claim: str) -> str:
    """One phrase for one claim of :func:`table1_claims`, naming the pWGF variant when more than one ran (variants not run are left out)."""
    rows = [c for c in claims if c["claim"] == claim]
    if not rows:
        raise ValueError(f"no claim {claim!r}; claims are {sorted({c['claim'] for c in claims})}")
    rows = [c for c in rows if c["status"] != NOT_RUN] or rows[:1]  # variants not run are left out while one ran
    if len(rows) == 1:
        return _HEADLINE[rows[0]["status"]]
    return "; ".join(f"{_HEADLINE[c['status']]} for {c['label']}" for c in rows)


#: Standard errors by which one relative MSE must beat another on the error-against-samples grid.
CROSSOVER_SE: float = 2.0


def _beats(rows: Mapping[tuple[str, int], Mapping[str, Any]], a: str, b: str, n: int) -> bool:
    """Whether ``a``'s relative MSE is below ``b``'s at ``n`` by more than :data:`CROSSOVER_SE` standard errors of the difference (independent runs)."""
    ra, rb = rows[(a, n)], rows[(b, n)]
    return rb["rel_mse"] - ra["rel_mse"] > CROSSOVER_SE * math.hypot(ra["rel_mse_se"], rb["rel_mse_se"])


def crossover(rows: Iterable[Mapping[str, Any]], estimator: str, d: int, reference: str = "reinforce") -> float:
    """The smallest ``n`` of the ``error_vs_samples`` grid at which ``reference`` has a lower relative MSE
    than ``estimator`` in dimension ``d`` by more than :data:`CROSSOVER_SE` standard errors (NaN if it never does).

    Rows need ``rel_mse`` and its Monte Carlo standard error ``rel_mse_se``.
    """
    by = {(r["estimator"], r["n"]): r for r in rows if r["d"] == d}
    sizes = sorted({n for name, n in by if name == estimator} & {n for name, n in by if name == reference})
    if not sizes:
        raise ValueError(f"no runs of both {estimator!r} and {reference!r} at d = {d}")
    wins = [n for n in sizes if _beats(by, reference, estimator, n)]
    return float(min(wins)) if wins else math.nan


def error_vs_samples_claim(summary: Sequence[Mapping[str, Any]] | None, reference: str = "reinforce") -> dict[str, Any]:
    """Is straight-through (and pWGF) competitive with an unbiased estimator? A proxy for the abstract's claim, from the ``error_vs_samples`` summary.

    The abstract speaks of trained models; this page compares the error of one gradient against the
    samples it costs, a proxy. For each biased estimator and dimension, :func:`crossover` against
    ``reference`` (decided beyond :data:`CROSSOVER_SE` standard errors). ``holds`` if the reference
    never wins on the grid; ``false`` if it wins already at the smallest sample size in every
    comparison; ``holds with a correction`` otherwise (the biased estimators win below a crossover);
    :data:`NOT_RUN` without runs of ``reference`` and of a biased estimator.
    """
    if summary is None or not any(r["estimator"] == reference for r in summary) or not {r["estimator"] for r in summary} - {reference}:
        return {"claim": "competitive gradients", "status": NOT_RUN,
                "evidence": f"not run here: no error_vs_samples runs of {reference} and of a biased estimator"}
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
    return {"claim": "competitive gradients", "status": status,
            "evidence": f"{reference} has the lower relative MSE, by more than {CROSSOVER_SE:g} standard errors, {evidence} (a proxy: one gradient's error, not trained models)"}


def table2_rows(summary: Any, metric: str = TABLE2_METRIC) -> list[dict[str, Any]]:
    """Our Table 2 beside the paper's: one row per (architecture, estimator) of :data:`PAPER_TABLE2`.

    ``summary`` is the ``bernoulli_vae`` summary (a list of rows, or a mapping with the list under
    ``"rows"``; each row has ``arch``, ``estimator``, ``seed`` and ``metric``), or None if the
    experiment has not been run. Our columns are the mean over seeds and its standard error.
    """
    return _rows(summary, metric, [(arch, name, value) for arch, row in PAPER_TABLE2.items() for name, value in row.items()])


def _rows(summary: Any, metric: str, cells: Iterable[tuple[str, str, float | None]]) -> list[dict[str, Any]]:
    """Mean, standard error, number of seeds (and of converged runs) and per-seed ``values`` of ``metric`` for each ``(arch, estimator, paper value)`` of ``cells``."""
    ours: dict[tuple[str, str], list[float]] = {}
    converged: dict[tuple[str, str], int] = {}
    if summary is not None:
        records = summary["rows"] if isinstance(summary, Mapping) else summary
        for r in records:
            if metric not in r:
                raise ValueError(f"bernoulli_vae summary rows need the field {metric!r}, got {sorted(r)}")
            ours.setdefault((r["arch"], r["estimator"]), []).append(float(r[metric]))
            converged[(r["arch"], r["estimator"])] = converged.get((r["arch"], r["estimator"]), 0) + (r.get("converged") is True)
    table = []
    for arch, name, paper_value in cells:
        values = np.array(ours.get((arch, name), []))
        table.append({
            "arch": arch, "estimator": name, "paper": paper_value, "n_seeds": len(values), "n_converged": converged.get((arch, name), 0),
            "mean": float(values.mean()) if len(values) else math.nan,
            "se": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan,
            "values": values.tolist(),
        })
    return table


def comparability_margin(arch: str) -> float:
    """The smallest distance, in the paper's Table 2 on ``arch``, between pWGF or ST and any other estimator (nats).

    2.3 nats on ``linear`` (pWGF against RELAX), 5.4 on ``two_layer``, 2.9 on ``nonlinear``; the
    smallest of them is :data:`COMPARABILITY_MARGIN`.
    """
    row = PAPER_TABLE2[arch]
    ours = [v for name in ("pwgf_mmd", "st") if (v := row[name]) is not None]
    return min(abs(value - mine) for name, value in row.items() if name not in ("pwgf_mmd", "st") and value is not None for mine in ours)


#: "Comparable" means closer than this on every architecture (nats): the smallest gap the paper calls a
#: difference anywhere in its Table 2 (:func:`comparability_margin` of ``linear``), one margin for all architectures.
COMPARABILITY_MARGIN: float = min(comparability_margin(arch) for arch in PAPER_TABLE2)

#: The Table 2 claims, each judged once per pWGF variant: the paper's comparisons (Appendix E), then the book's
#: extension of its sentence to every estimator run here.
TABLE2_CLAIMS: tuple[str, ...] = ("comparable", "beat relaxations", "ARM best", "beat all others")
#: Where each claim comes from: the paper, or the book's reading of it over estimators the paper never ran.
TABLE2_SOURCES: dict[str, str] = {"comparable": "Table 2, App. E", "beat relaxations": "Table 2, App. E", "ARM best": "Table 2, App. E",
                                  "beat all others": "the book's extension of App. E"}
_RELAXATIONS = ("relax", "rebar", "gumbel_softmax")


def _pairs(claim: str, variant: str, arch: str, present: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons ``(a, b)`` of one claim on one architecture, each read "a is lower (better) than b" (comparable: "a is close to b")."""
    ours = (variant, "st")
    if claim == "comparable":
        return [(variant, "st")]
    if claim == "beat relaxations":
        return [(a, b) for a in ours for b in _RELAXATIONS if PAPER_TABLE2[arch][b] is not None]
    if claim == "ARM best":
        return [("arm", b) for b in ours]
    return [(a, b) for a in ours for b in present if b not in {"st", "arm", *PWGF_VARIANTS}]


def _paired(records: Sequence[Mapping[str, Any]], metric: str, arch: str, a: str, b: str) -> tuple[list[int], np.ndarray]:
    """The seeds both ``a`` and ``b`` ran on ``arch``, and the paired differences ``a - b`` of ``metric`` over them."""
    by = {(r["estimator"], int(r["seed"])): float(r[metric]) for r in records if r["arch"] == arch and r["estimator"] in (a, b)}
    seeds = sorted({s for e, s in by if e == a} & {s for e, s in by if e == b})
    return seeds, np.array([by[(a, s)] - by[(b, s)] for s in seeds])


def table2_claim(records: Sequence[Mapping[str, Any]], claim: str, variant: str, metric: str = TABLE2_METRIC) -> dict[str, Any]:
    r"""One Table 2 claim for one pWGF variant, from the summary rows (:func:`table2_claims`)."""
    archs = [arch for arch in PAPER_TABLE2 if any(r["arch"] == arch for r in records)]
    row = {"claim": claim, "estimator": variant, "label": PWGF_VARIANTS[variant], "source": TABLE2_SOURCES[claim], "metric": metric}
    comparisons = {(arch, a, b): _paired(records, metric, arch, a, b)
                   for arch in archs for a, b in _pairs(claim, variant, arch, sorted({r["estimator"] for r in records if r["arch"] == arch}))}
    missing = [f"{a} and {b} on {arch}" for (arch, a, b), (seeds, _) in comparisons.items() if len(seeds) < 2]
    if not comparisons or missing:
        reason = "; ".join(missing) if missing else "no estimator to compare with"
        return {**row, "status": NOT_RUN, "evidence": f"not run here: fewer than two shared seeds of {reason}" if missing else f"not run here: {reason}"}
    if claim == "comparable":
        p = {key: decision.equivalence_claim(d[None], COMPARABILITY_MARGIN)[1:] for key, (_, d) in comparisons.items()}
        status = str(decision.equivalence_status(np.array([v[0][0] for v in p.values()]), np.array([v[1][0] for v in p.values()])))
        evidence = "; ".join(
            f"{arch}: {a} - {b} = {d.mean():+.1f} nats over {len(seeds)} paired seeds (equivalence p = {p[(arch, a, b)][0][0]:.2g}, "
            f"beyond-margin p = {p[(arch, a, b)][1][0]:.2g})" for (arch, a, b), (seeds, d) in comparisons.items()
        ) + f"; margin ±{COMPARABILITY_MARGIN:.1f} nats on every architecture"
    else:
        p = {key: decision.ordered_claim(d[None])[1:] for key, (_, d) in comparisons.items()}
        status = str(decision.ordered_status(np.array([v[0][0] for v in p.values()]), np.array([v[1][0] for v in p.values()])))
        evidence = "; ".join(
            f"{arch}: {a} - {b} = {d.mean():+.1f} nats (p = {p[(arch, a, b)][0][0]:.2g} for the claimed order, {p[(arch, a, b)][1][0]:.2g} against)"
            for (arch, a, b), (seeds, d) in comparisons.items()
        ) + f"; {len(comparisons)} paired comparisons, Holm at familywise {ALPHA:g} against the claim"
    runs = {(arch, e, s): r for r in records for (arch, a, b), (seeds, _) in comparisons.items() for e in (a, b) for s in seeds
            if r["arch"] == arch and r["estimator"] == e and int(r["seed"]) == s}
    unconverged = sorted({f"{e} on {arch}" for (arch, e, _), r in runs.items() if r.get("converged") is not True})
    if unconverged and status == decision.NOT_REPRODUCED:
        # A claim made for every comparison is refuted by one that Holm finds significant against it; if that one's
        # runs have all converged, the refutation rests on converged models alone, whatever the other runs do.
        against = decision.holm(np.array([v[1][0] for v in p.values()]))
        refuting = [f"{a} against {b} on {arch}" for ((arch, a, b), (seeds, _)), rejected in zip(comparisons.items(), against, strict=True)
                    if rejected and all(runs[(arch, e, s)].get("converged") is True for e in (a, b) for s in seeds)]
        if refuting:
            count = sum(r.get("converged") is not True for r in runs.values())
            return {**row, "status": status, "unconverged": 0, "runs": len(runs),
                    "evidence": f"refuted on converged runs by {', '.join(refuting)} (Holm over every comparison); {count} of the "
                                f"{len(runs)} runs compared have not converged ({', '.join(unconverged)}), which cannot undo it: {evidence}"}
    if unconverged:
        count = sum(r.get("converged") is not True for r in runs.values())
        return {**row, "status": "inconclusive", "unconverged": count, "runs": len(runs),
                "evidence": f"undecided: {count} of the {len(runs)} runs compared have not converged ({', '.join(unconverged)}), "
                            f"so the numbers measure training speed, not the converged models the claim is about; "
                            f"the rule would read {status!r} from them: {evidence}"}
    return {**row, "status": status, "unconverged": 0, "runs": len(runs), "evidence": evidence}


def table2_claims(summary: Any, metric: str = TABLE2_METRIC) -> list[dict[str, Any]]:
    r"""Rows for the Table 2 claims, one per claim of :data:`TABLE2_CLAIMS` and pWGF variant of :data:`PWGF_VARIANTS`.

    Lower is better (``metric``: the test negative ELBO, or the NLL bound). The runs of one seed share
    the model's initialization and the order of the batches whatever the estimator
    (:func:`pwgf.experiments.vae_training.train`), so every comparison is paired over the seeds both estimators
    ran, with the calibrated rules of :mod:`pwgf.experiments.decision` at :data:`ALPHA`:

    * *pWGF comparable with ST*, an equivalence within :data:`COMPARABILITY_MARGIN` on every
      architecture present (:func:`pwgf.experiments.decision.equivalence_claim`).
    * *pWGF and ST beat RELAX, REBAR and Gumbel-Softmax* (where the paper reports them), *ARM beats
      pWGF and ST*, and *pWGF and ST beat every other estimator but ARM* (the book's extension of the
      paper's sentence to every estimator run here; the other pWGF variant is pWGF itself, not an other
      method): ordered claims (:func:`pwgf.experiments.decision.ordered_claim`), Holm over all their comparisons.

    Every one is a claim about converged models: unless every run it compares has ``converged``
    (:func:`pwgf.experiments.vae_experiment.converged`), its status is ``inconclusive`` and the evidence says why
    and what the rule would have read, with one exception: a claim made for every comparison is "not
    reproduced" when one comparison whose runs have all converged is significant against it (Holm over
    all of them), since no further training of the other runs can undo that counterexample. A claim whose comparisons lack two shared seeds reads
    :data:`NOT_RUN`, as does every claim without a summary.
    """
    if summary is None:
        return [{"claim": claim, "estimator": v, "label": label, "source": TABLE2_SOURCES[claim], "metric": metric, "status": NOT_RUN,
                 "evidence": f"no {TABLE2_EXPERIMENT}/summary.json"} for claim in TABLE2_CLAIMS for v, label in PWGF_VARIANTS.items()]
    records = summary["rows"] if isinstance(summary, Mapping) else summary
    for r in records:
        if metric not in r:
            raise ValueError(f"bernoulli_vae summary rows need the field {metric!r}, got {sorted(r)}")
    if not any(r["arch"] in PAPER_TABLE2 for r in records):
        raise ValueError(f"the {TABLE2_EXPERIMENT} summary holds no architecture of Table 2 ({', '.join(PAPER_TABLE2)})")
    return [table2_claim(records, claim, v, metric) for claim in TABLE2_CLAIMS for v in PWGF_VARIANTS]


#: Where a Table 2 status can be decided, in the order preferred: the committed long runs, trained until the
#: convergence rule holds (:mod:`pwgf.experiments.long_runs`), then this build's book-scale runs.
TABLE2_SCALES: dict[str, str] = {"long": "long runs (to convergence)", "book": "book scale"}


def table2_decided(long: Any | None, book: Any | None, metric: str = TABLE2_METRIC) -> list[dict[str, Any]]:
    """Each claim of :func:`table2_claims` decided at the first scale of :data:`TABLE2_SCALES` that ran it, with that ``scale``.

    ``long`` is the summary of the committed long runs (:func:`pwgf.experiments.long_runs.summary`) or
    None, ``book`` this build's ``bernoulli_vae`` summary or None. A claim the long runs ran (every
    comparison with two shared seeds) is decided there, whatever its status: a long run that has not
    converged keeps it inconclusive, as anywhere. The others fall back to the book-scale runs, whose
    claims stay inconclusive until their runs converge. The long runs hold fewer estimators, so "beat
    all others" read on them compares only the estimators they ran, and its evidence lists them.
    """
    fallback = table2_claims(book, metric)
    if long is None:
        return [{**c, "scale": TABLE2_SCALES["book"]} for c in fallback]
    return [{**at_long, "scale": TABLE2_SCALES["long"]} if at_long["status"] != NOT_RUN else {**b, "scale": TABLE2_SCALES["book"]}
            for at_long, b in zip(table2_claims(long, metric), fallback, strict=True)]


def status_phrase(claim: Mapping[str, Any]) -> str:
    """A claim's status as a page prints it: with the reason when it waits for convergence, the source when it is the book's extension, and the scale it was decided at (:func:`table2_decided`)."""
    text = claim["status"]
    if claim.get("unconverged"):
        text += f" ({claim['unconverged']} of the {claim['runs']} runs compared have not converged)"
    if claim.get("source", "").startswith("the book's"):
        text += " [the book's extension]"
    if "scale" in claim:
        text += f", decided on the {claim['scale']}"
    return text
