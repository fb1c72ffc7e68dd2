r"""Calibrated decision rules behind every experimental status of the Verdict chapter.

Each rule turns paired measurements over seeds into one of three outcomes, ``reproduced``, ``not
reproduced`` or ``inconclusive``, with a stated error rate; ``tests/test_decision.py`` measures by
simulation each rule's false alarms under no difference and the equivalence's power at the paper's
effect. Every function is vectorized over leading axes (one simulated experiment per index), so the
simulations are array operations.

* **Ordered claims** ("a beats b" in each of :math:`K` comparisons, lower is better), :func:`ordered_claim`:
  each comparison is a paired :math:`t`-test over seeds on :math:`d_s = a_s - b_s` (the runs of a seed
  share initialization and batch order, so their difference removes the seed's effect). ``reproduced``
  if every comparison is significant in the claimed direction, one-sided at :data:`ALPHA`: an
  intersection-union test, whose chance of a false "reproduced" is at most :data:`ALPHA` when some
  comparison has no advantage. ``not reproduced`` if Holm's step-down procedure :cite:`holm1979simple` over the :math:`K`
  one-sided tests of the opposite direction rejects one at familywise level :data:`ALPHA`: with no true
  difference anywhere, the chance that any comparison contradicts the claim is at most :data:`ALPHA`,
  whatever their dependence. Otherwise ``inconclusive``.
* **Equivalence** ("a is comparable with b" on each of :math:`A` architectures, within a margin
  :math:`m`), :func:`equivalence_claim`: ``reproduced`` if on every architecture both one-sided tests
  of :math:`|\Delta| \ge m` reject at :data:`ALPHA` (two one-sided tests :cite:`schuirmann1987comparison`; the :math:`1 - 2\alpha`
  interval lies inside :math:`\pm m`); ``not reproduced`` if Holm over the architectures rejects
  :math:`|\Delta| \le m` at familywise :data:`ALPHA` for one of them (each architecture's test is
  two-sided, :math:`p = 2\min(p_+, p_-)`, so its size is at most :data:`ALPHA` at either end of the
  margin); otherwise ``inconclusive``.
* **Ratios of spreads** over paired seeds (Table 1): :func:`pitman_morgan_interval`, the exact interval
  for a ratio of standard deviations of paired normal measurements :cite:`pitman1939note,morgan1939test`,
  and :func:`fieller_interval`, Fieller's interval for a ratio of paired means :cite:`fieller1954some`.
  Both are exact under normality, where the percentile bootstrap of a ratio over ten seeds is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "ALPHA",
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "paired_t",
    "holm",
    "ordered_status",
    "equivalence_status",
    "ordered_claim",
    "equivalence_claim",
    "pitman_morgan_interval",
    "fieller_interval",
    "grid_edges",
]

#: One-sided level of every test behind an experimental status, and the familywise level of every "not reproduced".
ALPHA: float = 0.05
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def _check_paired(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.ndim < 1 or d.shape[-1] < 2:
        raise ValueError(f"paired differences need at least two seeds along the last axis, got shape {d.shape}")
    return d


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")


def paired_t(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, standard error and degrees of freedom of paired differences ``d`` ``[..., n]`` (seeds last)."""
    d = _check_paired(d)
    n = d.shape[-1]
    return d.mean(-1), d.std(-1, ddof=1) / np.sqrt(n), n - 1


def _upper_p(mean: np.ndarray, se: np.ndarray, df: int, shift: float | np.ndarray = 0.0) -> np.ndarray:
    """One-sided p-value of :math:`H_0: \\Delta \\le` ``shift`` against :math:`\\Delta >` ``shift``; a zero spread decides by the sign."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean - shift) / se
    t = np.where(se > 0, t, np.where(mean > shift, np.inf, -np.inf))
    return stats.t.sf(t, df)


def holm(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down rejections at familywise level ``alpha`` over the last axis of ``p`` (boolean, same shape)."""
    _check_alpha(alpha)
    p = np.asarray(p, dtype=np.float64)
    k = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, -1)
    passes = ranked <= alpha / (k - np.arange(k))
    keep = np.cumprod(passes, axis=-1).astype(bool)  # stop at the first acceptance
    rejected = np.zeros_like(keep)
    np.put_along_axis(rejected, order, keep, -1)
    return rejected


def _status(confirmed: np.ndarray | np.bool_, contradicted: np.ndarray | np.bool_) -> np.ndarray:
    return np.where(confirmed, REPRODUCED, np.where(contradicted, NOT_REPRODUCED, INCONCLUSIVE))


def ordered_status(p_better: np.ndarray, p_worse: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The ordered claim's status from its comparisons' one-sided p-values ``[..., K]`` (:func:`ordered_claim`)."""
    _check_alpha(alpha)
    return _status((np.asarray(p_better) < alpha).all(-1), holm(p_worse, alpha).any(-1))


def equivalence_status(p_equivalent: np.ndarray, p_outside: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The equivalence's status from its architectures' p-values ``[..., A]`` (:func:`equivalence_claim`)."""
    _check_alpha(alpha)
    return _status((np.asarray(p_equivalent) < alpha).all(-1), holm(p_outside, alpha).any(-1))


def ordered_claim(d: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status of "a beats b in every comparison" from paired differences ``d = a - b`` ``[..., K, n]`` (module docstring).

    Returns ``(status [...], p_better [..., K], p_worse [..., K])``: the one-sided p-values of the
    claimed direction (:math:`\\Delta < 0`) and of the opposite one (:math:`\\Delta > 0`).
    """
    _check_alpha(alpha)
    mean, se, df = paired_t(d)
    p_worse = _upper_p(mean, se, df)
    p_better = _upper_p(-mean, se, df)
    return ordered_status(p_better, p_worse, alpha), p_better, p_worse


def equivalence_claim(d: np.ndarray, margin: float, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status of "a and b are within ``margin``" on every architecture, from paired differences ``d`` ``[..., A, n]`` (module docstring).

    Returns ``(status [...], p_equivalent [..., A], p_outside [..., A])``: the larger of the two one-sided
    p-values of the two one-sided tests, and the two-sided p-value of :math:`|\\Delta| > m`.
    """
    _check_alpha(alpha)
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    mean, se, df = paired_t(d)
    p_equivalent = np.maximum(_upper_p(mean, se, df, -margin), _upper_p(-mean, se, df, -margin))
    p_outside = np.minimum(1.0, 2 * np.minimum(_upper_p(mean, se, df, margin), _upper_p(-mean, se, df, margin)))
    return equivalence_status(p_equivalent, p_outside, alpha), p_equivalent, p_outside


def _check_pairs(x: np.ndarray, y: np.ndarray, level: float, least: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 1 or x.shape[-1] < least:
        raise ValueError(f"x and y must be paired arrays with at least {least} replicates along the last axis, got shapes {x.shape}, {y.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return x, y


def pitman_morgan_interval(x: np.ndarray, y: np.ndarray, level: float = 1 - 2 * ALPHA) -> tuple[np.ndarray, np.ndarray]:
    r"""Two-sided ``level`` interval of :math:`\sigma_x/\sigma_y` for paired normal ``x``, ``y`` ``[..., n]`` (Pitman-Morgan).

    With :math:`F = s_x^2/s_y^2`, :math:`r` the sample correlation and
    :math:`K = 1 + 2(1 - r^2)\,t^2_{n-2,(1+\text{level})/2}/(n - 2)`, the interval of the variance ratio is
    :math:`F\,(K \mp \sqrt{K^2 - 1})` (the test of :math:`\sigma_x = \sigma_y` through the correlation of
    :math:`x + y` and :math:`x - y`, inverted); its square root is returned. Needs :math:`n \ge 3`.
    """
    x, y = _check_pairs(x, y, level, 3)
    n = x.shape[-1]
    vx, vy = x.var(-1, ddof=1), y.var(-1, ddof=1)
    cov = ((x - x.mean(-1, keepdims=True)) * (y - y.mean(-1, keepdims=True))).sum(-1) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.clip(np.where((vx > 0) & (vy > 0), cov**2 / (vx * vy), 0.0), 0.0, 1.0)
        f = vx / vy
    t2 = stats.t.ppf((1 + level) / 2, n - 2) ** 2
    k = 1 + 2 * (1 - r2) * t2 / (n - 2)
    root = np.sqrt(k**2 - 1)
    return np.sqrt(f * (k - root)), np.sqrt(f * (k + root))


def fieller_interval(x: np.ndarray, y: np.ndarray, level: float = 1 - 2 * ALPHA) -> tuple[np.ndarray, np.ndarray]:
    r"""Two-sided ``level`` interval of :math:`\mu_x/\mu_y` for paired ``x``, ``y`` ``[..., n]`` (Fieller), for positive means.

    The ratios :math:`\rho` with :math:`(\bar x - \rho\bar y)^2 \le t^2\,(s_{xx} - 2\rho s_{xy} + \rho^2 s_{yy})/n`,
    :math:`t = t_{n-1,(1+\text{level})/2}`: a bounded interval when :math:`\bar y` is significantly
    non-zero, otherwise :math:`[0, \infty)` (no decision). Lower ends are floored at 0 (ratios of
    positive quantities).
    """
    x, y = _check_pairs(x, y, level, 2)
    n = x.shape[-1]
    mx, my = x.mean(-1), y.mean(-1)
    sxx, syy = x.var(-1, ddof=1), y.var(-1, ddof=1)
    sxy = ((x - mx[..., None]) * (y - my[..., None])).sum(-1) / (n - 1)
    q = stats.t.ppf((1 + level) / 2, n - 1) ** 2 / n
    a, b, c = my**2 - q * syy, -2 * (mx * my - q * sxy), mx**2 - q * sxx
    disc = np.maximum(b**2 - 4 * a * c, 0.0)
    bounded = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(bounded, (-b - np.sqrt(disc)) / (2 * a), 0.0)
        high = np.where(bounded, (-b + np.sqrt(disc)) / (2 * a), np.inf)
    return np.maximum(low, 0.0), high


def grid_edges(choice: Mapping[str, Any], grids: Mapping[str, Sequence[Any]]) -> dict[str, str]:
    """The tuned values of ``choice`` that lie at an edge of their grid: ``{key: "smallest" | "largest"}``.

    ``grids`` maps a key of ``choice`` to the values tried; keys with fewer than two numeric values
    were not tuned and are skipped. A choice at an edge means the best value may lie beyond the grid:
    a limitation of every verdict that rests on the tuned runs.
    """
    edges = {}
    for key, grid in grids.items():
        values = sorted(float(v) for v in grid if not isinstance(v, str))
        if key not in choice or choice[key] is None or isinstance(choice[key], str) or len(values) < 2:
            continue
        if float(choice[key]) == values[0]:
            edges[key] = "smallest"
        elif float(choice[key]) == values[-1]:
            edges[key] = "largest"
    return edges
