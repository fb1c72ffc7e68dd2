"""pwgf: projected Wasserstein gradient flows and gradient estimators for discrete random variables.

The reference implementation of Cheng et al. (2018), *Straight-Through Estimator as Projected
Wasserstein Gradient Flows*. One module per concept; chapters of the book import them directly,
for example ``from pwgf import exact, families``.
"""

__version__ = "0.1.0"

from pwgf.sampling import sample

__all__ = ["sample"]
