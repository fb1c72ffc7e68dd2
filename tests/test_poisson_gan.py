"""Tests of pwgf.experiments.poisson_gan: validation, seeding, resumable atomic sweeps and the summary schema."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pwgf import exact, families
from pwgf.experiments import poisson_gan as pg
from pwgf.experiments.results import read_json
from pwgf.experiments.sweep import run_sweep

BASE = {"n_data": 50, "epochs": 3, "iters": 2, "batch": 8, "lr_d": 0.01, "width": 4, "loss": "paper", "lambda_init_ratio": 2.0, "var_reps": 0}
SETTING = {"lr_g": 0.1, "eps": 0.1, "bw": 1.0}


def config(estimator: str = "st", **changes):
    c = pg._config(BASE, estimator, 5.0, 0, SETTING)
    c.update(changes)
    return c


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimator": "gumbel"}, "unknown estimator 'gumbel'; valid: eat_cubic, eat_sigmoid, exact, muprop, pwgf_mmd, pwgf_mmd_argmin, reinforce, st"),
        ({"lambda0": 0.0}, "lambda0 must be > 0"),
        ({"lambda0": -5.0}, "lambda0 must be > 0"),
        ({"batch": 0}, "batch must be an integer >= 1"),
        ({"batch": 1}, "batch must be an integer >= 2"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"n_data": 0}, "n_data must be an integer >= 1"),
        ({"lr_g": float("nan")}, "lr_g must be finite"),
        ({"loss": "wasserstein"}, "unknown loss"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"var_reps": 1.5}, "var_reps must be 0 \\(off\\) or an integer >= 2"),
        ({"var_reps": 1}, "var_reps must be 0 \\(off\\) or an integer >= 2"),
        ({"eps": 0.1}, "eps and bw apply to pwgf_mmd and pwgf_mmd_argmin only"),
        ({"extra": 1}, "unknown \\['extra'\\]"),
        ({"code": None}, "code must be a string"),
    ],
)
def test_validate_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        pg.validate_config(config(**changes))


@pytest.mark.parametrize(("changes", "message"), [({"eps": 0.0}, "eps must be > 0"), ({"bw": -1.0}, "bw .* must be a number > 0 or 'median'"), ({"bw": "mean"}, "bw .* 'median', got 'mean'")])
def test_validate_config_rejects_bad_pwgf_options(changes, message):
    with pytest.raises(ValueError, match=message):
        pg.validate_config(config("pwgf_mmd", **changes))


def test_sweep_configs_are_validated_when_made():
    with pytest.raises(ValueError, match="lr_g must be > 0"):
        pg.tuning_configs(BASE, ["st"], [5.0], [10], [0.1, 0.0], [0.1], [1.0])
    with pytest.raises(ValueError, match="batch must be an integer >= 2"):
        pg.final_configs({**BASE, "batch": 1}, {("st", 5.0): SETTING}, [0])


def test_a_sweep_refuses_a_config_made_for_other_library_code(tmp_path):
    with pytest.raises(ValueError, match=r"run 0 of the sweep .*config\['code'\] is '0123456789ab', but the library code that run executes"):
        run_sweep([config(code="0123456789ab")], pg.train, tmp_path, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_train_is_seeded_and_paired():
    a, b = pg.train(config()), pg.train(config())
    assert a.pop("seconds") > 0 and b.pop("seconds") > 0
    assert a == b  # same seed: the same run, bit for bit
    other = pg.train(config("reinforce"))
    assert other["data_mean"] == a["data_mean"]  # the seed fixes the data: estimators are compared on the same data
    assert len(a["lambda"]) == BASE["epochs"] + 1 and a["lambda"][0] == 10.0
    assert all(math.isfinite(x) and x > 0 for x in a["lambda"])


def test_variance_checkpoints_do_not_change_the_trajectory():
    plain = pg.train(config("reinforce"))
    measured = pg.train(config("reinforce", var_reps=3))
    assert measured["lambda"] == plain["lambda"]
    assert [c["epoch"] for c in measured["checkpoints"]] == pg.variance_epochs(BASE["epochs"]) == [0, 1, 3]
    first = measured["checkpoints"][0]
    assert first["lambda"] == pytest.approx(10.0) and first["var"] >= 0


def test_resumable_sweep_does_not_recompute(tmp_path, monkeypatch):
    configs = [config(name, seed=s) for name in ("st", "exact") for s in (0, 1)]
    first = run_sweep(configs, pg.train, tmp_path, workers=1)
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 4
    mtimes = [f.stat().st_mtime_ns for f in files]

    def fail(_config):
        raise AssertionError("a finished run was recomputed")

    fail.__module__ = pg.train.__module__  # stands for train: the same library code version
    monkeypatch.setattr(pg, "train", fail)
    second = run_sweep(configs, pg.train, tmp_path, workers=1)
    assert second == first
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    # Atomic writes leave no temporary files, and every file is a whole JSON document.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert all(set(read_json(f)) == {"config", "result"} for f in files)


def test_tuning_select_and_final_configs():
    grid = pg.tuning_configs(BASE, ["st", "pwgf_mmd"], [5.0, 0.5], [10, 11], [0.1, 0.3], [0.1, 1.0], [1.0, "median"])
    assert len(grid) == (2 + 2 * 4) * 2 * 2
    assert all(c["eps"] is None for c in grid if c["estimator"] == "st")
    assert all(c["lambda_init"] == 2.0 * c["lambda0"] and c["code"] == pg.code_version() for c in grid)
    records = [{"config": c, "result": {"lambda": [c["lambda0"] + c["lr_g"]] * 3}} for c in grid]
    scores = pg.tuning_scores(records, 2)
    best = pg.select(scores)
    assert set(best) == {("st", 5.0), ("st", 0.5), ("pwgf_mmd", 5.0), ("pwgf_mmd", 0.5)}
    assert all(row["lr_g"] == 0.1 and row["rmse"] == pytest.approx(0.1) for row in best.values())
    assert best[("pwgf_mmd", 5.0)]["eps"] == 0.1 and best[("pwgf_mmd", 5.0)]["bw"] == 1.0  # ties: first in grid order
    final = pg.final_configs(BASE, best, [0, 1, 2])
    assert len(final) == 12 and {c["seed"] for c in final} == {0, 1, 2}


def test_summary_schema_from_a_tiny_sweep(tmp_path):
    configs = [config(name, seed=s) for name in ("pwgf_mmd", "st") for s in (0, 1, 2)]
    configs = [c if c["estimator"] == "pwgf_mmd" else {**c, "eps": None, "bw": None} for c in configs]
    records = run_sweep(configs, pg.train, tmp_path / "runs", workers=1)
    rows = pg.summarize(records, window=2)
    json_path, csv_path = pg.write_summary(rows, {"settings": {"window": 2}}, tmp_path)

    with open(csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == pg.SUMMARY_FIELDS and len(table) == 2
    document = json.loads(json_path.read_text())
    assert document["fields"] == list(pg.SUMMARY_FIELDS) and document["settings"] == {"window": 2}
    assert [set(row) for row in document["rows"]] == [set(pg.SUMMARY_FIELDS)] * 2

    row = next(r for r in document["rows"] if r["estimator"] == "pwgf_mmd")
    final = np.array([r["result"]["lambda"][-1] for r in records if r["config"]["estimator"] == "pwgf_mmd"])
    data = np.array([r["result"]["data_mean"] for r in records if r["config"]["estimator"] == "pwgf_mmd"])
    last = np.array([r["result"]["lambda"][-2:] for r in records if r["config"]["estimator"] == "pwgf_mmd"])
    assert row["n_seeds"] == 3 and row["lambda0"] == 5.0 and (row["eps"], row["bw"]) == (0.1, 1.0)
    assert row["final_mean"] == pytest.approx(final.mean(), rel=1e-12)
    assert row["final_std"] == pytest.approx(final.std(ddof=1), rel=1e-12)
    assert row["within_std"] == pytest.approx(last.std(axis=1, ddof=1).mean(), rel=1e-12)
    assert row["std_vs_data"] == pytest.approx((final - data).std(ddof=1), rel=1e-12)
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean((final - 5.0) ** 2)), rel=1e-12)
    assert (row["paper_mean"], row["paper_std"]) == (5.0076, 0.013)


def test_summary_rejects_bad_window(tmp_path):
    records = run_sweep([config()], pg.train, tmp_path, workers=1)
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        pg.summarize(records, window=1)
    with pytest.raises(ValueError, match="window must be at most"):
        pg.summarize(records, window=BASE["epochs"] + 2)
    with pytest.raises(ValueError, match="no runs"):
        pg.trajectories(records, "reinforce", 5.0)


@settings(max_examples=15, deadline=None)
@given(logit=st.floats(-30, 30), loss=st.sampled_from(pg.GENERATOR_LOSSES))
def test_generator_costs_match_their_formulas(logit, loss):
    class Constant(torch.nn.Module):
        def forward(self, z):
            return torch.full(z.shape[:1], logit, dtype=torch.float64)

    value = pg.generator_cost(Constant(), loss)(torch.zeros(1, 1, dtype=torch.float64)).item()
    w = 1.0 / (1.0 + math.exp(-logit))
    expected = {"paper": -w, "nonsaturating": math.log1p(math.exp(-logit)), "minimax": -math.log1p(math.exp(logit))}[loss]
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("lam", [0.5, 5.0, 50.0])
def test_exact_gradient_is_the_forward_difference(lam):
    """The page's lemma: d/dlambda E f = E[f(z+1) - f(z)] against scipy's pmf; the truncated sums differ by q(K) f(K+1)."""
    generator = torch.Generator().manual_seed(1)
    data = families.sample("poisson", torch.tensor([lam], dtype=torch.float64), 64, generator)
    f = pg.generator_cost(pg.Discriminator(8, data, generator), "paper")
    theta = torch.tensor([lam], dtype=torch.float64)
    k = np.arange(families.poisson_truncation(lam) + 2, dtype=np.float64)
    with torch.no_grad():
        fk = f(torch.from_numpy(k)[:, None]).numpy()
    reference = np.sum(stats.poisson.pmf(k[:-1], lam) * np.diff(fk))
    assert abs(exact.gradient("poisson", theta, f).item() - reference) <= stats.poisson.pmf(k[-2], lam) + 1e-12


def _records(finals, within_scale=1.0):
    """Synthetic run records: trajectories ending at the given final lambdas, per estimator and seed."""
    records = []
    for (name, lambda0), values in finals.items():
        for seed, final in enumerate(values):
            wiggle = within_scale * (0.1 if name == "st" else 0.01) * np.cos(np.arange(5))
            records.append({"config": {"estimator": name, "lambda0": lambda0, "seed": seed},
                            "result": {"lambda": list(final + wiggle - wiggle[-1]), "data_mean": lambda0}})
    return records


def test_per_seed_rows_hold_the_final_rate_and_the_within_run_spread():
    records = _records({("st", 5.0): [5.1, 4.9], ("pwgf_mmd", 5.0): [5.0, 5.02]})
    rows = pg.per_seed(records, window=3)
    assert [(r["estimator"], r["seed"], r["final"]) for r in rows] == [("st", 0, 5.1), ("st", 1, 4.9), ("pwgf_mmd", 0, 5.0), ("pwgf_mmd", 1, 5.02)]
    expected = float(np.std((0.1 * np.cos(np.arange(5)))[-3:], ddof=1))
    assert rows[0]["within_std"] == pytest.approx(expected, rel=1e-12)


def test_compare_spreads_decides_clear_cases_and_pairs_by_seed():
    rng = np.random.default_rng(0)
    wide, narrow = 5 + 0.5 * rng.normal(size=20), 5 + 0.05 * rng.normal(size=20)
    rows = pg.per_seed(_records({("st", 5.0): wide, ("pwgf_mmd", 5.0): narrow, ("reinforce", 5.0): wide[::-1]}), window=3)
    smaller = pg.compare_spreads(rows, 5.0, "pwgf_mmd", "st", "final_std")
    assert smaller["decision"] == "smaller" and smaller["ratio"] == pytest.approx(wide.std(ddof=1) / narrow.std(ddof=1))
    assert smaller["interval"][0] <= smaller["ratio"] <= smaller["interval"][1]
    assert pg.compare_spreads(rows, 5.0, "st", "pwgf_mmd", "final_std")["decision"] == "larger"
    assert pg.compare_spreads(rows, 5.0, "reinforce", "st", "final_std")["decision"] == "no significant difference"
    assert pg.compare_spreads(rows, 5.0, "pwgf_mmd", "st", "within_std")["decision"] == "smaller"
    assert pg.compare_spreads(rows, 5.0, "pwgf_mmd", "st", "rmse")["decision"] == "smaller"


def test_compare_spreads_rejects_unpaired_or_missing_runs():
    rows = pg.per_seed(_records({("st", 5.0): [5.0, 5.1, 5.2], ("pwgf_mmd", 5.0): [5.0, 5.1]}), window=3)
    with pytest.raises(ValueError, match="must share their seeds"):
        pg.compare_spreads(rows, 5.0, "pwgf_mmd")
    with pytest.raises(ValueError, match="no per-seed rows for estimator='muprop'"):
        pg.compare_spreads(rows, 5.0, "muprop")
    with pytest.raises(ValueError, match="unknown measure 'variance'"):
        pg.compare_spreads(rows, 5.0, "pwgf_mmd", measure="variance")
