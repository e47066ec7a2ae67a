"""Optimiser, learning-rate schedule, one epoch of mixup training, and checkpoints.

An epoch visits the training set in an order drawn from a ``numpy.random.Generator``; the
same generator draws the augmentation of a batch (with ``augment``: crops and flips,
:mod:`ufm.nets.augment`) and then its mixup partners and coefficients, so (seed, data,
configuration) fix a run on the CPU, and a run resumed from a checkpoint (which stores the
generator's state) continues exactly as if it had not stopped. With class pairing the same
generator draws the partners from the whole training set (:class:`ufm.nets.mixup.ClassPool`)
and then their augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..io import save_torch
from ..losses import MixupLoss
from .augment import augment_batch, check_augmentable
from .data import Dataset
from .mixup import MixturePlan, Mixup, MixupPlan, mixed_forward, mixture_loss
from .models import MixupNet

if TYPE_CHECKING:
    from .config import TrainConfig


def build_optimizer(model: MixupNet, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum, Adam or AdamW over the model's parameters (a fixed ETF is a buffer,
    so it is not among them). ``weight_decay`` is the L2 penalty for SGD and Adam and the
    decoupled decay for AdamW."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def learning_rate_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Factor on the base learning rate during 0-based ``epoch`` of ``epochs``.

    "cosine": (1 + cos(pi epoch / epochs)) / 2; "step": 0.1 from epoch epochs/2 on and 0.01
    from 3 epochs/4 on; "constant": 1.
    """
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** sum(epoch >= m for m in (epochs // 2, (3 * epochs) // 4))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """A per-epoch ``LambdaLR`` following :func:`learning_rate_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: learning_rate_factor(config.schedule, epoch, config.epochs)
    )


def train_epoch(
    model: MixupNet,
    data: Dataset,
    loss: MixupLoss,
    mixup: Mixup,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    batch_size: int,
    device,
    augment: bool = False,
) -> float:
    """One pass over the training set in train mode; returns the mean mixup loss.

    A pair plan is trained with the loss's own mixup form ``loss(z, c, c', lam)``; a plan of
    m > 2 points with :func:`ufm.nets.mixup.mixture_loss`.

    With ``augment`` every batch is cropped and flipped (:func:`ufm.nets.augment.augment_batch`,
    drawn from ``rng`` before the mixup plan) and then mixed; ``data`` itself is untouched,
    so the measurements, which read it, see the clean images. Without it nothing is drawn
    for augmentation and the epoch is what it always was.

    With class pairing (:class:`ufm.nets.mixup.Mixup` ``pairing = "class"``) each partner is
    a training sample the plan names (``plan.extra``), read from ``data``, augmented like the
    batch, and run after the batch (:func:`_with_partners`); the loss's first class is the
    batch sample's, its second the partner's.

    A last batch of a single sample is skipped (BatchNorm cannot normalise it).
    """
    if augment:
        check_augmentable(data.input_shape)
    model.train()
    order = torch.as_tensor(rng.permutation(len(data.y_train)))
    total = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if len(rows) < 2:
            continue
        x = data.x_train[rows].to(device, non_blocking=True)
        y = data.y_train[rows].to(device, non_blocking=True)
        if augment:
            x = augment_batch(x, rng)
        plan = mixup.plan(y, rng)
        mixed_x, mixed_y = x, y  # the rows the plan's partners index
        if isinstance(plan, MixupPlan) and plan.extra is not None:
            mixed_x, mixed_y = _with_partners(data, plan.extra, x, y, rng, augment, device)
        logits = mixed_forward(model, mixed_x, plan, mixup.layer) if mixup.mixes else model(x)
        if isinstance(plan, MixturePlan):
            value = mixture_loss(loss, logits, y[plan.members.to(device)], plan.weights).mean()
        else:
            lam = plan.lam.to(device=device, dtype=logits.dtype)
            value = loss.mean(logits, y, mixed_y[plan.partner.to(device)], lam)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        total += value.detach() * len(rows)
        seen += len(rows)
    return float(total) / seen


def _with_partners(
    data: Dataset, extra: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
    rng: np.random.Generator, augment: bool, device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch followed by the partners' training rows ``extra`` (inputs and labels), the
    partners cropped and flipped with ``augment`` (drawn from ``rng`` after the plan)."""
    partner_x = data.x_train[extra].to(device, non_blocking=True)
    if augment:
        partner_x = augment_batch(partner_x, rng)
    partner_y = data.y_train[extra].to(device, non_blocking=True)
    return torch.cat([x, partner_x]), torch.cat([y, partner_y])


@dataclass
class TrainingState:
    """Progress that a checkpoint must carry besides the model and optimiser."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def save_checkpoint(path: str | Path, model, optimizer, scheduler, rng, state: TrainingState):
    """Write model, optimiser, scheduler, generator state and progress atomically."""
    return save_torch(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng.bit_generator.state,
            "epoch": state.epoch,
            "history": state.history,
            "seconds": state.seconds,
        },
    )


def load_checkpoint(path: str | Path, model, optimizer, scheduler, rng, device) -> TrainingState:
    """Restore what :func:`save_checkpoint` wrote; returns the progress."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng.bit_generator.state = saved["rng"]
    return TrainingState(saved["epoch"], list(saved["history"]), float(saved["seconds"]))
