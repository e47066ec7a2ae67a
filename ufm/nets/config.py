"""The configuration of one training run, validated before any data is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._checks import check_choice, check_float, check_int
from ..devices import DEVICE_CHOICES
from ..imbalance import PAIRINGS, check_imbalance
from ..losses import LOSSES, get_loss
from .measure_settings import MeasureSettings, odd_lam_grid
from .data import DATASETS, DIRECTORY_DATASETS
from .augment import check_augmentable
from .mixup import check_pairing
from .models import MODELS, resolved_depth

CLASSIFIERS = ("learned", "fixed_etf")
MEASURE_DEFAULTS = MeasureSettings()
"""The measurement settings' defaults, which TrainConfig's measurement fields take."""
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
LAM_PER = ("batch", "sample")
@dataclass(frozen=True)
class TrainPreset:
    """A named starting point of ``ufm train --preset NAME``.

    ``fields`` are set on every run, ``model_fields[m]`` where the run trains model ``m``
    (the preset's ``fields["model"]`` unless ``--model`` says otherwise), and ``augment`` is
    set to whether the data set is among ``augmented``. ``datasets``, where not empty, are
    the only data sets the preset accepts. The command line overrides all of it, and it
    overrides the ``--config`` file (:func:`ufm.commands.job_config`).
    """

    fields: dict[str, Any]
    model_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    augmented: tuple[str, ...] = ()

    def fields_for(self, name: str, dataset: str | None, model: str | None) -> dict[str, Any]:
        """The fields preset ``name`` sets for a run of ``model`` on ``dataset``.

        ``dataset`` None skips the data set check and ``augment`` (a first pass that only
        learns which data set and model the file and flags choose); ``model`` None means
        the preset's own model.

        Raises
        ------
        ValueError
            When ``dataset`` is not among ``datasets``.
        """
        if dataset is not None and self.datasets and dataset not in self.datasets:
            raise ValueError(
                f"preset {name!r} trains on {', '.join(map(repr, self.datasets))} only (give "
                f"--dataset and --data-dir); got dataset {dataset!r}"
            )
        fields = dict(self.fields)
        fields.update(self.model_fields.get(model or fields.get("model"), {}))
        if dataset is not None and self.augmented:
            fields["augment"] = dataset in self.augmented
        return fields


PAPER_DATASETS = ("fashion_mnist", "cifar10", "cifar100")
"""The data sets of Fisher, Meng & Papyan (ICLR 2024)."""

TRAIN_PRESETS: dict[str, TrainPreset] = {
    # Close to the terminal-phase training of Fisher, Meng & Papyan (ICLR 2024): WRN-40-10 (or
    # ViT-B with --model vit) on Fashion-MNIST, CIFAR-10 or CIFAR-100 with the standard crop
    # and flip on the 32x32 sets; SGD with momentum, lr 0.1, weight decay 5e-4, batch 128,
    # lam ~ Beta(1, 1), hundreds of epochs; measured every 25 epochs, so the amplification can
    # be followed through training. The digits MLP is not the paper's setting: refused.
    "paper": TrainPreset(
        fields={
            "model": "wrn",
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
        model_fields={"wrn": {"depth": 40, "width": 10}, "vit": {"depth": 12, "width": 768}},
        datasets=PAPER_DATASETS,
        augmented=("cifar10", "cifar100"),
    ),
}
"""Named starting points of ``ufm train --preset NAME`` (:class:`TrainPreset`)."""


@dataclass
class TrainConfig:
    """Everything that defines a run of ``ufm train``; saved as ``config.json``.

    Data: ``dataset`` (one of :data:`ufm.nets.data.DATASETS`), ``data_dir`` (needed for
    mnist, fashion_mnist, cifar10, cifar100), ``train_subset`` (0: the whole training split;
    otherwise a fixed seeded subset of that size), ``imbalance_ratio`` rho >= 1 and
    ``minority_classes`` k in [0, K - 1]: step imbalance, the last k classes keep
    round(n_c / rho) of their training samples, drawn with the seed (1 or 0: balanced; the
    test set is never reduced; :mod:`ufm.nets.imbalanced_data`). ``pairing``: "sample"
    (default) takes mixup partners from the shuffled imbalanced batch, so a pair of classes
    occurs in proportion to n_c n_c'; "class" draws each partner's class uniformly among the
    K classes and then a random training sample of it (pairs only, not with ``same_class``;
    :mod:`ufm.nets.mixup`), which gives the minority classes far more label mass
    (:func:`ufm.imbalance.label_mass_ratio`; minority collapse, Fang et al., PNAS 2021); it
    changes nothing without mixup (``alpha`` = 0). ``augment``: the
    standard CIFAR augmentation of training batches, a random crop of the image padded by 4
    zeros and a horizontal flip, drawn from the run's generator before mixing
    (:mod:`ufm.nets.augment`); images (C, 32, 32) only (cifar10, cifar100), refused
    otherwise; the measurements always see the clean images.

    Model: ``model`` (one of :data:`ufm.nets.models.MODELS`), ``width`` (0: the model's
    default; MLP hidden units 256, CNN base channels 32, ResNet-18 base channels 64, the WRN
    widening factor k = 4, the ViT embedding width 192), ``depth`` (MLP: hidden layers before
    the feature layer; ``wrn``: the WRN depth 6n + 4, where 0 and the default 2, which is no
    WRN depth, mean 16, so ``--model wrn`` alone is WRN-16-4, ``--depth 40 --width 10`` the
    paper's WRN-40-10; ``vit``: transformer blocks, 0 meaning 6, so the default 2 is a
    2-block ViT; ignored by ``cnn`` and ``resnet18``), ``feature_dim`` (the penultimate
    width d), ``batch_norm`` (MLP only; the CNN and ResNets always have it), ``classifier``
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
    ``threads`` (CPU threads for torch and for numpy's BLAS during the run, restored
    afterwards; 0 leaves their settings. The default 1 is the fastest for the small default
    models, and on a shared machine it avoids OpenMP threads spinning against each other,
    which was measured to make two threads 30 times slower than one on a loaded 2-core
    machine; numpy's BLAS threads, which the measurements' statistics use, did the same on a
    smaller scale, :func:`ufm.devices.blas_threads`).

    Measurements: every ``measure_every`` epochs (0: only at the end) and at the end;
    ``checkpoint_every`` likewise (the last epoch always); ``lam_grid`` points in [0, 1] (odd,
    so that 1/2 is among them); ``triple`` (three classes for the figures; empty: three drawn
    with the seed); ``pairs_per_class_pair`` training pairs per class pair for the triple and
    ``pairs_all_classes`` for all classes (the pairs of one cell (c, c', lam) of the cell-mean
    comparison, :mod:`ufm.nets.cell_comparison`: 40 by default, which puts the standard error
    of the amplification of a digits MLP near 0.01, well below its distance from 1);
    ``exact_classifier`` (also solve the UFM for the network's own W,
    :mod:`ufm.nets.own_classifier`); ``linearity_pairs``; ``n_bins`` for the ECE;
    ``measure_batch_size``; ``max_class_pairs`` (class pairs beyond it are sampled,
    :mod:`ufm.nets.measure_settings`); ``features_every_measurement``: the final measurement
    always saves its mixed-pair features (``mixed_features.npz``, the file ``ufm compare``
    reads; about 7 MB for the digits MLP), and with this every scheduled one does too;
    ``fits_every_measurement``: the final measurement always fits lam_H and solves the theory
    at it (the exact optimum for the network's own W included), and with this every
    scheduled one does too; without it the scheduled ones before the last are light
    (``fit_lam_H`` of :class:`ufm.nets.MeasureSettings`: the same measured numbers, the
    theory's NaN), which saves a large part of their cost on a small network such as the
    digits MLP, where a measurement costs as much as several epochs (docs/performance.md). With ``mixup_points >= 3`` also the 3-class mixtures
    (:mod:`ufm.nets.mixtures`): ``mixture_grid`` points per edge of the weight simplex (all
    (i, j, k)/(n - 1) with i + j + k = n - 1; n - 1 a multiple of 3, so that the equal-weight
    mixture is on the grid), ``mixture_triples`` class triples (the figure's ``triple`` and
    further ones drawn with the seed; at most all C(K, 3)) and ``mixture_samples`` sample
    triples per class triple.
    """

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "dataset": tuple(DATASETS), "model": tuple(MODELS), "classifier": CLASSIFIERS,
        "loss": tuple(LOSSES), "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
        "lam_per": LAM_PER, "pairing": PAIRINGS, "device": DEVICE_CHOICES,
    }  # fmt: skip
    """Allowed values of the choice fields, listed in ``ufm train --help``."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_subset: int = 0
    imbalance_ratio: float = 1.0
    minority_classes: int = 0
    augment: bool = False
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
    pairing: str = "sample"
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
    # The measurement's fields, with the defaults of the one place they live (MeasureSettings).
    lam_grid: int = MEASURE_DEFAULTS.lam_grid
    triple: tuple[int, ...] = MEASURE_DEFAULTS.triple
    pairs_per_class_pair: int = MEASURE_DEFAULTS.pairs_per_class_pair
    pairs_all_classes: int = MEASURE_DEFAULTS.pairs_all_classes
    max_class_pairs: int = MEASURE_DEFAULTS.max_class_pairs
    exact_classifier: bool = MEASURE_DEFAULTS.exact_classifier
    linearity_pairs: int = MEASURE_DEFAULTS.linearity_pairs
    n_bins: int = MEASURE_DEFAULTS.n_bins
    measure_batch_size: int = MEASURE_DEFAULTS.batch_size
    mixture_grid: int = MEASURE_DEFAULTS.mixture_grid
    mixture_triples: int = MEASURE_DEFAULTS.mixture_triples
    mixture_samples: int = MEASURE_DEFAULTS.mixture_samples
    features_every_measurement: bool = False
    fits_every_measurement: bool = False

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if self.dataset in DIRECTORY_DATASETS and not self.data_dir:
            bundled = ", ".join(n for n in DATASETS if n not in DIRECTORY_DATASETS)
            raise ValueError(
                f"dataset {self.dataset!r} is read from files: give data_dir (the folder "
                f"holding them); only {bundled} need none"
            )
        self.train_subset = check_int("train_subset", self.train_subset, minimum=0)
        # The upper bound K - 1 of minority_classes needs K: check_against_data.
        self.imbalance_ratio = check_float("imbalance_ratio", self.imbalance_ratio, 1.0, None)
        self.minority_classes = check_int("minority_classes", self.minority_classes, minimum=0)
        for name in ("augment", "fits_every_measurement"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("model", self.model, MODELS)
        self.width = check_int("width", self.width, minimum=0)
        self.depth = check_int("depth", self.depth, minimum=0)
        resolved_depth(self.model, self.depth)  # a WRN depth must be 6n + 4
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
        check_pairing(self.pairing, self.mixup_points, self.same_class)
        self.seed = check_int("seed", self.seed, minimum=0)
        check_choice("device", str(self.device).split(":")[0], DEVICE_CHOICES)
        self.threads = check_int("threads", self.threads, minimum=0)
        self.measure_every = check_int("measure_every", self.measure_every, minimum=0)
        self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        self.measure_batch_size = check_int(
            "measure_batch_size", self.measure_batch_size, minimum=1
        )
        # The measurement fields are checked (and the triple made a tuple) by the settings.
        self.triple = self.measure_settings().triple

    def check_against_data(
        self, num_classes: int, input_shape: Sequence[int] | None = None
    ) -> None:
        """Refuse what only the data can rule out: class indices, minorities and d against K,
        and ``augment`` on inputs (``input_shape``, one sample's) other than 32x32 images."""
        if self.augment and input_shape is not None:
            check_augmentable(input_shape, self.dataset)
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
        return odd_lam_grid(self.lam_grid)

    def measure_settings(self, num_blocks: int = 0, final: bool = True) -> MeasureSettings:
        """The measurement settings of this run (:class:`ufm.nets.MeasureSettings`): its
        measurement fields, its loss, manifold mixup's block as ``mix_at`` and each of the
        ``num_blocks`` hidden blocks of its :class:`ufm.nets.MixupNet` as a layer of the
        linearity; for a scheduled measurement before the last (``final`` False) a light one
        (``fit_lam_H`` False) unless ``fits_every_measurement``."""
        return MeasureSettings(
            lam_grid=self.lam_grid,
            triple=self.triple,
            pairs_per_class_pair=self.pairs_per_class_pair,
            pairs_all_classes=self.pairs_all_classes,
            max_class_pairs=self.max_class_pairs,
            seed=self.seed,
            mix_at=f"blocks.{self.mixup_layer - 1}" if self.mixup_layer else "",
            layers=tuple(f"blocks.{k}" for k in range(num_blocks)),
            loss=self.loss,
            loss_params=dict(self.loss_params),
            exact_classifier=self.exact_classifier,
            fit_lam_H=final or self.fits_every_measurement,
            linearity_pairs=self.linearity_pairs,
            n_bins=self.n_bins,
            batch_size=self.measure_batch_size,
            mixture_points=self.mixup_points,
            mixture_grid=self.mixture_grid,
            mixture_triples=self.mixture_triples,
            mixture_samples=self.mixture_samples,
        )
