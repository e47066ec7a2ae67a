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
from .feature_comparison import compare_features, compare_mixed
from .features_file import SCHEMA_VERSION, MixedFeatures, read_features
from .measure import measure, measure_network
from .measure_settings import MeasureSettings, measurement_cost
from .measurement import Measurement
from .models import MODELS, LinearClassifier, MixupNet, build_model
from .probe import NetworkProbe, find_head
from .run import run_training

__all__ = [
    "DATASETS",
    "MODELS",
    "SCHEMA_VERSION",
    "Dataset",
    "LinearClassifier",
    "MeasureSettings",
    "Measurement",
    "MixedFeatures",
    "MixupNet",
    "NetworkProbe",
    "TrainConfig",
    "build_model",
    "compare_features",
    "compare_mixed",
    "find_head",
    "load_dataset",
    "measure",
    "measure_network",
    "measurement_cost",
    "read_features",
    "run_training",
]
