"""pwgf: projected Wasserstein gradient flows and gradient estimators for discrete random variables.

The reference implementation of Cheng et al. (2018), *Straight-Through Estimator as Projected
Wasserstein Gradient Flows*, and of the estimators it is compared with.

**Public, stable API** (semantic versioning from 0.2; ``CHANGELOG.md`` records every change):

- :mod:`pwgf.estimators`: :func:`~pwgf.estimators.surrogate` and one typed entry point per estimator
  (``reinforce``, ``st``, ``reinmax``, ``relax``, ...), :func:`~pwgf.estimators.estimate`,
  :func:`~pwgf.estimators.estimates`, :func:`~pwgf.estimators.measure`, :func:`~pwgf.estimators.tune`,
  :func:`~pwgf.estimators.options` and the tables ``ESTIMATORS``, ``UNBIASED``, ``MIN_SAMPLES``;
- :mod:`pwgf.control_variates`: :class:`~pwgf.control_variates.RelaxControl`, RELAX's and REBAR's
  control variate trained in the user's own loop;
- :func:`pwgf.sample` (:mod:`pwgf.sampling`): one straight-through sample, ``z = pwgf.sample(dist, method)``,
  and :func:`pwgf.vimco.vimco`, VIMCO for the multi-sample bound;
- :mod:`pwgf.discrete`, :mod:`pwgf.exact`, :mod:`pwgf.families`: the distributions the estimators
  accept, exact references by enumeration, and the family form the theory chapters use.

The other modules (the builders behind the entry points, the theory tools the chapters use, and the
experiments' machinery, which needs the ``experiments`` extra) may change between minor versions.
A plain ``pip install pwgf`` needs torch, numpy and scipy only.
"""

from pwgf import control_variates, estimators
from pwgf.sampling import sample

__version__ = "0.2.0"

__all__ = ["__version__", "control_variates", "estimators", "sample"]
