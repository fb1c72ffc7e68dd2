"""pwgf: projected Wasserstein gradient flows and gradient estimators for discrete random variables.

The reference implementation of Cheng et al. (2018), *Straight-Through Estimator as Projected
Wasserstein Gradient Flows*, and of the estimators it is compared with. The package has three parts:

- ``pwgf`` (this package): the estimator library. A plain ``pip install pwgf`` needs torch, numpy and
  scipy only, and nothing in it imports from the two subpackages below.
- ``pwgf.theory``: the theory tools the book's chapters use (Wasserstein distances, the gradient flow,
  ST's moments, structured relaxations, toy problems).
- ``pwgf.experiments``: the experiments' machinery (the VAE and Poisson experiments, sweeps, results,
  verdicts, benchmarks, MNIST); it needs the ``experiments`` extra.

**Public, stable API** (semantic versioning from 0.2; ``CHANGELOG.md`` records every change): the names
exported here, that is :func:`surrogate` and one typed entry point per estimator (``reinforce``,
``st``, ``reinmax``, ``relax``, ...; ``exact`` as :func:`pwgf.estimators.exact`), :func:`estimate`,
:func:`estimates`, :func:`measure`, :func:`tune`, :func:`options`, the tables ``ESTIMATORS``,
``UNBIASED``, ``MIN_SAMPLES`` and :class:`RelaxControl`; and the modules :mod:`pwgf.estimators`,
:mod:`pwgf.control_variates`, :mod:`pwgf.discrete`, :mod:`pwgf.exact` and :mod:`pwgf.families`. The
builders behind the entry points and the two subpackages may change between minor versions.
"""

from pwgf import control_variates, discrete, estimators, exact, families
from pwgf.control_variates import RelaxControl
from pwgf.estimators import (
    ENTRY_POINTS,
    ESTIMATORS,
    MIN_SAMPLES,
    UNBIASED,
    arm,
    disarm,
    estimate,
    estimates,
    gapped_st,
    gumbel_rao,
    gumbel_softmax,
    measure,
    muprop,
    options,
    pwgf_mmd,
    pwgf_mmd_argmin,
    pwgf_st,
    rebar,
    reinforce,
    reinmax,
    relax,
    st,
    st_gumbel_softmax,
    surrogate,
    tune,
)

__version__ = "0.2.0"

__all__ = [
    "__version__", "control_variates", "discrete", "estimators", "exact", "families", "RelaxControl",
    "ENTRY_POINTS", "ESTIMATORS", "MIN_SAMPLES", "UNBIASED", "surrogate", "estimate", "estimates", "measure", "tune", "options",
    "reinforce", "st", "pwgf_st", "pwgf_mmd", "pwgf_mmd_argmin", "muprop", "gumbel_softmax", "st_gumbel_softmax", "gumbel_rao",
    "gapped_st", "reinmax", "arm", "disarm", "rebar", "relax",
]
