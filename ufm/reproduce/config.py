"""The configuration of a reproduction: every size is a field, with a quick and a full preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from .._checks import check_choice, check_float, check_int
from ..devices import DEVICE_CHOICES
from ..nets.config import TrainConfig
from ..nets.data import DATASETS
from ..nets.models import MODELS

LEARNED_LOSSES = ("ce", "label_smoothing", "focal")
SWEEP_GRIDS = ("quick", "full")
MINORITY_DATASETS = ("digits", "mnist1d")
"""The bundled data sets of ten classes the minority study of networks can use."""


@dataclass
class ReproduceConfig:
    """What ``ufm reproduce`` computes (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171).

    **Theory and solver** (a K-class simplex ETF of row norm ``scale``): ``lam_H`` is the
    feature ridge of the configuration figures and of the learned-classifier solves;
    ``lam_Hs`` the ridges of the theory curves and of the fixed-ETF solver points;
    ``channel_lam_Hs`` the sweep of the channel figure; ``num_lams`` points in [0, 1] for the
    theory curves, ``projection_lams`` for the configuration figures, ``solver_lams`` for
    the solver's lam grid. ``triple``: the three classes shown. ``smoothing`` and
    ``focal_gamma``: parameters of label smoothing and focal loss. Solver: feature dimension
    ``d``, classifier ridge ``lam_W``, ``learned_losses`` (one learned-classifier solve each),
    gradient tolerances ``fixed_tol`` and ``learned_tol``, ``max_iters``.

    **Networks** (:class:`ufm.nets.TrainConfig`): four runs, ERM (alpha = 0) and mixup
    (``alpha``), each with a learned and with a fixed simplex-ETF classifier, on ``dataset``
    (``data_dir`` for mnist, fashion_mnist, cifar10) with ``model``, ``epochs``, SGD with
    momentum 0.9 at learning rate ``lr`` (cosine schedule), ``weight_decay`` and
    ``batch_size`` (the full preset: 0.1, 5e-4, 128, close to the terminal-phase regime of
    Fisher et al. 2024, as ``ufm train --preset paper``; the quick preset keeps lr 0.05),
    measurements every ``measure_every`` epochs on a ``net_lams``-point lam grid with
    ``pairs_per_class_pair``, ``pairs_all_classes`` and ``linearity_pairs`` pairs,
    checkpoints every ``checkpoint_every`` epochs, ``train_subset`` (0: all), ``seed``.

    **Seeds**: ``seeds`` networks per run of the four above (seeds ``seed``, ``seed`` + 1,
    ...), whose claims compare two runs (mixup against ERM, a fixed against a learned
    classifier), and ``seeds`` solves per point of the imbalance sweep (mixup against plain
    training); the report states each compared number as the mean +- the seed standard
    deviation and counts a difference only beyond twice its combined standard error
    (:mod:`ufm.seeds`). The first seed's runs keep their folders and draw the figures; the
    3-point mixup network and the other sweeps run once. The full preset runs 3; the quick
    one 1 (three would more than double its network stage), for which the report says one
    seed, no seed spread.

    **Minority collapse of networks** (:mod:`ufm.nets.minority_study`): with
    ``minority_epochs`` > 0 the network stage also trains the bundled data set
    ``minority_dataset`` (digits or mnist1d, the MLP of ``ufm train``) with its last five
    classes at 1/rho of their samples, rho = 1, 2, ..., 64, for ERM, mixup with sample and
    with class pairing and the equal-label-mass control, each with the ``seeds`` seeds and
    ``minority_epochs`` epochs, and holds the minority cosine of the last layer against the
    exact theory at a lam_H fitted on its rho = 1 mixup runs. The full preset trains digits
    for 100 epochs (84 short runs); the quick one skips it (``minority_epochs`` = 0), as it
    would take several times its whole run.

    **Sweep** (:mod:`ufm.reproduce.sweep_stage`, docs/theory.md section 4): ``sweep_grid`` =
    "quick" (K = 4, four small grids) or "full" (this configuration's K, d, lam_H, lam_W,
    ``learned_tol``, ``max_iters`` and ``solver_lams``, six grids) of learned-classifier
    solves: when does W become a simplex ETF? ``starts``: the random starts of each point of
    the d x lam_W grid below d = K - 1, where the learned problem has several stationary
    points; the lowest objective is kept and the report says how many starts reached it
    (:mod:`ufm.solver.random_starts`; at and above K - 1 one start, which reaches the one
    minimum value there).

    **Execution**: ``device`` ("auto" picks CUDA, then MPS, then CPU) and ``threads`` (torch
    CPU threads of the solver and network runs, 0: torch's own setting; see
    :class:`ufm.nets.TrainConfig`); figures at ``dpi``.
    """

    K: int = 10
    scale: float = 1.0
    lam_H: float = 5e-3
    lam_Hs: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    channel_lam_Hs: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8)
    num_lams: int = 101
    projection_lams: int = 21
    solver_lams: int = 21
    triple: tuple[int, ...] = (0, 1, 2)
    smoothing: float = 0.1
    focal_gamma: float = 2.0
    d: int = 32
    lam_W: float = 5e-3
    learned_losses: tuple[str, ...] = ("ce", "label_smoothing", "focal")
    fixed_tol: float = 1e-10
    learned_tol: float = 1e-9
    max_iters: int = 500
    dataset: str = "mnist1d"
    data_dir: str | None = None
    model: str = "cnn"
    alpha: float = 1.0
    epochs: int = 200
    lr: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 128
    measure_every: int = 10
    checkpoint_every: int = 50
    net_lams: int = 21
    pairs_per_class_pair: int = 20
    pairs_all_classes: int = 40
    linearity_pairs: int = 200
    train_subset: int = 0
    seed: int = 0
    seeds: int = 3
    minority_dataset: str = "digits"
    minority_epochs: int = 100
    sweep_grid: str = "full"
    starts: int = 4
    device: str = "auto"
    threads: int = 1
    dpi: int = 150

    # a field's help beside its default (ufm.config.add_config_arguments)
    HELP: ClassVar[dict[str, str]] = {
        "seeds": "networks per run of the four ERM/mixup runs, and solves per point of the "
        "imbalance sweep, seeds SEED, SEED + 1, ...: the report gives each compared number as "
        "mean +- seed sd and resolves a difference beyond 2 combined standard errors; "
        "--quick: 1 (one seed, no seed spread)",
        "starts": "random starts of each sweep point below d = K - 1 (the d x lam_W grid), "
        "where the learned problem has several stationary points: the lowest objective is "
        "kept, and the report says how many starts reached it",
        "minority_epochs": "epochs of each network of the minority-collapse study of the "
        "network stage (84 runs of the MLP on minority_dataset); 0 skips it (--quick)",
    }

    def __post_init__(self) -> None:
        self.K = check_int("K", self.K, minimum=3)
        self.scale = check_float("scale", self.scale, 0.0, None, low_open=True)
        self.lam_H = check_float("lam_H", self.lam_H, 0.0, None, low_open=True)
        for name in ("lam_Hs", "channel_lam_Hs"):
            values = tuple(
                check_float(name, v, 0.0, None, low_open=True) for v in getattr(self, name)
            )
            if not values:
                raise ValueError(f"{name} must hold at least one value > 0")
            setattr(self, name, values)
        self.num_lams = check_int("num_lams", self.num_lams, minimum=3)
        for name in ("projection_lams", "solver_lams", "net_lams"):
            value = check_int(name, getattr(self, name), minimum=3)
            if value % 2 == 0:
                raise ValueError(
                    f"{name} must be odd so that the grid holds lam = 1/2, got {value}"
                )
            setattr(self, name, value)
        self.triple = tuple(check_int("triple", c, 0, self.K - 1) for c in self.triple)
        if len(self.triple) != 3 or len(set(self.triple)) != 3:
            raise ValueError(
                f"triple must be three distinct classes in [0, {self.K - 1}], "
                f"got {list(self.triple)}"
            )
        self.smoothing = check_float(
            "smoothing", self.smoothing, 0.0, 1.0, low_open=True, high_open=True
        )
        self.focal_gamma = check_float("focal_gamma", self.focal_gamma, 0.0, None)
        self.d = check_int("d", self.d, minimum=self.K - 1)
        self.lam_W = check_float("lam_W", self.lam_W, 0.0, None, low_open=True)
        self.learned_losses = tuple(
            check_choice("learned_losses", v, LEARNED_LOSSES) for v in self.learned_losses
        )
        if not self.learned_losses or "ce" not in self.learned_losses:
            raise ValueError(
                f"learned_losses must include 'ce' (the configuration figure shows it), got "
                f"{list(self.learned_losses)}; allowed: {', '.join(LEARNED_LOSSES)}"
            )
        self.fixed_tol = check_float("fixed_tol", self.fixed_tol, 0.0, None, low_open=True)
        self.learned_tol = check_float("learned_tol", self.learned_tol, 0.0, None, low_open=True)
        self.max_iters = check_int("max_iters", self.max_iters, minimum=1)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        self.alpha = check_float("alpha", self.alpha, 0.0, None, low_open=True)
        self.epochs = check_int("epochs", self.epochs, minimum=1)
        self.lr = check_float("lr", self.lr, 0.0, None, low_open=True)
        self.weight_decay = check_float("weight_decay", self.weight_decay, 0.0, None)
        self.batch_size = check_int("batch_size", self.batch_size, minimum=1)
        self.measure_every = check_int("measure_every", self.measure_every, minimum=1)
        self.checkpoint_every = check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        for name in ("pairs_per_class_pair", "pairs_all_classes", "linearity_pairs"):
            setattr(self, name, check_int(name, getattr(self, name), minimum=1))
        self.train_subset = check_int("train_subset", self.train_subset, minimum=0)
        self.seed = check_int("seed", self.seed, minimum=0)
        self.seeds = check_int("seeds", self.seeds, minimum=1)
        check_choice("minority_dataset", self.minority_dataset, MINORITY_DATASETS)
        self.minority_epochs = check_int("minority_epochs", self.minority_epochs, minimum=0)
        self.sweep_grid = check_choice("sweep_grid", self.sweep_grid, SWEEP_GRIDS)
        self.starts = check_int("starts", self.starts, minimum=1)
        check_choice("device", str(self.device).split(":")[0], DEVICE_CHOICES)
        self.threads = check_int("threads", self.threads, minimum=0)
        self.dpi = check_int("dpi", self.dpi, 30, 600)
        # The network configurations validate the data fields (data_dir, ...) now, not later.
        for alpha, classifier in ((0.0, "learned"), (self.alpha, "fixed_etf")):
            self.train_config(alpha, classifier)

    @property
    def all_lam_Hs(self) -> tuple[float, ...]:
        """``lam_Hs`` and ``lam_H``, largest first."""
        return tuple(sorted(set(self.lam_Hs) | {self.lam_H}, reverse=True))

    @property
    def seed_values(self) -> list[int]:
        """The seeds of the runs that compare: ``seed``, ..., ``seed + seeds - 1``."""
        return list(range(self.seed, self.seed + self.seeds))

    def train_config(self, alpha: float, classifier: str, mixup_points: int = 2,
                     seed: int | None = None) -> TrainConfig:
        """The :class:`~ufm.nets.TrainConfig` of one network run (``mixup_points``-point mixup;
        ``seed``: the reproduction's own by default)."""
        return TrainConfig(
            mixup_points=mixup_points,
            dataset=self.dataset,
            data_dir=self.data_dir,
            train_subset=self.train_subset,
            model=self.model,
            classifier=classifier,
            alpha=alpha,
            epochs=self.epochs,
            optimizer="sgd",
            lr=self.lr,
            momentum=0.9,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            schedule="cosine",
            seed=self.seed if seed is None else seed,
            device=self.device,
            threads=self.threads,
            measure_every=self.measure_every,
            checkpoint_every=self.checkpoint_every,
            lam_grid=self.net_lams,
            triple=self.triple,
            pairs_per_class_pair=self.pairs_per_class_pair,
            pairs_all_classes=self.pairs_all_classes,
            linearity_pairs=self.linearity_pairs,
        )


# The quick preset finishes within 10 minutes on a 2-core CPU (see README); the full preset
# is the dataclass default: larger problems, a 1-D CNN on mnist1d, focal loss learned too.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        "d": 16,
        "num_lams": 61,
        "learned_losses": ("ce", "label_smoothing"),
        "learned_tol": 1e-8,
        "dataset": "digits",
        "model": "mlp",
        "epochs": 150,
        "lr": 0.05,
        "measure_every": 15,
        "net_lams": 11,
        "seeds": 1,
        "minority_epochs": 0,
        "sweep_grid": "quick",
        "dpi": 110,
    },
}


def preset(name: str, **overrides: Any) -> ReproduceConfig:
    """The named preset ("quick" or "full") with ``overrides`` applied (field names)."""
    check_choice("preset", name, tuple(PRESETS))
    known = {f.name for f in dataclasses.fields(ReproduceConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown ReproduceConfig field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return ReproduceConfig(**{**PRESETS[name], **overrides})
