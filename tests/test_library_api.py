"""Tests for the library as a user meets it: typed entry points, the costs users write, RELAX's trained
control variate in a user's loop, measure()'s z statistic at a class never sampled, and the extras."""

from __future__ import annotations

import importlib
import inspect
import sys

import pytest
import torch
from torch import distributions as D

from pwgf import control_variates, discrete
from pwgf import estimators as E

DT = torch.float64
W = torch.tensor([1.0, -2.0, 0.5], dtype=DT)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cost(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(z @ W) + (z[..., 0] - 0.3) ** 2


def bernoulli(logits: torch.Tensor) -> D.Distribution:
    return D.Independent(D.Bernoulli(logits=logits), 1)


def categorical(logits: torch.Tensor) -> D.Distribution:
    return D.Independent(D.OneHotCategorical(logits=logits), 1)


LOGITS_B = torch.tensor([[0.3, -1.0, 2.0], [-0.5, 0.0, 1.0]], dtype=DT)
LOGITS_C = torch.tensor([[[0.3, -1.0, 2.0], [-0.5, 0.0, 1.0]]], dtype=DT).expand(2, 2, 3)


def cost_c(z: torch.Tensor) -> torch.Tensor:
    return torch.sin((z * torch.arange(1.0, 4.0, dtype=DT)).sum((-1, -2))) + z[..., 0, 0]


@pytest.mark.parametrize("name", sorted(E.ESTIMATORS))
def test_each_entry_point_is_what_surrogate_dispatches_to(name):
    kind = "bernoulli" if "bernoulli" in E.ESTIMATORS[name] else "poisson"
    if kind == "bernoulli":
        leaf = LOGITS_B.clone().requires_grad_(True)
        make, f = (lambda: bernoulli(leaf)), cost
    else:
        leaf = torch.tensor([[1.0, 2.0, 0.5]], dtype=DT, requires_grad=True)
        make, f = (lambda: D.Independent(D.Poisson(leaf), 1)), (lambda z: torch.sqrt(1 + z).sum(-1))
    n = E.MIN_SAMPLES[name] + 1
    via_name = E.surrogate(name, make(), f, n, generator=gen(1))
    (g_name,) = torch.autograd.grad(via_name.sum(), leaf)
    entry = E.ENTRY_POINTS[name]
    direct = entry(make(), f, n, generator=gen(1))
    (g_direct,) = torch.autograd.grad(direct.sum(), leaf)
    assert torch.equal(via_name, direct) and torch.equal(g_name, g_direct)
    # Typed keyword options with their defaults, the same as options(name); the docstring gives the math and the options.
    params = inspect.signature(entry).parameters
    assert {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "generator"} == E.options(name)
    assert "Options" in entry.__doc__ and entry.__doc__.startswith(E._REGISTRY[name].builder.__doc__.strip().splitlines()[0])


def test_entry_points_reject_bad_options_before_sampling():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        E.reinmax(bernoulli(LOGITS_B), cost, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="n_samples must be >= 2 for estimator 'reinforce'"):
        E.reinforce(bernoulli(LOGITS_B), cost, 1)


@pytest.mark.parametrize("name", ["st_gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "st"])
@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_straight_through_costs_see_exact_zeros_and_ones(name, kind):
    # float32 and many samples: hard + soft - soft.detach() would hand the cost 1 - 2**-24 for a share of the ones.
    seen: list[torch.Tensor] = []

    def f(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach())
        return z.flatten(2).sum(-1)

    logits = torch.randn(50, 8, 4, generator=gen(0)).requires_grad_(True)
    dist = categorical(logits) if kind == "categorical" else bernoulli(logits[..., 0])
    E.surrogate(name, dist, f, 64, generator=gen(2)).sum().backward()
    values = torch.cat([z.flatten() for z in seen])
    assert ((values == 0) | (values == 1)).all() and (values == 1).any()


RELAXED = ["gumbel_softmax", "muprop", "rebar", "relax"]


@pytest.mark.parametrize("name", sorted(n for n in E.ESTIMATORS if "bernoulli" in E.ESTIMATORS[n]))
def test_a_cost_built_the_ordinary_way_works_with_every_estimator(name):
    # torch.distributions validates arguments by default: a Bernoulli log_prob at a relaxed point would raise.
    assert D.Distribution._validate_args
    prior = torch.tensor([0.2, -0.4, 1.0], dtype=DT)

    def f(z: torch.Tensor) -> torch.Tensor:
        return -D.Independent(D.Bernoulli(logits=prior), 1).log_prob(z) + cost(z)

    leaf = LOGITS_B.clone().requires_grad_(True)
    loss = E.surrogate(name, bernoulli(leaf), f, E.MIN_SAMPLES[name] + 1, generator=gen(3))
    loss.sum().backward()
    assert torch.isfinite(leaf.grad).all() and D.Distribution._validate_args


@pytest.mark.parametrize("name", RELAXED)
def test_a_validating_distribution_built_outside_the_cost_fails_saying_what_to_change(name):
    outside = D.Independent(D.Bernoulli(logits=torch.zeros(3, dtype=DT), validate_args=True), 1)
    with pytest.raises(ValueError, match=rf"estimator '{name}': .*relaxed points.*validate_args=False"):
        E.surrogate(name, bernoulli(LOGITS_B), lambda z: -outside.log_prob(z), 2, generator=gen(4))


@pytest.mark.parametrize("name", sorted(E.ESTIMATORS))
def test_a_cost_returning_nan_is_an_error_naming_the_estimator(name):
    family = "bernoulli" if "bernoulli" in E.ESTIMATORS[name] else "poisson"
    theta = torch.tensor([0.3, 0.6], dtype=DT) if family == "bernoulli" else torch.tensor([1.0, 2.0], dtype=DT)

    def f(z: torch.Tensor) -> torch.Tensor:
        return z.sum(-1) * torch.nan

    with pytest.raises(ValueError, match=rf"estimator '{name}': f returned NaN"):
        E.estimate(name, family, theta, f, E.MIN_SAMPLES[name] + 1, generator=gen(5))


def test_measure_is_not_fooled_by_a_class_no_replicate_sampled():
    # Probabilities as the parameter, one class of probability 1e-9 that none of the 16,000 draws samples
    # (with probability 1 - 1.6e-5): REINFORCE's estimate for it is exactly the zero sum of the
    # leave-one-out weights, up to rounding, while the exact gradient there is of order one. The unbiased
    # estimator must pass the 4-standard-error test on the coordinates it informed; biased ST must still fail it.
    theta = torch.tensor([[0.3, 0.7 - 1e-9, 1e-9], [0.2, 0.5, 0.3]], dtype=DT)
    reference = E.estimate("exact", "categorical", theta, cost_c, 1)
    reinforce = E.measure("reinforce", "categorical", theta, cost_c, 4, 4000, reference=reference, generator=gen(6), batched=True)
    st = E.measure("st", "categorical", theta, cost_c, 4, 4000, reference=reference, generator=gen(6), batched=True)
    assert reinforce["uninformed"] == 1 and reinforce["z_max"] < 4 < st["z_max"]
    assert E.measure("exact", "categorical", theta, cost_c, 1, 2, reference=reference)["z_max"] == 0


# --- RELAX's control variate in a user's training loop ------------------------------------------------


def _vae(seed: int) -> tuple[torch.nn.Linear, torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    encoder, decoder = torch.nn.Linear(6, 4).to(DT), torch.nn.Linear(4, 6).to(DT)
    x = (torch.rand(5, 6, generator=gen(seed), dtype=DT) < 0.4).to(DT)
    return encoder, decoder, x


def _decoder_cost(decoder: torch.nn.Linear, x: torch.Tensor):
    def f(z: torch.Tensor) -> torch.Tensor:
        return -D.Independent(D.Bernoulli(logits=decoder(z)), 1).log_prob(x.expand(z.shape[0], *x.shape))

    return f


def test_relax_control_leaves_the_model_gradient_exactly_as_without_it():
    encoder, decoder, x = _vae(0)
    control = control_variates.RelaxControl(torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(-2)).to(DT), dtype=DT)
    # With the control variate trained in the loop ...
    logits = encoder(x)
    loss = control.surrogate(bernoulli(logits), _decoder_cost(decoder, x), 3, generator=gen(7))
    objective = control.variance_backward(loss, logits)
    assert all(p.grad is None for p in [*encoder.parameters(), *decoder.parameters()])  # the objective reaches only the control
    variance_grads = [p.grad.clone() for p in control.parameters()]
    loss.mean().backward()
    with_control = [p.grad.clone() for p in [*encoder.parameters(), *decoder.parameters()]]
    # ... the surrogate added exactly zero to the control's gradient ...
    assert all(torch.equal(p.grad, v) for p, v in zip(control.parameters(), variance_grads, strict=True))
    assert objective > 0 and all(torch.isfinite(v).all() for v in variance_grads) and variance_grads[0].abs() > 0
    # ... and the model's gradient is that of the same surrogate at the same (fixed) control variate.
    for p in [*encoder.parameters(), *decoder.parameters()]:
        p.grad = None
    fixed = control.control
    E.relax(bernoulli(encoder(x)), _decoder_cost(decoder, x), 3, eta=control.eta.detach(), temperature=control.temperature.detach(),
            control=lambda s: fixed(s).detach() + fixed(s) - fixed(s).detach(), generator=gen(7)).mean().backward()
    without = [p.grad for p in [*encoder.parameters(), *decoder.parameters()]]
    for a, b in zip(with_control, without, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_relax_control_training_lowers_the_variance_objective():
    encoder, decoder, x = _vae(1)
    control = control_variates.RelaxControl(torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(-2)).to(DT), eta=0.0, dtype=DT)
    optimizer = torch.optim.Adam(control.parameters(), lr=0.05)
    history = []
    for step in range(150):
        logits = encoder(x).detach().requires_grad_(True)
        loss = control.surrogate(bernoulli(logits), _decoder_cost(decoder, x), 4, generator=gen(100 + step))
        history.append(float(control.variance_backward(loss, logits)))
        optimizer.step()
        optimizer.zero_grad()
    first, last = torch.tensor(history[:30]), torch.tensor(history[-30:])
    # Means of 30 objectives each: the last must lie below the first by more than 3 of their combined standard errors.
    assert first.mean() - last.mean() > 3 * (first.var() / 30 + last.var() / 30).sqrt()


def test_relax_control_rejects_what_it_cannot_train():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        control_variates.RelaxControl(temperature=0.0)
    frozen = control_variates.RelaxControl(learn_eta=False, learn_temperature=False)
    logits = LOGITS_B.clone().requires_grad_(True)
    loss = frozen.surrogate(bernoulli(logits), cost, 2, generator=gen(8))
    with pytest.raises(ValueError, match="nothing to train"):
        frozen.variance_backward(loss, logits)


def test_relax_at_a_fixed_eta_of_zero_evaluates_the_cost_at_the_samples_only():
    points = []

    def f(z: torch.Tensor) -> torch.Tensor:
        points.append(z.shape[0])
        return cost(z)

    E.relax(bernoulli(LOGITS_B), f, 5, eta=0.0, control=lambda s: (s * W).sum(-1), generator=gen(9))
    assert points == [5]


# --- extras ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "missing", "extra"), [("pwgf.experiments.sweep", "distributed", "experiments"), ("pwgf.experiments.sweep", "tqdm", "experiments")])
def test_an_experiment_module_without_its_extra_names_the_extra(monkeypatch, module, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'pwgf\[{extra}\]'"):
        importlib.import_module(module)


def test_the_estimators_import_without_the_extras(monkeypatch):
    for name in ("distributed", "dask", "tqdm", "mlxtend", "pandas", "matplotlib", "ot", "torchvision"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in [m for m in sys.modules if m.startswith("pwgf")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("pwgf.estimators", "pwgf.control_variates", "pwgf.discrete", "pwgf.exact"):
        importlib.import_module(name)


def test_discrete_costs_reports_nan():
    with pytest.raises(discrete.NonFiniteCostError, match="NaN"):
        discrete.costs(lambda z: z.sum(-1) / 0 * 0, torch.ones(2, 3))
