"""The experiments' machinery: the Bernoulli VAEs of Table 2 (model, objective, step, evaluation, training
runs, the experiment's grids and summaries), the Poisson experiment, Dask sweeps with atomic results,
the verdicts, benchmarks and MNIST. It builds on the estimator library (:mod:`pwgf`) and needs the
``experiments`` extra (``pip install 'pwgf[experiments]'``).
"""

from pwgf._extras import missing_extra

try:
    import dask
    import distributed
    import tqdm
except ImportError as _err:
    raise missing_extra("experiments", _err) from _err

del dask, distributed, tqdm
