"""The paired bootstrap interval behind the book's "significantly smaller"."""

import numpy as np
import pytest
from scipy import stats

from pwgf.experiments.bootstrap import paired_ratio_interval


def std(x):
    return x.std(axis=-1, ddof=1)


def test_interval_covers_the_true_ratio_at_its_level():
    # 200 independent experiments with a known ratio of standard deviations (2): a 90% interval must
    # cover it in about 90% of them. The count of covers is binomial; with a correct interval it lies
    # within 4 standard deviations of 180 except with probability below 1e-4.
    rng = np.random.default_rng(0)
    covers = 0
    for seed in range(200):
        x, y = 2 * rng.normal(size=100), rng.normal(size=100)
        low, high = paired_ratio_interval(x, y, std, level=0.9, draws=1000, seed=seed)
        covers += low <= 2 <= high
    assert abs(covers - 180) < 4 * np.sqrt(200 * 0.9 * 0.1)


def test_pairing_keeps_the_correlation():
    # y is x plus small noise: the ratio std(x)/std(y) is known precisely only if pairs are resampled together.
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x + 0.01 * rng.normal(size=200)
    low, high = paired_ratio_interval(x, y, std)
    assert 0.97 < low <= high < 1.03


def test_the_interval_is_reproducible_and_ordered():
    x, y = stats.norm.rvs(size=30, random_state=2), stats.norm.rvs(size=30, random_state=3)
    assert paired_ratio_interval(x, y, std) == paired_ratio_interval(x, y, std)
    low, high = paired_ratio_interval(x, y, std, level=0.5)
    wide_low, wide_high = paired_ratio_interval(x, y, std, level=0.99)
    assert wide_low <= low <= high <= wide_high


@pytest.mark.parametrize(
    ("x", "y", "level", "message"),
    [
        (np.ones(3), np.ones(4), 0.9, "paired 1-d arrays"),
        (np.ones(1), np.ones(1), 0.9, "at least two replicates"),
        (np.ones(3), np.ones(3), 1.0, "level must lie in \\(0, 1\\)"),
    ],
)
def test_bad_input_is_rejected(x, y, level, message):
    with pytest.raises(ValueError, match=message):
        paired_ratio_interval(x, y, std, level=level)
