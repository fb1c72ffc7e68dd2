"""Input validation shared by every module: clear errors that name the argument and its range."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "as_float64",
    "check_finite",
    "check_probabilities",
    "check_positive",
    "check_weights",
    "check_choice",
    "check_positive_int",
]


def as_float64(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Return ``x`` (array-like or tensor) as a finite float64 numpy array, or raise ValueError."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}") from err
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    check_finite(arr, name)
    return arr


def check_finite(x: np.ndarray | torch.Tensor, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or infinite values."""
    finite = torch.isfinite(x).all().item() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not finite:
        raise ValueError(f"{name} must be finite (got NaN or inf)")


def check_probabilities(p: np.ndarray | torch.Tensor, name: str) -> None:
    """Raise ValueError unless every entry of ``p`` lies in [0, 1]."""
    check_finite(p, name)
    if ((p < 0) | (p > 1)).any():
        lo, hi = float(p.min()), float(p.max())
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]")


def check_positive(x: np.ndarray | torch.Tensor | float, name: str) -> None:
    """Raise ValueError unless every entry of ``x`` is finite and strictly positive."""
    arr = x if isinstance(x, (np.ndarray, torch.Tensor)) else np.asarray(x, dtype=np.float64)
    check_finite(arr, name)
    if (arr <= 0).any():
        lo = arr.min().item() if isinstance(arr, torch.Tensor) else float(np.min(arr))
        raise ValueError(f"{name} must be > 0, got minimum {lo:.6g}")


def check_weights(w: np.ndarray, n: int, name: str, *, atol: float = 1e-9) -> None:
    """Raise ValueError unless ``w`` is a length-``n`` probability vector (non-negative, sums to 1 within ``atol``)."""
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match its support, got {tuple(w.shape)}")
    check_finite(w, name)
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative, got minimum {float(w.min()):.6g}")
    total = float(w.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (within {atol:g}), got {total:.12g}")


def check_choice(value: str, allowed: tuple[str, ...] | list[str], name: str) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``, listing the valid choices."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(sorted(allowed))}")


def check_positive_int(n: Any, name: str) -> int:
    """Return ``n`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)
