r"""What a measurement of a network (or of a features file) does, apart from the network itself.

:class:`MeasureSettings` is the one place these settings live: :func:`ufm.measure_network`
takes them as keyword arguments, :func:`ufm.compare_features` and ``ufm compare`` read those
that apply to a features file, and ``ufm train`` builds them from its
:class:`ufm.nets.TrainConfig` (:meth:`ufm.nets.TrainConfig.measure_settings`). Nothing here
names a data set.

**Cost.** The all-classes comparison feeds the network
:math:`C \cdot n_\text{pair} \cdot L` mixtures (plus :math:`2 C n_\text{pair}` clean
endpoints where the mixing is not at the input), with :math:`C` the number of class pairs
measured (cells :math:`c \le c'`), :math:`n_\text{pair}` = ``pairs_all_classes`` and
:math:`L` = ``lam_grid``. All :math:`K(K+1)/2` class pairs are measured while they number at
most ``max_class_pairs`` (55 = all of K = 10); beyond, that many are drawn with the seed:
``ceil(max_class_pairs / 5)`` same-class cells (at most K) and the rest different-class, plus
those of the figure's class triple not drawn (at most 6 more), so a K = 100 measurement costs
what a K = 10 one does (24,200 mixtures with the defaults, against 2.2 million for all 5,050
class pairs). The standard error ``amplification_se_cells`` (a
jackknife over the cells) then covers which class pairs were drawn; ``amplification_se``
covers only the pairs inside the cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import check_int
from ..losses import get_loss

__all__ = ["MeasureSettings", "measurement_cost", "odd_lam_grid"]


def odd_lam_grid(points: int) -> np.ndarray:
    """``points`` (odd) equally spaced lams in [0, 1], the middle one exactly 1/2 (linspace
    misses 1/2 by an ulp for some sizes, 99 among them)."""
    grid = np.linspace(0.0, 1.0, points)
    grid[points // 2] = 0.5
    return grid


@dataclass
class MeasureSettings:
    """Settings of one measurement (module docstring).

    Pairs: ``lam_grid`` points in [0, 1] (odd, so that 1/2 is among them); ``triple`` (three
    classes for the figures; empty: three drawn with the seed); ``pairs_per_class_pair``
    training pairs per class pair of the triple and ``pairs_all_classes`` per class pair for
    the comparison with the theory (the pairs of one cell (c, c', lam)); ``max_class_pairs``
    (module docstring); ``seed`` draws every pair.

    Where: ``mix_at``, the name (in ``model.named_modules()``) of the module whose output is
    mixed, as manifold mixup trains (empty: the inputs); ``layers``, names of modules whose
    outputs the layer-wise linearity measures (empty: no linearity).

    Comparison: ``loss`` and ``loss_params`` (the training loss, for the theory);
    ``exact_classifier`` (also solve the UFM for the network's own W); ``fit_lam_H`` (fit the
    effective lam_H; False makes a light measurement, below); ``lam_bins`` (for features files
    whose lams are drawn per sample, :mod:`ufm.nets.features_file`).

    **Light measurements.** The two fits of lam_H (to the margins and to the coefficient
    curves) and the exact optimum for the network's own W at the fitted lam_H are a large
    part of the cost of a measurement of a small network such as the digits MLP, whose
    forward passes are cheap (docs/performance.md). With ``fit_lam_H`` False they are skipped and everything that needs them is NaN:
    ``fitted_lam_H``, ``margin_fit_rms``, ``curve_fitted_lam_H`` (status ``"not_fitted"``),
    ``amplification_theory``, the cross-entropy chi-square and its verdict
    (``"undetermined"``, and so ``better_fit``), ``amplification_exact_W`` and the
    ``exact_W_*`` numbers, the theory's columns of the tables, and there is no
    ``theory_triple``. The measured numbers (neural collapse, calibration, the cell means,
    the amplification and its errors, the null's fit, margins, linearity) are those of a full
    measurement (with 3-class mixtures, their own fit of lam_H is kept; only
    ``mixture3_amplification_theory_pair_lam_H``, which needs the margins' lam_H, is NaN).
    ``ufm train`` measures light before its final measurement unless
    ``fits_every_measurement`` (:class:`ufm.nets.TrainConfig`) asks for full ones.

    Also: ``linearity_pairs``; ``n_bins`` for the ECE; ``batch_size`` (network evaluations
    at once); ``mixture_points`` (3 or more: also the 3-class mixtures,
    :mod:`ufm.nets.mixtures`, with ``mixture_grid``, ``mixture_triples``,
    ``mixture_samples``).

    Every field is checked on construction, so a bad setting is refused before a network
    runs.

    Parameters
    ----------
    lam_grid : int, default 11
        Points of the lam grid in [0, 1]; odd (1/2 among them), >= 3.
    triple : tuple of int, default ()
        Three distinct class indices (>= 0, < K) for the figures; empty: three drawn with
        the seed.
    pairs_per_class_pair : int, default 20
        Training pairs per class pair of the triple, >= 1.
    pairs_all_classes : int, default 40
        Pairs per class pair (per cell (c, c', lam)) for the comparison with the theory,
        >= 2 (a cell's standard error needs two).
    max_class_pairs : int, default 55
        Class pairs measured at most (beyond, drawn with the seed), >= 4.
    seed : int, default 0
        Seed of every pair drawn, >= 0.
    mix_at : str, default ""
        Name of the module whose output is mixed; empty: the inputs.
    layers : tuple of str, default ()
        Names of modules whose outputs the layer-wise linearity measures; empty: none.
    loss : {"ce", "mse", "label_smoothing", "focal", "logit_adjusted"}, default "ce"
        The training loss, for the theory (a name of :data:`ufm.LOSSES`).
    loss_params : dict, default {}
        Keyword parameters of the loss, checked by :func:`ufm.get_loss`.
    exact_classifier : bool, default True
        Whether to also solve the UFM for the network's own W.
    fit_lam_H : bool, default True
        Whether to fit the effective lam_H (margins and coefficient curves) and solve the
        theory at it; False: a light measurement, its theory numbers NaN (above).
    lam_bins : int, default 11
        Bins of the lams of features files drawn per sample; odd, >= 3.
    linearity_pairs : int, default 200
        Pairs of the layer-wise linearity, >= 1.
    n_bins : int, default 15
        Bins of the expected calibration error (ECE), >= 1.
    batch_size : int, default 2048
        Network evaluations at once, >= 1.
    mixture_points : int, default 2
        >= 2; 3 or more also measures the 3-class mixtures (:mod:`ufm.nets.mixtures`).
    mixture_grid : int, default 7
        Points per edge of the weight simplex of the 3-class mixtures, >= 4, with
        ``mixture_grid`` - 1 a multiple of 3 (the equal-weight mixture on the grid).
    mixture_triples : int, default 4
        Class triples of the 3-class mixtures, >= 1.
    mixture_samples : int, default 20
        Sample triples per class triple, >= 1.

    Examples
    --------
    >>> import dataclasses, ufm
    >>> settings = ufm.MeasureSettings(lam_grid=5, pairs_all_classes=4)
    >>> settings.lam_grid, settings.loss, settings.mix_at == ""
    (5, 'ce', True)
    >>> dataclasses.replace(settings, seed=1).seed
    1
    >>> ufm.MeasureSettings(lam_grid=4)
    Traceback (most recent call last):
        ...
    ValueError: lam_grid must be odd so that 1/2 is among its points, got 4

    :func:`ufm.measure_network` and :func:`ufm.compare_features` take the same fields as
    keyword arguments.
    """

    lam_grid: int = 11
    triple: tuple[int, ...] = ()
    pairs_per_class_pair: int = 20
    pairs_all_classes: int = 40
    max_class_pairs: int = 55
    seed: int = 0
    mix_at: str = ""
    layers: tuple[str, ...] = ()
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    exact_classifier: bool = True
    fit_lam_H: bool = True
    lam_bins: int = 11
    linearity_pairs: int = 200
    n_bins: int = 15
    batch_size: int = 2048
    mixture_points: int = 2
    mixture_grid: int = 7
    mixture_triples: int = 4
    mixture_samples: int = 20

    def __post_init__(self) -> None:
        for name in ("lam_grid", "lam_bins"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=3))
            if getattr(self, name) % 2 == 0:
                raise ValueError(
                    f"{name} must be odd so that 1/2 is among its points, got {getattr(self, name)}"
                )
        self.triple = tuple(check_int("triple", c, minimum=0) for c in self.triple)
        if self.triple and (len(self.triple) != 3 or len(set(self.triple)) != 3):
            raise ValueError(
                f"triple must be empty (drawn with the seed) or three distinct class indices, "
                f"got {list(self.triple)}"
            )
        # A cell's standard error needs two pairs (ufm.nets.cell_means.MIN_SAMPLES_PER_CELL).
        self.pairs_all_classes = check_int("pairs_all_classes", self.pairs_all_classes, minimum=2)
        for name in (
            "pairs_per_class_pair",
            "linearity_pairs",
            "n_bins",
            "batch_size",
            "mixture_triples",
            "mixture_samples",
        ):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        self.max_class_pairs = check_int("max_class_pairs", self.max_class_pairs, minimum=4)
        self.seed = check_int("seed", self.seed, minimum=0)
        if not isinstance(self.mix_at, str):
            raise ValueError(f"mix_at must be a module name, got {self.mix_at!r}")  # noqa: TRY004
        self.layers = tuple(self.layers)
        if not all(isinstance(name, str) for name in self.layers):
            raise ValueError(f"layers must be module names (strings), got {list(self.layers)}")
        get_loss(self.loss, **self.loss_params)
        if not isinstance(self.fit_lam_H, (bool, np.bool_)):
            raise ValueError(f"fit_lam_H must be true or false, got {self.fit_lam_H!r}")  # noqa: TRY004
        self.fit_lam_H = bool(self.fit_lam_H)
        self.mixture_points = check_int("mixture_points", self.mixture_points, minimum=2)
        self.mixture_grid = check_int("mixture_grid", self.mixture_grid, minimum=4)
        if (self.mixture_grid - 1) % 3:
            raise ValueError(
                "mixture_grid - 1 must be a multiple of 3 (4, 7, 10, ...) so that the grid "
                f"contains the equal-weight mixture (1/3, 1/3, 1/3), got {self.mixture_grid}"
            )

    def check_classes(self, num_classes: int) -> None:
        """Refuse what only K can rule out: fewer than 3 classes, a triple outside [0, K)."""
        if num_classes < 3:
            raise ValueError(f"the measurements need K >= 3 classes, got K={num_classes}")
        for c in self.triple:
            if c >= num_classes:
                raise ValueError(
                    f"triple holds class {c}, outside [0, {num_classes - 1}] for K={num_classes}"
                )

    def class_pair_counts(self, num_classes: int) -> tuple[int, int]:
        """(same-class, different-class) cells measured for K classes (module docstring)."""
        K = num_classes
        total = K * (K + 1) // 2
        if total <= self.max_class_pairs:
            return K, total - K
        same = min(K, math.ceil(self.max_class_pairs / 5))
        return same, min(self.max_class_pairs - same, K * (K - 1) // 2)


def measurement_cost(settings: MeasureSettings, num_classes: int) -> dict[str, int]:
    """Network evaluations of the all-classes comparison (module docstring): ``class_pairs``
    measured, ``class_pairs_total``, ``mixtures`` (pairs times lams)."""
    same, different = settings.class_pair_counts(num_classes)
    cells = same + different
    return {
        "class_pairs": cells,
        "class_pairs_total": num_classes * (num_classes + 1) // 2,
        "mixtures": cells * settings.pairs_all_classes * settings.lam_grid,
    }
