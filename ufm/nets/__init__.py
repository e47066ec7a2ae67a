"""Real networks trained with mixup, measured with the geometry the UFM predicts.

Data flows one way, one module per step:
:mod:`.config` (:class:`TrainConfig`) -> :mod:`.data` (:func:`load_dataset`) ->
:mod:`.models` (:func:`build_model`) -> :mod:`.mixup` and :mod:`.training` (the epoch loop,
checkpoints) -> :mod:`.measure` (neural collapse, calibration, agreement with the theory,
layer-wise linearity) -> :mod:`.run` (files on disk). :mod:`.command` is the ``ufm train``
subcommand.
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
