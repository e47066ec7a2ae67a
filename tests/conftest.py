"""Shared fixtures. Tests run on the CPU in float64 unless they say otherwise."""

import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    return np.random.default_rng(20240212)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
