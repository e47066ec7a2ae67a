"""How much memory a training run of a :class:`~.config.TrainConfig` needs, before its model
is built.

:func:`training_memory` builds the run's network on PyTorch's ``meta`` device, which has
shapes but no storage, to count its parameters P exactly for every model, then counts in
float32:

* the parameters and buffers, their gradients and the optimizer's state (SGD with momentum:
  one more copy; Adam and AdamW: two);
* a fixed simplex-ETF classifier's construction: the K x d frame and its Haar rotation,
  three d x d float64 matrices (:func:`ufm.etf.simplex_etf`);
* the features of a training batch (``batch_size`` x ``feature_dim``: the forward pass, its
  mixup partner, the backward pass, the logits' gradient);
* the mixed features of the measurement (:func:`~.measure_settings.measurement_cost`
  samples of ``feature_dim`` values, in float32 and once in float64 for the cell means).

The activations of hidden layers and the data set (already in memory when the estimate is
made) are left out: the estimate is the order of the run's size, which catches a
``feature_dim`` or ``width`` far beyond the machine (:func:`ufm.memory.check_memory`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..memory import MemoryEstimate
from .config import TrainConfig
from .measure_settings import measurement_cost
from .models import build_model

FLOAT_BYTES = 4  # the networks train in float32
BATCH_FEATURE_COPIES = 4  # forward, mixup partner, backward, logit gradient
WHAT_TO_LOWER = "lower feature_dim, width, depth, batch_size or pairs_all_classes"


def training_memory(config: TrainConfig, input_shape: Sequence[int], num_classes: int) -> MemoryEstimate:
    """Bytes of the large arrays of training ``config`` on inputs of ``input_shape`` (one
    sample's) with ``num_classes`` classes (module docstring), by part."""
    learned_head = dataclasses.replace(config, classifier="learned")  # a fixed ETF needs values
    with torch.device("meta"):
        model = build_model(learned_head, tuple(input_shape), num_classes)
    K, d = num_classes, config.feature_dim
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    trained = parameters - (K * d if config.classifier == "fixed_etf" else 0)
    states = {"sgd": 1 if config.momentum > 0 else 0, "adam": 2, "adamw": 2}[config.optimizer]
    parts = {
        "parameters and buffers": (parameters + buffers) * FLOAT_BYTES,
        "gradients": trained * FLOAT_BYTES,
        "optimizer state": states * trained * FLOAT_BYTES,
        "features of a batch": BATCH_FEATURE_COPIES * config.batch_size * d * FLOAT_BYTES,
    }
    if config.classifier == "fixed_etf":
        parts["simplex ETF and its rotation (3 d x d)"] = (K * d + 3 * d * d) * 8
    samples = measurement_cost(config.measure_settings(model.num_blocks), num_classes)["mixtures"]
    parts["measured mixed features"] = samples * d * (FLOAT_BYTES + 8)
    return MemoryEstimate(parts)
