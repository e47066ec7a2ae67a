import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ufm.config import config_from_dict, config_to_dict, load_config
from ufm.devices import resolve_device, resolve_dtype
from ufm.io import atomic_path, is_complete, to_jsonable, write_json


@dataclass
class Example:
    n: int = 3
    rate: float = 0.5
    grid: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("n = 4\nrate = 1\ngrid = [0, 0.5]\n")
    config = load_config(Example, path, {"rate": 0.25})
    assert config == Example(n=4, rate=0.25, grid=(0.0, 0.5))
    assert isinstance(config.grid[0], float)
    assert config_to_dict(config) == {"n": 4, "rate": 0.25, "grid": [0.0, 0.5]}
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        config_from_dict(Example, {"n": 0})


def test_invalid_toml_is_reported(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("n = = 4\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(Example, path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "summary.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert not is_complete(tmp_path)
    write_json(target, {"x": np.float64(1.5), "t": torch.tensor([1, 2]), "bad": float("nan")})
    assert json.loads(target.read_text()) == {"x": 1.5, "t": [1, 2], "bad": "nan"}
    assert is_complete(tmp_path)
    assert to_jsonable(np.int64(3)) == 3
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_devices_and_dtypes():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="device must be one of 'auto', 'cpu', 'cuda', 'mps'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'float64'; got 'half'"):
        resolve_dtype("half")
