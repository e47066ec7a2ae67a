r"""Samples of m-class mixtures (``mixup_points`` = m > 2): class tuples and simplex weights.

A mixed sample of m distinct classes :math:`c_1,\dots,c_m` with weights
:math:`y = (y_1,\dots,y_m)` on the probability simplex has the soft target
:math:`\sum_k y_k e_{c_k}` (multi-point or Dirichlet mixup: Chaudhry et al., "When does mixup
promote local linearity in learned representations?", 2022; the m = 2 case is the mixup of
Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171, and keeps its own path in
:mod:`.problem`). What ``UFMConfig`` fields mean here:

* ``pairs`` names the class tuples: ``"all"`` takes every set of m distinct classes once, as
  increasing tuples in lexicographic order (:math:`\binom{K}{m}` tuples, at most
  :data:`MAX_TUPLES`); ``"random"`` draws ``num_pairs`` tuples independently, each m distinct
  classes uniformly at random in random order (a tuple may repeat). ``"same"`` and
  ``"different"`` have no m-class meaning and are refused.
* weights: with ``alpha`` set, ``samples_per_pair`` draws per tuple from
  :math:`\mathrm{Dirichlet}(\alpha\mathbf 1_m)`; otherwise the simplex lattice with
  ``num_lams`` = :math:`N+1` points per edge, every :math:`(i_1,\dots,i_m)/N` with integers
  :math:`i_k\ge0`, :math:`\sum_k i_k = N` (:math:`\binom{N+m-1}{m-1}` points, at most
  :data:`MAX_GRID_POINTS`; vertices and faces included), each repeated ``samples_per_pair``
  times. For m = 2 this lattice is the lam grid ``linspace(0, 1, num_lams)``; ``lams`` (a
  grid of pair coefficients) is refused.
"""

from __future__ import annotations

import itertools
import math

import torch

from .._checks import check_choice, check_int
from ..theory.mixtures import simplex_grid

MIXTURE_PAIRS = ("all", "random")
MAX_TUPLES = 10_000_000
MAX_GRID_POINTS = 1_000_000
_DRAW_CHUNK = 1 << 16


def check_mixup_points(value, K: int) -> int:
    """``mixup_points`` as an int in [2, K], or a ValueError naming the value and the range."""
    value = check_int("mixup_points", value)
    if not 2 <= value <= K:
        raise ValueError(f"mixup_points must lie in [2, K={K}] (classes per mixture), got {value}")
    return value


def check_mixture_fields(config) -> None:
    """Refuse what has no meaning for m = ``config.mixup_points`` > 2 (see the module docstring).

    Called by ``UFMConfig.__post_init__`` after the generic checks of each field; refuses
    ``pairs`` other than :data:`MIXTURE_PAIRS`, a missing or out-of-range ``num_pairs``,
    ``lams``, fewer than 2 grid points per edge, and tuple or grid counts over their limits.
    """
    m, K = config.mixup_points, config.K
    if config.pairs not in MIXTURE_PAIRS:
        check_choice(f"pairs (for mixup_points = {m} > 2)", config.pairs, MIXTURE_PAIRS)
    if config.pairs == "random":
        if config.num_pairs is None:
            raise ValueError("num_pairs (the number of class tuples) must be given when pairs = 'random'")
        config.num_pairs = check_int("num_pairs", config.num_pairs, 1, MAX_TUPLES)
    else:
        if config.num_pairs is not None:
            raise ValueError(f"num_pairs is only used with pairs = 'random', got pairs = {config.pairs!r}")
        count = math.comb(K, m)
        if count > MAX_TUPLES:
            raise ValueError(
                f"pairs = 'all' with mixup_points = {m} and K = {K} gives C({K}, {m}) = {count} "
                f"class tuples, more than {MAX_TUPLES}; use pairs = 'random' with num_pairs"
            )
    if config.alpha is None:
        if config.lams is not None:
            raise ValueError(
                f"lams (a grid of pair coefficients) is not used with mixup_points = {m} > 2: "
                "the weights are the simplex lattice of num_lams points per edge, or Dirichlet "
                "draws when alpha is set"
            )
        if config.num_lams < 2:
            raise ValueError(
                f"num_lams (points per edge of the simplex lattice) must be >= 2 for "
                f"mixup_points = {m} > 2, got {config.num_lams}"
            )
        points = lattice_size(m, config.num_lams)
        if points > MAX_GRID_POINTS:
            raise ValueError(
                f"the simplex lattice with num_lams = {config.num_lams} points per edge and "
                f"mixup_points = {m} has {points} points, more than {MAX_GRID_POINTS}; lower "
                "num_lams or set alpha (Dirichlet draws)"
            )


def lattice_size(m: int, num_lams: int) -> int:
    r"""Number of points :math:`\binom{N+m-1}{m-1}` of the simplex lattice, :math:`N` = ``num_lams`` - 1."""
    return math.comb(num_lams - 1 + m - 1, m - 1)


def simplex_lattice(m: int, num_lams: int) -> torch.Tensor:
    r"""The weight grid :func:`ufm.theory.mixtures.simplex_grid` (``num_lams`` points per edge)
    as a (``lattice_size(m, num_lams)``, m) float64 tensor."""
    return torch.from_numpy(simplex_grid(m, num_lams))


def class_tuples(config, generator: torch.Generator) -> torch.Tensor:
    """The (T, m) int64 class tuples of ``config`` (``pairs`` = "all" or "random")."""
    K, m = config.K, config.mixup_points
    if config.pairs == "all":
        combos = list(itertools.combinations(range(K), m))
        return torch.tensor(combos, dtype=torch.int64).reshape(-1, m)
    # m smallest of K uniform keys: a uniformly random ordered m-subset, drawn in chunks
    parts = []
    for start in range(0, config.num_pairs, _DRAW_CHUNK):
        rows = min(_DRAW_CHUNK, config.num_pairs - start)
        keys = torch.rand(rows, K, generator=generator, dtype=torch.float64)
        parts.append(keys.topk(m, dim=1, largest=False, sorted=True).indices)
    return torch.cat(parts)


def dirichlet_sample(alpha: float, size: int, m: int, generator: torch.Generator) -> torch.Tensor:
    r"""``size`` draws from :math:`\mathrm{Dirichlet}(\alpha\mathbf 1_m)`, shape (size, m), float64.

    :math:`y = X/\sum_k X_k` with :math:`X_k \sim \Gamma(\alpha)` independent, taken in log
    space as :math:`\log X_k = \log Y_k + \log(U_k)/\alpha`, :math:`Y_k\sim\Gamma(\alpha+1)`,
    :math:`U_k\sim U(0,1]` (the same law), and :math:`y = \operatorname{softmax}(\log X)`, so
    a small :math:`\alpha` never underflows every coordinate of a draw to zero.
    """
    shape = (size, m)
    Y = torch._standard_gamma(torch.full(shape, alpha + 1.0, dtype=torch.float64), generator=generator)
    U = 1.0 - torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.softmax(torch.log(Y) + torch.log(U) / alpha, dim=1)


def sample_mixtures(config, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes (n, m) int64 and weights (n, m) float64 of every sample, tuple by tuple.

    Each tuple's samples are contiguous: its lattice points in order, each repeated
    ``samples_per_pair`` times, or its ``samples_per_pair`` Dirichlet draws. The tuples are
    drawn before the weights, both from ``generator``.
    """
    tuples = class_tuples(config, generator)
    m, per = config.mixup_points, config.samples_per_pair
    if config.alpha is None:
        per_tuple = simplex_lattice(m, config.num_lams).repeat_interleave(per, dim=0)
        classes = tuples.repeat_interleave(per_tuple.shape[0], dim=0)
        weights = per_tuple.repeat(tuples.shape[0], 1)
    else:
        classes = tuples.repeat_interleave(per, dim=0)
        weights = dirichlet_sample(config.alpha, classes.shape[0], m, generator)
    return classes, weights
