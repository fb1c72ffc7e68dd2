"""The error-against-samples experiment: its parameters are checked before any run, and its runs are sweep runs."""

from __future__ import annotations

import pytest

from pwgf.experiments import error_vs_samples as evs
from pwgf.experiments.sweep import code_version, run_sweep

GOOD = {"estimators": ["reinforce", "st"], "dims": [2, 3], "n_samples": [2, 8], "replicates": 20, "seed": 0, "scheduler": "local", "workers": 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimators": []}, r"estimators must be a non-empty list, got \[\]"),
        ({"estimators": "st"}, r"estimators must be a non-empty list, got 'st'"),
        ({"estimators": ["st", "st"]}, r"estimators must not repeat an entry"),
        ({"estimators": ["gumbel"]}, r"unknown estimator \(in estimators\) 'gumbel'; valid: .*reinforce"),
        ({"dims": [2, 17]}, r"dims entries must be at most 16 \(exact enumeration of 2\*\*d states\), got 17"),
        ({"dims": [0]}, r"dims entry must be an integer >= 1, got 0"),
        ({"n_samples": [1, 4]}, r"n_samples entries must be >= 2 \(leave-one-out baseline\), got 1"),
        ({"replicates": 1}, r"replicates must be >= 2 to estimate a variance, got 1"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"scheduler": "locl"}, r"scheduler must be 'local' .* such as 'tcp://host:8786'"),
        ({"workers": 0}, r"workers must be an integer >= 1, got 0"),
    ],
)
def test_bad_parameters_are_named_before_any_run(changes, message):
    with pytest.raises(ValueError, match=message):
        evs.validate_parameters(**{**GOOD, **changes})


def test_runs_are_seeded_by_their_config_and_carry_the_code_version(tmp_path):
    evs.validate_parameters(**GOOD)
    configs = evs.configs(GOOD["estimators"], GOOD["dims"], GOOD["n_samples"], GOOD["replicates"], GOOD["seed"])
    assert len(configs) == 8
    records = run_sweep(configs, evs.run, tmp_path, workers=1)
    assert all(r["config"]["code"] == code_version(evs.run) for r in records)
    assert records[0]["result"] == evs.run(configs[0])  # the same numbers outside the sweep
    reinforce = [r["result"] for r in records if r["config"]["estimator"] == "reinforce"]
    assert all(r["rel_mse"] > 0 and r["rel_bias_sq"] <= r["rel_mse"] for r in reinforce)
