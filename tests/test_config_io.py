import errno
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ufm.config import config_from_dict, config_to_dict, load_config
from ufm.devices import blas_threads, resolve_device, resolve_dtype
from ufm.io import (
    WriteError,
    atomic_path,
    check_run_config,
    check_writable,
    is_complete,
    os_error_text,
    removed_on_failure,
    to_jsonable,
    write_json,
)


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


def test_blas_threads_limit_numpys_blas_inside_the_block_only():
    from threadpoolctl import threadpool_info

    def counts():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = counts()
    assert before, "numpy's BLAS is found"
    with blas_threads(1):
        assert counts() == [1] * len(before)
    assert counts() == before
    with blas_threads(0):
        assert counts() == before


def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path, full_disk):
    full_disk("summary.json")
    with pytest.raises(WriteError) as caught:
        write_json(tmp_path / "summary.json", {"x": 1})
    assert str(caught.value) == f"cannot write {str(tmp_path / 'summary.json')!r}: No space left on device"
    assert os_error_text(caught.value) == str(caught.value) and list(tmp_path.iterdir()) == []
    plain = PermissionError(errno.EACCES, "Permission denied", "/x/y")
    assert os_error_text(plain) == "Permission denied: '/x/y'"


def test_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ValueError, match="cannot write into .*: Read-only file system"):
        check_writable(tmp_path / "new")
    with pytest.raises(ValueError, match="cannot write into"):
        check_run_config(tmp_path / "new", {"K": 3}, "a solve", force=True)
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot make the folder .*file' is not a directory"):
        check_writable(tmp_path / "file" / "run")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot write into .*Permission denied"):
            check_writable(locked / "run")
    finally:
        locked.chmod(0o755)


def test_a_folder_without_results_or_of_another_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"K": 1000, "d": 1000}))
    # no result file: a run that stopped before its first result, free for any configuration
    check_run_config(tmp_path, {"K": 3, "d": 3}, "a solve", results=("summary.json",))
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a solve with another configuration .*K, d"):
        check_run_config(tmp_path, {"K": 3, "d": 3}, "a solve", results=("summary.json",))
    with pytest.raises(ValueError, match="holds another kind of run"):
        check_run_config(tmp_path, {"K": 3, "lam_H": 1.0, "num_lams": 3}, "a theory table",
                         results=("summary.json",))
    (tmp_path / "summary.json").unlink()
    with pytest.raises(ValueError, match="holds another kind of run"):  # no results named:
        check_run_config(tmp_path, {"grid": {}}, "a sweep")  # config.json always counts


def test_what_a_failed_block_added_is_removed(tmp_path):
    new = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt), removed_on_failure(new):
        new.mkdir()
        (new / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError), removed_on_failure(old):
        (old / "sub").mkdir()
        (old / "sub" / "a.csv").write_text("x")
        raise RuntimeError
    assert [p.name for p in old.iterdir()] == ["mine.txt"]
    with pytest.raises(RuntimeError), removed_on_failure(old, keep_if=lambda: True):
        (old / "checkpoint.pt").write_text("x")
        raise RuntimeError
    assert (old / "checkpoint.pt").is_file()
