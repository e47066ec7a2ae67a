"""Real networks trained with mixup, measured with the geometry the UFM predicts.

Data flows one way, one module per step:
:mod:`.config` (:class:`TrainConfig`) -> :mod:`.data` (:func:`load_dataset`) ->
:mod:`.models` (:func:`build_model`) -> :mod:`.mixup` and :mod:`.training` (the epoch loop,
checkpoints) -> :mod:`.measure` (neural collapse, calibration, layer-wise linearity; the
agreement with the theory in :mod:`.ufm_comparison`; 3-class mixtures in :mod:`.mixtures`)
-> :mod:`.run` (files on disk).
The ``ufm train`` subcommand is :mod:`ufm.commands.train`.
"""

from .config import TrainConfig
from .data import DATASETS, Dataset, load_dataset
from .measure import measure
from .models import MODELS, LinearClassifier, MixupNet, build_model
from .run import run_training

__all__ = [
    "DATASETS",
    "MODELS",
    "Dataset",
    "LinearClassifier",
    "MixupNet",
    "TrainConfig",
    "build_model",
    "load_dataset",
    "measure",
    "run_training",
]
