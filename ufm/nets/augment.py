"""Standard CIFAR augmentation of a training batch: random crop with padding, horizontal flip.

Every image of the batch is padded with ``padding`` zeros on each side, a crop of its
original size is taken at an offset drawn uniformly from {0, ..., 2 ``padding``} in each
direction, and it is mirrored left-right with probability 1/2: the augmentation of
Zagoruyko & Komodakis ("Wide residual networks", BMVC 2016) and of He et al. ("Deep residual
learning for image recognition", CVPR 2016), which Fisher, Meng & Papyan (ICLR 2024) train
with.

The inputs here are already standardised per channel, so a zero of the padding is the
channel's training mean (torchvision's ``RandomCrop(32, padding=4)`` pads the raw image with
black, which standardises to a value below the mean); the geometry of the augmentation is
the same.

All draws come from the run's ``numpy.random.Generator`` (offsets, then flips, one batch at a
time), so an augmented run is fixed by its seed and resumes exactly from a checkpoint. Only
training batches are augmented (:func:`ufm.nets.training.train_epoch`), before mixing; the
measurements read the clean ``x_train`` and ``x_test``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_int

PADDING = 4
"""Zeros added on each side before the random crop (the standard CIFAR setting)."""
AUGMENTED_SIZE = (32, 32)
"""The image size (H, W) the augmentation is defined for: CIFAR's 32x32."""


def check_augmentable(input_shape: Sequence[int], dataset: str = "") -> None:
    """Refuse inputs the crop-and-flip augmentation does not apply to (of ``dataset``, named in
    the message where given).

    Raises
    ------
    ValueError
        Unless ``input_shape`` is an image (C, 32, 32): signals (C, L) have no flip or crop of
        this kind, and smaller images (8x8 digits, 28x28 MNIST) are not the setting of the
        4-pixel CIFAR crop.
    """
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 3 or shape[1:] != AUGMENTED_SIZE:
        raise ValueError(
            f"augment (random {PADDING}-pixel crop and horizontal flip) applies to images of "
            f"shape (C, 32, 32) only, as in cifar10 and cifar100; got inputs of shape {shape}"
            + (f" (dataset {dataset!r})" if dataset else "")
        )


def draw_crop_flip(
    batch: int, rng: np.random.Generator, padding: int = PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (batch, 2) in [0, 2 ``padding``] (rows, columns) and flips (batch,) bool.

    The offsets are drawn first, then the flips; these are all the draws of one batch.
    """
    offsets = rng.integers(0, 2 * padding + 1, size=(batch, 2))
    flips = rng.random(batch) < 0.5
    return offsets, flips


def crop_flip(
    x: torch.Tensor, offsets: np.ndarray, flips: np.ndarray, padding: int = PADDING
) -> torch.Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its zero-padded version, then flip.

    Image ``b`` of the result is ``pad(x[b])[:, r:r + H, c:c + W]`` with ``(r, c) =
    offsets[b]``, mirrored along the width where ``flips[b]``; one gather on ``x``'s device.
    """
    B, _, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.as_tensor(offsets, dtype=torch.int64, device=x.device)
    flips = torch.as_tensor(flips, dtype=torch.bool, device=x.device)
    rows = offsets[:, :1] + torch.arange(H, device=x.device)  # (B, H)
    columns = torch.arange(W, device=x.device).expand(B, W)
    columns = torch.where(flips[:, None], columns.flip(1), columns) + offsets[:, 1:]  # (B, W)
    samples = torch.arange(B, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[samples, channels, rows[:, None, :, None], columns[:, None, None, :]]


def augment_batch(
    x: torch.Tensor, rng: np.random.Generator, padding: int = PADDING
) -> torch.Tensor:
    """Random crop of the zero-padded images and horizontal flip, drawn from ``rng``.

    Parameters
    ----------
    x : images (B, C, H, W), on any device.
    rng : the run's generator; draws :func:`draw_crop_flip`.
    padding : zeros on each side, >= 0 (0 leaves only the flip).
    """
    padding = check_int("padding", padding, minimum=0)
    if x.ndim != 4:
        raise ValueError(f"augment_batch needs images (B, C, H, W), got shape {tuple(x.shape)}")
    offsets, flips = draw_crop_flip(len(x), rng, padding)
    return crop_flip(x, offsets, flips, padding)
