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


def crash_in_epoch(config, folder, monkeypatch, epoch: int) -> None:
    """Run ``ufm.nets.run_training`` of ``config`` into ``folder`` with a crash at the start
    of training epoch ``epoch`` (1-based), as an interrupted run leaves its folder; the
    training loop is restored afterwards."""
    from ufm.nets import run as run_module
    from ufm.nets import run_training

    original, calls = run_module.train_epoch, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_epoch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, folder, progress=False)
    monkeypatch.setattr(run_module, "train_epoch", original)
