"""The Verdict chapter's statuses are computed from the experiments' summaries by stated rules."""

import math

import numpy as np
import pytest
from scipy import stats

from pwgf.experiments import poisson_gan, results, verdict


def poisson_summary(spread_st, spread_pwgf, seeds=20, lr=(0.1, 0.1), variants=("pwgf_mmd",)):
    """A synthetic poisson_inference summary: final rates normal around lambda0 with the given spreads."""
    rng = np.random.default_rng(0)
    per_seed, rows = [], []
    for lambda0 in (0.5, 5.0, 50.0):
        for name, spread in [("st", spread_st), ("muprop", spread_st), ("reinforce", spread_st), ("exact", spread_pwgf)] + [
            (v, spread_pwgf) for v in variants
        ]:
            finals = lambda0 + spread * rng.normal(size=seeds)
            per_seed += [{"estimator": name, "lambda0": lambda0, "seed": s, "final": float(x), "within_std": spread * float(rng.uniform(0.8, 1.2)),
                          "data_mean": lambda0} for s, x in enumerate(finals)]
            rows.append({"estimator": name, "lambda0": lambda0, "lr_g": lr[0] if name == "st" else lr[1]})
    return {"rows": rows, "per_seed": per_seed}


def test_the_papers_advantage_is_reproduced_when_the_data_show_it():
    paper_ratio = poisson_gan.PAPER_TABLE1["st"]["std"] / poisson_gan.PAPER_TABLE1["pwgf_mmd"]["std"]
    claims = {c["claim"]: c for c in verdict.table1_claims(poisson_summary(paper_ratio * 0.01, 0.01)) if c["estimator"] == "pwgf_mmd"}
    assert claims["lower std"]["status"] == "reproduced"
    assert claims["higher accuracy"]["status"] == "reproduced"
    assert claims["superior on infinite support"]["status"] == "reproduced"
    assert verdict.headline(list(claims.values()), "lower std") == "reproduced"


def test_a_smaller_advantage_holds_with_a_correction_and_none_is_not_reproduced():
    smaller = {c["claim"]: c for c in verdict.table1_claims(poisson_summary(0.03, 0.01, lr=(0.3, 0.1))) if c["estimator"] == "pwgf_mmd"}
    assert smaller["lower std"]["status"] == "holds with a correction"
    assert "tuned step sizes differ, ST 0.3 and pWGF 0.1" in smaller["lower std"]["evidence"]
    none = {c["claim"]: c for c in verdict.table1_claims(poisson_summary(0.01, 0.01)) if c["estimator"] == "pwgf_mmd"}
    assert none["lower std"]["status"] == "not reproduced" and none["higher accuracy"]["status"] == "not reproduced"
    assert verdict.headline(list(none.values()), "lower std") == "not reproduced"


def test_too_few_seeds_to_tell_is_inconclusive():
    """Three seeds whose within-run spreads (the primary reading) scatter widely: ST's mean spread is twice pWGF's,
    and Fieller's interval of the ratio (t of 2 degrees of freedom) holds both 1 and the paper's ratio 12.4."""
    summary = poisson_summary(0.03, 0.01, seeds=3)
    within = {"st": [0.001, 0.03, 0.05], "pwgf_mmd": [0.02, 0.001, 0.019]}
    for r in summary["per_seed"]:
        if r["estimator"] in within and r["lambda0"] == poisson_gan.PAPER_LAMBDA0:
            r["within_std"] = within[r["estimator"]][r["seed"]]
    claims = {c["claim"]: c for c in verdict.table1_claims(summary) if c["estimator"] == "pwgf_mmd"}
    assert claims["lower std"]["status"] == "inconclusive"
    assert "within_std (primary reading)" in claims["lower std"]["evidence"] and "final_std (secondary reading)" in claims["lower std"]["evidence"]


def test_every_pwgf_variant_present_gets_its_rows():
    claims = verdict.table1_claims(poisson_summary(0.01, 0.01, variants=("pwgf_mmd", "pwgf_mmd_argmin")))
    assert sorted({c["estimator"] for c in claims}) == ["pwgf_mmd", "pwgf_mmd_argmin"]
    line = verdict.headline(claims, "lower std")
    assert all(f"for {label}" in line for label in verdict.PWGF_VARIANTS.values()) and line.count(";") == 1
    absent = verdict.table1_claims(poisson_summary(0.01, 0.01, variants=()))
    assert len(absent) == len(verdict.TABLE1_CLAIMS) * len(verdict.PWGF_VARIANTS) and {c["status"] for c in absent} == {verdict.NOT_RUN}
    assert "fewer than two seeds of pwgf_mmd at λ0 = 5" in absent[0]["evidence"]
    assert {c["status"] for c in verdict.table1_claims(None)} == {verdict.NOT_RUN}
    assert verdict.error_vs_samples_claim(None)["status"] == verdict.NOT_RUN


def evs_rows(mse, se=0.01):
    """error_vs_samples rows from {(estimator, d, n): rel_mse}, each with standard error ``se``."""
    return [{"estimator": e, "d": d, "n": n, "rel_mse": v, "rel_mse_se": se} for (e, d, n), v in mse.items()]


def test_crossover_and_the_error_claim():
    crossing = evs_rows({("reinforce", 2, 2): 1.0, ("reinforce", 2, 16): 0.1, ("st", 2, 2): 0.3, ("st", 2, 16): 0.3})
    assert verdict.crossover(crossing, "st", 2) == 16.0
    assert verdict.error_vs_samples_claim(crossing)["status"] == "holds with a correction"
    never = evs_rows({("reinforce", 2, 2): 1.0, ("reinforce", 2, 16): 0.5, ("st", 2, 2): 0.3, ("st", 2, 16): 0.3})
    assert math.isnan(verdict.crossover(never, "st", 2)) and verdict.error_vs_samples_claim(never)["status"] == "holds"
    always = evs_rows({("reinforce", 2, 2): 0.1, ("reinforce", 2, 16): 0.01, ("st", 2, 2): 0.3, ("st", 2, 16): 0.3})
    assert verdict.error_vs_samples_claim(always)["status"] == "false"
    # A win within two standard errors of the difference is no crossover: 0.28 against 0.3, each +- 0.01.
    close = evs_rows({("reinforce", 2, 2): 1.0, ("reinforce", 2, 16): 0.28, ("st", 2, 2): 0.3, ("st", 2, 16): 0.3})
    assert math.isnan(verdict.crossover(close, "st", 2)) and "proxy" in verdict.error_vs_samples_claim(close)["evidence"]
    assert verdict.crossover(evs_rows({k: r["rel_mse"] for k, r in
                                                       {(r["estimator"], r["d"], r["n"]): r for r in close}.items()}, se=0.001), "st", 2) == 16.0
    with pytest.raises(ValueError, match="no runs of both 'st' and 'reinforce' at d = 3"):
        verdict.crossover(crossing, "st", 3)


def vae_summary(means, seeds=3, converged=True, spread=0.1):
    """A synthetic bernoulli_vae summary: {(arch, estimator): mean}, a seed effect shared by every estimator
    (same initialization and batch order) plus independent noise of ``spread`` nats."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(size=seeds)
    return {"rows": [{"arch": a, "estimator": e, "seed": s, "test_neg_elbo": m + seed_effect[s] + spread * rng.normal(), "converged": converged}
                     for (a, e), m in means.items() for s in range(seeds)]}


def papers_table2(shift=0.0):
    return {(a, e): v + (shift if e == "pwgf_mmd" else 0.0) for a, row in verdict.PAPER_TABLE2.items() for e, v in row.items() if v is not None}


def by_claim(claims, variant="pwgf_mmd"):
    return {c["claim"]: c for c in claims if c["estimator"] == variant}


def test_table2_is_not_yet_run_without_a_summary(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    assert verdict.summary_or_none(verdict.TABLE2_EXPERIMENT) is None
    claims = verdict.table2_claims(None)
    assert [(c["claim"], c["estimator"]) for c in claims] == [(c, v) for c in verdict.TABLE2_CLAIMS for v in verdict.PWGF_VARIANTS]
    assert {c["status"] for c in claims} == {verdict.NOT_RUN}
    rows = verdict.table2_rows(None)
    assert len(rows) == sum(len(r) for r in verdict.PAPER_TABLE2.values()) and all(math.isnan(r["mean"]) for r in rows)


def test_table2_statuses_follow_the_numbers_once_the_experiment_has_run():
    # The paper's own numbers as our means, with 0.1 nat of noise around a shared seed effect: the paper's claims hold.
    claims = verdict.table2_claims(vae_summary(papers_table2()))
    assert {c["status"] for c in by_claim(claims).values()} == {"reproduced"}
    # pwgf_mmd_argmin was not run: its claims are not run here, not an error.
    assert {c["status"] for c in by_claim(claims, "pwgf_mmd_argmin").values()} == {verdict.NOT_RUN}
    assert "fewer than two shared seeds of pwgf_mmd_argmin and st on linear" in by_claim(claims, "pwgf_mmd_argmin")["comparable"]["evidence"]
    # With only the paper's six estimators, "every other" is RELAX, REBAR and Gumbel-Softmax where run, and it is the book's extension.
    others = by_claim(claims)["beat all others"]
    assert "gumbel_softmax" not in others["evidence"].split("two_layer")[1].split("nonlinear")[0]
    assert others["source"] == "the book's extension of App. E" and by_claim(claims)["ARM best"]["source"] == "Table 2, App. E"
    # pWGF 3 nats behind ST on every architecture, beyond the one margin of 2.3: significantly not comparable.
    shifted = by_claim(verdict.table2_claims(vae_summary(papers_table2(shift=3.0))))["comparable"]
    assert shifted["status"] == "not reproduced" and "margin ±2.3 nats on every architecture" in shifted["evidence"]
    # ARM behind pWGF and ST: the claim is contradicted, not merely unconfirmed.
    worse_arm = {(a, e): (v + 20 if e == "arm" else v) for (a, e), v in papers_table2().items()}
    assert by_claim(verdict.table2_claims(vae_summary(worse_arm)))["ARM best"]["status"] == "not reproduced"
    rows = verdict.table2_rows(vae_summary(papers_table2()))
    linear_st = next(r for r in rows if r["arch"] == "linear" and r["estimator"] == "st")
    assert linear_st["n_seeds"] == 3 and abs(linear_st["mean"] - 119.1) < 3


def test_claims_about_converged_models_wait_for_converged_runs():
    summary = vae_summary(papers_table2())
    summary["rows"][0]["converged"] = False  # one run of pwgf_mmd on linear
    claims = by_claim(verdict.table2_claims(summary))
    for claim in ("comparable", "beat relaxations", "beat all others"):
        assert claims[claim]["status"] == "inconclusive" and "1 of the" in claims[claim]["evidence"]
        assert "pwgf_mmd on linear" in claims[claim]["evidence"] and "would read 'reproduced'" in claims[claim]["evidence"]
    assert claims["ARM best"]["status"] == "inconclusive"  # ARM is compared with pwgf_mmd too
    unrecorded = {"rows": [{k: v for k, v in r.items() if k != "converged"} for r in vae_summary(papers_table2())["rows"]]}
    assert {c["status"] for c in by_claim(verdict.table2_claims(unrecorded)).values()} == {"inconclusive"}


def test_comparability_margin_is_the_papers_smallest_gap():
    # By hand from the paper's Table 2: linear |122.1 - 119.8|, two_layer |113.7 - 108.3|, nonlinear |104.2 - 101.3|.
    expected = {"linear": 2.3, "two_layer": 5.4, "nonlinear": 2.9}
    assert {a: verdict.comparability_margin(a) for a in expected} == pytest.approx(expected, abs=1e-12)
    assert verdict.COMPARABILITY_MARGIN == pytest.approx(2.3, abs=1e-12)


def test_table2_with_one_seed_is_not_run_and_needs_the_metric():
    claims = verdict.table2_claims(vae_summary(papers_table2(), seeds=1))
    assert {c["status"] for c in claims} == {verdict.NOT_RUN}
    with pytest.raises(ValueError, match="need the field 'test_neg_elbo'"):
        verdict.table2_rows([{"arch": "linear", "estimator": "st", "seed": 0, "test_elbo": -100.0}])


def test_table2_tests_every_architecture_run_and_every_other_estimator():
    means = {key: v for key, v in papers_table2().items() if key[0] == "linear"}
    means[("linear", "disarm")] = 115.0  # between ARM and pWGF/ST: better than both
    means[("linear", "pwgf_mmd_argmin")] = 150.0  # a pWGF variant, not an other method
    claims = verdict.table2_claims(vae_summary(means))
    ours, literal = by_claim(claims), by_claim(claims, "pwgf_mmd_argmin")
    assert "two_layer" not in ours["comparable"]["evidence"] and "linear" in ours["comparable"]["evidence"]
    assert ours["beat relaxations"]["status"] == "reproduced"
    assert ours["beat all others"]["status"] == "not reproduced" and "st - disarm" in ours["beat all others"]["evidence"]
    assert "pwgf_mmd_argmin" not in ours["beat all others"]["evidence"]
    # The paper's literal step is judged too: 30 nats behind ST, it is not comparable and beats no relaxation.
    assert literal["comparable"]["status"] == "not reproduced" and literal["beat relaxations"]["status"] == "not reproduced"


def test_table2_significance_is_a_paired_t_test_over_seeds():
    # Two seeds each, sharing their seed effect: statuses follow scipy's paired t-test on the raw values.
    values = {"pwgf_mmd": [99.0, 101.0], "st": [102.8, 103.2], "arm": [90.0, 90.5],
              **{e: [120.0, 121.0] for e in ("relax", "rebar", "gumbel_softmax")}, "disarm": [101.0, 109.0]}
    rows = [{"arch": "linear", "estimator": e, "seed": s, "test_neg_elbo": v, "converged": True} for e, vs in values.items() for s, v in enumerate(vs)]
    claims = by_claim(verdict.table2_claims(rows))
    reference = stats.ttest_rel(values["st"], values["relax"], alternative="less").pvalue
    assert f"st - relax = -17.5 nats (p = {reference:.2g} for the claimed order" in claims["beat relaxations"]["evidence"]
    assert claims["beat relaxations"]["status"] == "reproduced" and claims["ARM best"]["status"] == "reproduced"
    # pWGF - ST = -3.0 +- 1.6 over two seeds: neither shown within the margin 2.3 nor beyond it.
    assert claims["comparable"]["status"] == "inconclusive"
    # DisARM (105 +- 4) is not significantly behind pWGF or ST, nor ahead: the claim over every estimator is open.
    assert claims["beat all others"]["status"] == "inconclusive"


def test_a_status_reads_with_its_qualification():
    summary = vae_summary(papers_table2())
    summary["rows"][0]["converged"] = False
    claims = by_claim(verdict.table2_claims(summary))
    assert verdict.status_phrase(claims["comparable"]) == "inconclusive (1 of the 18 runs compared have not converged)"  # 2 estimators x 3 archs x 3 seeds
    assert verdict.status_phrase(claims["beat all others"]).endswith("[the book's extension]")
    assert verdict.status_phrase(by_claim(verdict.table2_claims(vae_summary(papers_table2())))["ARM best"]) == "reproduced"


def test_table2_is_decided_on_the_long_runs_where_they_ran_the_comparison_and_on_the_book_scale_elsewhere():
    # Long runs of the paper's numbers, converged, for the book's pWGF step only; book-scale runs of both steps, unconverged.
    long = vae_summary(papers_table2())
    book_means = {**papers_table2(), **{(a, "pwgf_mmd_argmin"): v for (a, e), v in papers_table2().items() if e == "pwgf_mmd"}}
    book = vae_summary(book_means, converged=False)
    decided = verdict.table2_decided(long, book)
    assert [(c["claim"], c["estimator"]) for c in decided] == [(c["claim"], c["estimator"]) for c in verdict.table2_claims(book)]
    assert {(c["status"], c["scale"]) for c in by_claim(decided).values()} == {("reproduced", verdict.TABLE2_SCALES["long"])}
    argmin = by_claim(decided, "pwgf_mmd_argmin")
    assert {(c["status"], c["scale"]) for c in argmin.values()} == {("inconclusive", verdict.TABLE2_SCALES["book"])}
    assert verdict.status_phrase(by_claim(decided)["ARM best"]) == f"reproduced, decided on the {verdict.TABLE2_SCALES['long']}"
    # An unconverged long run keeps its claims inconclusive on the long runs: no fallback to a scale that cannot decide them either.
    long["rows"][0]["converged"] = False
    assert by_claim(verdict.table2_decided(long, book))["comparable"]["scale"] == verdict.TABLE2_SCALES["long"]
    assert by_claim(verdict.table2_decided(long, book))["comparable"]["status"] == "inconclusive"
    # Without long runs every claim is the book scale's.
    assert {c["scale"] for c in verdict.table2_decided(None, book)} == {verdict.TABLE2_SCALES["book"]}


def test_a_counterexample_on_converged_runs_refutes_a_claim_whatever_the_unconverged_runs_do():
    # ARM 20 nats behind on nonlinear with converged runs, its linear runs unconverged: "ARM best" is refuted.
    worse_arm = {(a, e): (v + 20 if (a, e) == ("nonlinear", "arm") else v) for (a, e), v in papers_table2().items()}
    summary = vae_summary(worse_arm)
    for r in summary["rows"]:
        r["converged"] = not (r["arch"] == "linear" and r["estimator"] == "arm")
    claim = by_claim(verdict.table2_claims(summary))["ARM best"]
    assert claim["status"] == "not reproduced" and "refuted on converged runs by arm against pwgf_mmd on nonlinear" in claim["evidence"]
    assert "arm on linear" in claim["evidence"]
    # The same counterexample on the unconverged architecture decides nothing: more training could undo it.
    worse_arm_linear = {(a, e): (v + 20 if (a, e) == ("linear", "arm") else v) for (a, e), v in papers_table2().items()}
    summary = vae_summary(worse_arm_linear)
    for r in summary["rows"]:
        r["converged"] = not (r["arch"] == "linear" and r["estimator"] == "arm")
    assert by_claim(verdict.table2_claims(summary))["ARM best"]["status"] == "inconclusive"


def test_refutation_on_converged_runs_keeps_holms_false_alarm_rate_and_measures_its_power():
    """Simulated "ARM best" with ARM unconverged on linear, so only the nonlinear comparisons may refute it.

    Spread: a seed effect shared by every estimator plus 0.7 nats of independent noise per run, the largest
    per-seed standard deviation of ARM, ST and pWGF in the long runs (SE 0.41 x sqrt(3)); 3 seeds; 2,000
    replicates (binomial SE at most 0.011). Under no difference the rule may read "not reproduced" at most as
    often as Holm at familywise 5 % (measured 0.027). With ARM behind by the paper's ARM-ST gap on nonlinear,
    2.9 nats, its power is measured at 0.72 (asserted above 0.65), below the 0.8 one would want: 3 seeds
    decide a gap of that size only most of the time (the long runs' gap was 7 nats, where the power is 1.0).
    """
    rng = np.random.default_rng(7)
    reps, seeds, noise = 2000, 3, 0.7

    def rate(arm_gap):
        refuted = 0
        for _ in range(reps):
            seed_effect = rng.normal(size=seeds)
            rows = [{"arch": a, "estimator": e, "seed": s, "converged": not (a == "linear" and e == "arm"),
                     "test_neg_elbo": 100 + (arm_gap if (a, e) == ("nonlinear", "arm") else 0.0) + seed_effect[s] + noise * rng.normal()}
                    for a in ("linear", "nonlinear") for e in ("arm", "pwgf_mmd", "st") for s in range(seeds)]
            refuted += verdict.table2_claim(rows, "ARM best", "pwgf_mmd")["status"] == "not reproduced"
        return refuted / reps

    false_alarm = rate(0.0)
    assert false_alarm <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps), false_alarm
    power = rate(2.9)
    assert power >= 0.65, power
