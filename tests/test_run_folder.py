"""``ufm.solver.run_to_folder``: the checks made before any work, and what a failed run leaves."""

from __future__ import annotations

import json

import pytest

import ufm.memory
from ufm.io import read_json
from ufm.solver import UFMConfig, load_result, run_folder, run_to_folder

SMALL = {"K": 4, "d": 5, "num_lams": 5}


def test_writes_what_ufm_solve_writes_and_removes_a_finished_checkpoint(tmp_path):
    result = run_to_folder(UFMConfig(**SMALL, tol=1e-11), tmp_path / "run")
    assert result.stop_reason == "converged"
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["arrays.npz", "config.json", "history.csv", "summary.json"]
    assert load_result(tmp_path / "run").H.shape == (80, 5)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    """A solve that dies in its first allocation used to leave its config.json, and the next
    solve of another configuration into the folder was refused."""
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(run_folder, "solve", out_of_memory)
    out = tmp_path / "huge"
    with pytest.raises(RuntimeError, match="can't allocate"):
        run_to_folder(UFMConfig(K=50, d=60), out)
    assert not out.exists()
    # into a folder that existed, only what the run added goes
    out.mkdir()
    (out / "config.json").write_text(json.dumps(run_folder.config_to_dict(UFMConfig(K=50, d=60))))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        run_to_folder(UFMConfig(K=50, d=60), out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    monkeypatch.undo()
    assert run_to_folder(UFMConfig(**SMALL), tmp_path / "huge2").stop_reason == "converged"


def test_a_killed_run_without_results_does_not_pin_its_folder(tmp_path):
    """A run killed before its first checkpoint (SIGKILL, the out-of-memory killer: no code
    runs) leaves config.json alone; another configuration may start there."""
    out = tmp_path / "killed"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({**SMALL, "K": 1000, "d": 1000}))
    assert run_to_folder(UFMConfig(**SMALL), out).stop_reason == "converged"
    assert read_json(out / "config.json")["K"] == 4
    # a folder with results still refuses another configuration
    with pytest.raises(ValueError, match="another configuration"):
        run_to_folder(UFMConfig(**{**SMALL, "d": 6}), out)


def test_a_checkpoint_is_kept_when_the_run_fails_after_it(tmp_path, monkeypatch):
    """A fresh run whose results cannot be written keeps the checkpoint it stopped with:
    a resume writes them later."""
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder.UFMResult, "save", disk_full)
    out = tmp_path / "run"
    config = UFMConfig(**SMALL, classifier="learned", max_iters=2)
    with pytest.raises(OSError):
        run_to_folder(config, out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json"]
    monkeypatch.undo()
    assert run_to_folder(config, out, resume=True).stop_reason == "max_iters"
    assert load_result(out).summary["iterations"] == 2


@pytest.mark.parametrize("every", [-1.0, 0.0, float("nan")])
def test_the_checkpoint_interval_must_be_positive(tmp_path, every):
    with pytest.raises(ValueError, match="checkpoint_every must"):
        run_to_folder(UFMConfig(**SMALL), tmp_path / "run", checkpoint_every=every)
    assert not (tmp_path / "run").exists()


def test_resume_says_why_it_cannot_continue(tmp_path):
    with pytest.raises(ValueError, match="holds no solve"):
        run_folder.check_resumable(tmp_path)
    done = tmp_path / "done"
    run_to_folder(UFMConfig(**SMALL), done)
    with pytest.raises(ValueError, match=r"has finished \(converged\) and kept no checkpoint.pt"):
        run_to_folder(UFMConfig(**SMALL), done, resume=True)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text(json.dumps(run_folder.config_to_dict(UFMConfig(**SMALL))))
    with pytest.raises(ValueError, match="stopped before its first checkpoint"):
        run_to_folder(UFMConfig(**SMALL), stopped, resume=True)
    limited = tmp_path / "limited"
    run_to_folder(UFMConfig(**SMALL, classifier="learned", max_iters=1), limited)
    with pytest.raises(ValueError, match="fields that differ: lam_H"):
        run_to_folder(UFMConfig(**SMALL, classifier="learned", lam_H=0.1), limited, resume=True)
    resumed = run_to_folder(UFMConfig(**SMALL, classifier="learned", max_iters=500), limited,
                            resume=True)
    assert resumed.stop_reason == "converged" and read_json(limited / "config.json")["max_iters"] == 500


def test_too_large_a_solve_is_refused_before_its_folder_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(ufm.memory, "available_memory", lambda device: 16 * 10**9)
    out = tmp_path / "big"
    with pytest.raises(ValueError, match=r"the solve needs about 3\d\d\.\d GB .* but 16\.0 GB is "
                                         r"available .*--ignore-memory-check"):
        run_to_folder(UFMConfig(K=1000, d=1000), out)
    assert not out.exists()
    monkeypatch.setattr(ufm.memory, "available_memory", lambda device: 1)
    with pytest.raises(ValueError, match="needs about"):
        run_to_folder(UFMConfig(**SMALL), out)
    assert run_to_folder(UFMConfig(**SMALL), out, check_memory=False).stop_reason == "converged"
