"""Running a network for measurements: eval mode, batches of rows, mixed inputs.

Shared by :mod:`ufm.nets.measure`, :mod:`ufm.nets.linearity` and :mod:`ufm.nets.mixtures`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for every module inside the block; each module's own mode is restored."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def mixed_inputs(x_i: torch.Tensor, x_j: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
    """(P * L, ...) inputs lam_l x_i + (1 - lam_l) x_j, pair-major."""
    lam = lams.to(x_i.dtype).reshape(1, -1, *([1] * (x_i.ndim - 1)))
    mixed = lam * x_i.unsqueeze(1) + (1 - lam) * x_j.unsqueeze(1)
    return mixed.reshape(-1, *x_i.shape[1:])


def pair_chunks(n_pairs: int, n_lams: int, batch_size: int) -> Iterator[slice]:
    return batches(n_pairs, max(1, batch_size // (n_lams + 2)))
