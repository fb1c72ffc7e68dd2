"""Paired percentile bootstrap of a ratio of statistics, the interval behind every "significantly smaller" in the book.

Two estimators measured on the same replicates (the same seeds, hence the same data or samples) are
compared by resampling the replicates in pairs, which keeps their correlation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pwgf._validate import check_positive_int

__all__ = ["paired_ratio_interval"]


def paired_ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 1,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(numerator) / statistic(denominator)``.

    ``numerator[i]`` and ``denominator[i]`` belong to the same replicate, so replicates are resampled in
    pairs (``draws`` resamples from ``numpy.random.default_rng(seed)``); ``statistic`` maps an array
    ``[draws, replicates]`` to ``[draws]``. Resamples where the ratio is undefined (0 / 0) are dropped.
    Returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled ratios.
    """
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if numerator.shape != denominator.shape or numerator.ndim != 1 or len(numerator) < 2:
        raise ValueError(
            f"numerator and denominator must be paired 1-d arrays of at least two replicates, got shapes {numerator.shape}, {denominator.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    index = np.random.default_rng(seed).integers(0, len(numerator), size=(check_positive_int(draws, "draws"), len(numerator)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = statistic(numerator[index]) / statistic(denominator[index])
    low, high = np.nanquantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
