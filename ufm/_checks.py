"""Argument validation shared by every public entry point.

Each helper raises :class:`ValueError` naming the offending argument, its value and the
allowed range, *before* any work is done. They return the value converted to the type the
caller works with, so a call site reads ``K = check_int("K", K, minimum=2)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    if isinstance(value, (np.integer,)):
        return True
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        return True
    return False


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not an integer in [minimum, maximum]."""
    if not _is_integral(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float inside the stated interval, or raise.

    ``low_open``/``high_open`` make the corresponding end exclusive.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if isinstance(value, torch.Tensor) and value.ndim == 0:
            value = value.item()
        else:
            raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    interval = _interval_text(low, high, low_open, high_open)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


def _interval_text(low, high, low_open, high_open) -> str:
    left = "(" if (low_open or low is None) else "["
    right = ")" if (high_open or high is None) else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise listing them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_tensor_range(
    name: str,
    values: torch.Tensor,
    low: float,
    high: float,
) -> None:
    """Raise unless every entry of ``values`` is finite and lies in [low, high]."""
    if values.numel() == 0:
        return
    if values.is_floating_point():
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = values[~finite].flatten()[0].item()
            raise ValueError(f"{name} must be finite, found {bad}")
    lo, hi = values.min().item(), values.max().item()
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], found {bad!r}")


def check_index_tensor(name: str, values: torch.Tensor, K: int) -> torch.Tensor:
    """Return ``values`` as int64 class indices, raising unless all lie in [0, K-1]."""
    if values.is_floating_point() or values.is_complex():
        rounded = values.round()
        if not bool((rounded == values).all()):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values")
        values = rounded
    values = values.to(torch.int64)
    check_tensor_range(name, values, 0, K - 1)
    return values


SIMPLEX_SUM_TOL = 1e-9
r"""Allowed :math:`|\sum_k y_k - 1|` of a weight vector or soft target on the simplex."""


def check_simplex_rows(name: str, values: np.ndarray) -> np.ndarray:
    """Rows (..., m) of non-negative finite float64 values summing to 1 (to within
    :data:`SIMPLEX_SUM_TOL`), returned divided by their sums so that they sum to 1 exactly
    enough for the theory (at small lam_H its equations feel an error of 1e-16 in the sum)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{name} must be finite, found {values[~finite].ravel()[0]}")
    if values.min() < 0:
        raise ValueError(f"{name} must be >= 0, found {float(values.min())!r}")
    sums = values.sum(axis=-1, keepdims=True)
    deviation = np.abs(sums - 1.0)
    if deviation.max() > SIMPLEX_SUM_TOL:
        bad = sums.ravel()[np.argmax(deviation.ravel())]
        raise ValueError(
            f"{name} must sum to 1 along the last axis (to within {SIMPLEX_SUM_TOL:g}), "
            f"found a sum of {bad:.12g}"
        )
    return values / sums


PREVIEW_VALUES = 6
"""How many values an error message shows of a long list (the first and last few)."""


def preview(values: Any, limit: int = PREVIEW_VALUES) -> str:
    """A short text for a possibly long list of values in an error message: all of them when
    there are at most ``limit``, else their count with the first and last few
    ("1000 values: 0, 0.1, 0.2, ..., 0.9, 1")."""
    flat = np.asarray(values).ravel().tolist()
    if len(flat) <= limit:
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in flat) + "]"
    head, tail = flat[: limit // 2], flat[-(limit - limit // 2) :]
    text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in head)
    end = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in tail)
    return f"{len(flat)} values: {text}, ..., {end}"
