"""Shared by the tests of ``ufm.reproduce`` and ``ufm.plots``: one tiny reproduction per session.

The reproduction is built once (even when both test modules use it) and must not be modified;
a test that changes a reproduction copies it first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ufm.reproduce import ReproduceConfig, preset, reproduce

# Every size at its smallest: the tests check the pipeline and the files, not the statistics.
TINY = {
    "K": 4,
    "d": 4,
    "lam_Hs": (1e-2,),
    "channel_lam_Hs": (1e-2, 1e-4),
    "num_lams": 11,
    "projection_lams": 5,
    "solver_lams": 5,
    "learned_losses": ("ce",),
    "learned_tol": 1e-6,
    "max_iters": 100,
    "train_subset": 300,
    "epochs": 4,
    "measure_every": 2,
    "checkpoint_every": 2,
    "net_lams": 5,
    "pairs_per_class_pair": 3,
    "pairs_all_classes": 2,
    "linearity_pairs": 20,
    "device": "cpu",
    "dpi": 50,
}

_BUILT: dict[str, Path] = {}


def tiny_config(**overrides) -> ReproduceConfig:
    return preset("quick", **{**TINY, **overrides})


def run_tiny(out: Path, log=None, **overrides) -> dict:
    lines = [] if log is None else log
    return reproduce(tiny_config(**overrides), out, progress=False, log=lines.append)


def build_tiny(tmp_path_factory) -> Path:
    """A complete tiny reproduction, built once per session (each test module wraps this in a
    session fixture); read it, do not change it."""
    if "root" not in _BUILT:
        root = tmp_path_factory.mktemp("reproduction") / "tiny"
        run_tiny(root)
        _BUILT["root"] = root
    return _BUILT["root"]


def copy_of(root: Path, destination: Path) -> Path:
    shutil.copytree(root, destination)
    return destination
