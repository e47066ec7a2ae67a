r"""Several seeds of one configuration: the list of seeds, their mean and spread, and the rule
that says whether two configurations differ beyond it.

A ``seeds`` setting (a sweep's ``[base] seeds``, :mod:`ufm.sweep.spec`; the networks and the
imbalance sweep of ``ufm reproduce --seeds N``) runs one configuration once per seed, the
runs differing in nothing but ``seed``. :func:`seed_list` reads the setting: an integer N
means the seeds 0, 1, ..., N - 1 (``first`` onwards), a list names them.

:func:`spread` summarises one number over the seeds: its mean, the seed standard deviation
:math:`s` (sample standard deviation, ``ddof = 1``), the standard error :math:`s/\sqrt{n}`
of the mean and the number :math:`n` of seeds that gave a finite value; with one seed there
is no spread (``sd`` and ``se`` are None). :func:`resolved` is the rule every comparison of
two configurations uses: their means differ when the difference exceeds twice the combined
standard error :math:`\sqrt{se_a^2 + se_b^2}`, and with fewer than two seeds on either side
it cannot say (None).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

RESOLUTION = 2.0  # a difference is resolved beyond RESOLUTION combined standard errors


def seed_list(value: Any, name: str = "seeds", first: int = 0) -> list[int]:
    """The seeds a ``seeds`` setting names: N (an integer >= 1) gives ``first``, ...,
    ``first + N - 1``; a list gives its distinct integers >= 0 in its order.

    Anything else (0, a negative count, a float, a string, a bool, an empty list, a negative
    or repeated seed) is refused with ValueError naming ``name`` and the value.
    """
    if _integral(value):
        count = int(value)
        if count < 1:
            raise ValueError(f"{name} must be a number of seeds >= 1 or a list of seeds, got "
                             f"{value!r}")
        return list(range(first, first + count))
    listed = isinstance(value, (list, tuple))
    if not listed:
        raise ValueError(f"{name} must be a number of seeds >= 1 or a list of seeds (integers "
                         f">= 0), got {value!r}")
    if not value:
        raise ValueError(f"{name} is an empty list: give at least one seed")
    bad = [v for v in value if not _integral(v) or int(v) < 0]
    if bad:
        raise ValueError(f"{name} must list integers >= 0, got {', '.join(map(repr, bad))}")
    seeds = [int(v) for v in value]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{name} lists seed(s) {', '.join(map(str, repeated))} more than once")
    return seeds


def _integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None (a missing value, a text,
    a bool, or a non-finite number, which JSON files hold as the strings "nan", "inf")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Spread:
    """One number over the seeds: the finite per-seed ``values`` and their ``mean``, seed
    standard deviation ``sd`` and standard error ``se`` = sd / sqrt(n) (None below 2 values;
    ``mean`` is None without any)."""

    values: tuple[float, ...]
    mean: float | None
    sd: float | None
    se: float | None

    @property
    def n(self) -> int:
        return len(self.values)


def spread(values) -> Spread:
    """The :class:`Spread` of the per-seed ``values``; those that are not finite numbers
    (:func:`finite`) are left out, and :attr:`Spread.n` counts the rest."""
    kept = tuple(v for v in map(finite, values) if v is not None)
    n = len(kept)
    if n == 0:
        return Spread(kept, None, None, None)
    mean = math.fsum(kept) / n
    if n == 1:
        return Spread(kept, mean, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (n - 1))
    return Spread(kept, mean, sd, sd / math.sqrt(n))


def combined_se(a: Spread, b: Spread) -> float | None:
    """sqrt(se_a^2 + se_b^2), the standard error of the difference of two means (None where
    either side has fewer than two seeds)."""
    return combined_standard_error(a.se, b.se)


def combined_standard_error(se_a: float | None, se_b: float | None) -> float | None:
    """:func:`combined_se` from the two standard errors themselves (as a table stores them);
    None where either is None."""
    if se_a is None or se_b is None:
        return None
    return math.hypot(se_a, se_b)


def within_error(errors) -> float | None:
    r"""The error of the mean of n independent runs from each run's own error
    :math:`e_i` (a measurement's, which a rerun would draw again):
    :math:`\sqrt{\sum_i e_i^2}/n`; None without errors or where one is not a finite
    number."""
    errors = [finite(e) for e in errors]
    if not errors or None in errors:
        return None
    return math.sqrt(math.fsum(e * e for e in errors)) / len(errors)


def total_se(values: Spread, errors) -> float | None:
    r"""The standard error of a seed mean of measured numbers: the seed standard error of
    ``values`` and the runs' own ``errors`` combined, :math:`\sqrt{se^2 + \sum_i
    e_i^2/n^2}` (:func:`within_error`). The seed spread already holds the part of the runs'
    errors that differs from seed to seed, so this counts it twice and is never smaller than
    either; what a rerun would not draw again (which class pairs a measurement has, the
    same on every seed) only the runs' errors hold. None with fewer than two seeds or
    without every run's error."""
    return combined_standard_error(values.se, within_error(errors))


def resolved(a: Spread, b: Spread) -> bool | None:
    """Whether the means of ``a`` and ``b`` differ by more than :data:`RESOLUTION` combined
    standard errors; None where it cannot be told (fewer than two seeds on a side, or no
    value)."""
    error = combined_se(a, b)
    if error is None or a.mean is None or b.mean is None:
        return None
    return abs(a.mean - b.mean) > RESOLUTION * error
