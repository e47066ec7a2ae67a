"""Shared fixtures. Tests run on the CPU in float64 unless they say otherwise."""

import errno
import os

import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    return np.random.default_rng(20240212)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(suffix)``: from then on, every result file whose name ends in ``suffix``
    fails to be written as on a full disk (moving the written file into place raises ENOSPC);
    ``monkeypatch.undo()`` frees the disk again."""
    real_replace = os.replace

    def fill(suffix: str) -> None:
        def replace(source, target):
            if str(target).endswith(suffix):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(source, target)

        monkeypatch.setattr(os, "replace", replace)

    return fill
