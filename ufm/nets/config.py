"""The configuration of one training run, validated before any data is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import check_choice, check_float, check_int
from ..devices import DEVICE_CHOICES
from ..imbalance import check_imbalance
from ..losses import get_loss
from .data import DATASETS, DIRECTORY_DATASETS
from .models import MODELS

CLASSIFIERS = ("learned", "fixed_etf")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
LAM_PER = ("batch", "sample")
TRAIN_PRESETS: dict[str, dict] = {
    # Close to the terminal-phase training of Fisher, Meng & Papyan (ICLR 2024): SGD with
    # momentum, lr 0.1, weight decay 5e-4, batch 128, lam ~ Beta(1, 1), hundreds of epochs;
    # measured every 25 epochs, so the amplification can be followed through training.
    "paper": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "alpha": 1.0,
        "epochs": 300,
        "schedule": "cosine",
        "measure_every": 25,
    },
}
"""Named starting points of ``ufm train --preset NAME`` (flags and the config file override)."""


@dataclass
class TrainConfig:
    """Everything that defines a run of ``ufm train``; saved as ``config.json``.

    Data: ``dataset`` (one of :data:`ufm.nets.data.DATASETS`), ``data_dir`` (needed for
    mnist, fashion_mnist, cifar10), ``train_subset`` (0: the whole training split; otherwise
    a fixed seeded subset of that size), ``imbalance_ratio`` rho >= 1 and
    ``minority_classes`` k in [0, K - 1]: step imbalance, the last k classes keep
    round(n_c / rho) of their training samples, drawn with the seed (1 or 0: balanced; the
    test set is never reduced; :mod:`ufm.nets.imbalanced_data`). Mixup partners come from
    the shuffled imbalanced batch, so the pairing is sample-proportional.

    Model: ``model`` (one of :data:`ufm.nets.models.MODELS`), ``width`` (0: the model's
    default; MLP hidden units 256, CNN base channels 32, ResNet-18 base channels 64),
    ``depth`` (MLP hidden layers before the feature layer), ``feature_dim`` (the penultimate
    width d), ``batch_norm`` (MLP only; the CNN and ResNet always have it), ``classifier``
    ("learned" or "fixed_etf": a simplex ETF with row norm ``etf_scale`` kept as a buffer),
    ``bias``.

    Mixup (Zhang et al. 2018): ``alpha`` (lam ~ Beta(alpha, alpha); 0 is plain training),
    ``lam_per`` ("batch" or "sample"), ``same_class`` (partners from the same class only),
    ``mixup_layer`` (0: input mixup; k >= 1: manifold mixup of the output of hidden block k,
    Verma et al. 2019); ``mixup_points`` m (2: pairs, as in Zhang et al. 2018; m >= 3: every
    batch is mixed with m - 1 further random permutations of itself, with weights drawn from
    Dirichlet(alpha 1_m) per batch or per sample as ``lam_per`` says, the multi-point mixup
    of Chaudhry et al. 2022; at most ``batch_size``; ``alpha`` = 0 is plain training for
    every m, and m >= 3 then still measures the 3-class mixtures, an ERM baseline).

    Optimisation: ``loss`` and ``loss_params`` (:func:`ufm.losses.get_loss`), ``optimizer``,
    ``lr``, ``momentum`` (SGD), ``weight_decay``, ``schedule`` ("cosine", "step": x0.1 at 50%
    and 75% of the epochs, "constant"), ``epochs``, ``batch_size``, ``seed``, ``device``,
    ``threads`` (CPU threads for torch during the run, restored afterwards; 0 leaves torch's
    setting. The default 1 is the fastest for the small default models, and on a shared
    machine it avoids OpenMP threads spinning against each other, which was measured to make
    two threads 30 times slower than one on a loaded 2-core machine).

    Measurements: every ``measure_every`` epochs (0: only at the end) and at the end;
    ``checkpoint_every`` likewise (the last epoch always); ``lam_grid`` points in [0, 1] (odd,
    so that 1/2 is among them); ``triple`` (three classes for the figures; empty: three drawn
    with the seed); ``pairs_per_class_pair`` training pairs per class pair for the triple and
    ``pairs_all_classes`` for all classes (the pairs of one cell (c, c', lam) of the cell-mean
    comparison, :mod:`ufm.nets.cell_comparison`: 40 by default, which puts the standard error
    of the amplification of a digits MLP near 0.01, well below its distance from 1);
    ``exact_classifier`` (also solve the UFM for the network's own W,
    :mod:`ufm.nets.own_classifier`); ``linearity_pairs``; ``n_bins`` for the ECE;
    ``measure_batch_size``. With ``mixup_points >= 3`` also the 3-class mixtures
    (:mod:`ufm.nets.mixtures`): ``mixture_grid`` points per edge of the weight simplex (all
    (i, j, k)/(n - 1) with i + j + k = n - 1; n - 1 a multiple of 3, so that the equal-weight
    mixture is on the grid), ``mixture_triples`` class triples (the figure's ``triple`` and
    further ones drawn with the seed; at most all C(K, 3)) and ``mixture_samples`` sample
    triples per class triple.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    train_subset: int = 0
    imbalance_ratio: float = 1.0
    minority_classes: int = 0
    model: str = "mlp"
    width: int = 0
    depth: int = 2
    feature_dim: int = 64
    batch_norm: bool = True
    classifier: str = "learned"
    bias: bool = False
    etf_scale: float = 1.0
    alpha: float = 1.0
    lam_per: str = "batch"
    same_class: bool = False
    mixup_layer: int = 0
    mixup_points: int = 2
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    epochs: int = 100
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    measure_every: int = 0
    checkpoint_every: int = 0
    lam_grid: int = 11
    triple: tuple[int, ...] = ()
    pairs_per_class_pair: int = 20
    pairs_all_classes: int = 40
    exact_classifier: bool = True
    linearity_pairs: int = 200
    n_bins: int = 15
    measure_batch_size: int = 2048
    mixture_grid: int = 7
    mixture_triples: int = 4
    mixture_samples: int = 20

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if self.dataset in DIRECTORY_DATASETS and not self.data_dir:
            raise ValueError(
                f"dataset {self.dataset!r} is read from files: give data_dir (the folder "
                f"holding them); only {', '.join(n for n in DATASETS if n not in DIRECTORY_DATASETS)}"
                " need none"
            )
        self.train_subset = check_int("train_subset", self.train_subset, minimum=0)
        # The upper bound K - 1 of minority_classes needs K: check_against_data.
        self.imbalance_ratio = check_float("imbalance_ratio", self.imbalance_ratio, 1.0, None)
        self.minority_classes = check_int("minority_classes", self.minority_classes, minimum=0)
        check_choice("model", self.model, MODELS)
        self.width = check_int("width", self.width, minimum=0)
        self.depth = check_int("depth", self.depth, minimum=0)
        self.feature_dim = check_int("feature_dim", self.feature_dim, minimum=1)
        check_choice("classifier", self.classifier, CLASSIFIERS)
        self.etf_scale = check_float("etf_scale", self.etf_scale, 0.0, None, low_open=True)
        self.alpha = check_float("alpha", self.alpha, 0.0, None)
        check_choice("lam_per", self.lam_per, LAM_PER)
        self.mixup_layer = check_int("mixup_layer", self.mixup_layer, minimum=0)
        get_loss(self.loss, **self.loss_params)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.lr = check_float("lr", self.lr, 0.0, None, low_open=True)
        self.momentum = check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        self.weight_decay = check_float("weight_decay", self.weight_decay, 0.0, None)
        check_choice("schedule", self.schedule, SCHEDULES)
        self.epochs = check_int("epochs", self.epochs, minimum=1)
        self.batch_size = check_int("batch_size", self.batch_size, minimum=1)
        self.mixup_points = check_int("mixup_points", self.mixup_points)
        most = max(2, self.batch_size)
        if not 2 <= self.mixup_points <= most:
            raise ValueError(
                f"mixup_points must lie in [2, {most}] (2 to max(2, batch_size): a batch is "
                f"mixed with mixup_points - 1 permutations of itself), got {self.mixup_points}"
            )
        self.seed = check_int("seed", self.seed, minimum=0)
        check_choice("device", str(self.device).split(":")[0], DEVICE_CHOICES)
        self.threads = check_int("threads", self.threads, minimum=0)
        self.measure_every = check_int("measure_every", self.measure_every, minimum=0)
        self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        self.lam_grid = check_int("lam_grid", self.lam_grid, minimum=3)
        if self.lam_grid % 2 == 0:
            raise ValueError(
                f"lam_grid must be odd so that the grid contains lam = 1/2, got {self.lam_grid}"
            )
        self.triple = tuple(check_int("triple", c, minimum=0) for c in self.triple)
        if self.triple and (len(self.triple) != 3 or len(set(self.triple)) != 3):
            raise ValueError(
                f"triple must be empty (drawn with the seed) or three distinct class indices, "
                f"got {list(self.triple)}"
            )
        for name in (
            "pairs_per_class_pair",
            "pairs_all_classes",
            "linearity_pairs",
            "n_bins",
            "measure_batch_size",
            "mixture_triples",
            "mixture_samples",
        ):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        self.mixture_grid = check_int("mixture_grid", self.mixture_grid, minimum=4)
        if (self.mixture_grid - 1) % 3:
            raise ValueError(
                "mixture_grid - 1 must be a multiple of 3 (4, 7, 10, ...) so that the grid "
                f"contains the equal-weight mixture (1/3, 1/3, 1/3), got {self.mixture_grid}"
            )

    def check_against_data(self, num_classes: int) -> None:
        """Refuse what only the data can rule out: class indices, minorities and d against K."""
        if num_classes < 3:
            raise ValueError(f"the measurements need K >= 3 classes, got K={num_classes}")
        if self.minority_classes > num_classes - 1:
            raise ValueError(
                f"minority_classes={self.minority_classes} is too large for dataset "
                f"{self.dataset!r} with K={num_classes} classes: allowed 0 <= "
                f"minority_classes <= K-1 = {num_classes - 1} (one class at least stays a majority)"
            )
        check_imbalance(self.imbalance_ratio, self.minority_classes, num_classes)
        for c in self.triple:
            if c >= num_classes:
                raise ValueError(
                    f"triple holds class {c}, outside [0, {num_classes - 1}] for dataset "
                    f"{self.dataset!r} with K={num_classes} classes"
                )
        if self.classifier == "fixed_etf" and self.feature_dim < num_classes - 1:
            raise ValueError(
                f"feature_dim={self.feature_dim} is too small for a fixed simplex ETF with "
                f"K={num_classes} classes: allowed feature_dim >= K-1 = {num_classes - 1}"
            )

    def lams(self) -> np.ndarray:
        """The lam grid of the measurements: ``lam_grid`` equally spaced points in [0, 1]."""
        grid = np.linspace(0.0, 1.0, self.lam_grid)
        grid[self.lam_grid // 2] = 0.5  # linspace misses 1/2 by an ulp for some sizes (99, ...)
        return grid
