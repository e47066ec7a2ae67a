"""Shared by the tests of ``ufm.nets``: one torch thread, small measurement settings."""

from __future__ import annotations

import pytest
import torch

# Few pairs per measurement: the tests check the bookkeeping, not the statistics.
FAST_MEASUREMENT = {"pairs_per_class_pair": 3, "pairs_all_classes": 2, "linearity_pairs": 20}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The small networks run fastest on one thread, and two OpenMP threads spinning against
    other jobs on a shared 2-core machine made them up to 30 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The mixture measurement of mixup_points >= 3 runs with few sample triples per class triple.
FAST_MIXTURES = {**FAST_MEASUREMENT, "mixture_samples": 4}
