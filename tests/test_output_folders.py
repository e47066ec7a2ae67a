"""Every command's output folder: checked before any work (writable, free or holding the same
configuration), nothing left behind that blocks a rerun, the memory a job needs checked
before any allocation, and OS errors (read-only folder, full disk) as one line with exit 2."""

from __future__ import annotations

import errno
import json
import tempfile

import numpy as np
import pytest
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401  (autouse fixture)

from ufm.cli import main
from ufm.io import read_json
from ufm.nets import run as nets_run
from ufm.nets.measurement import Measurement
from ufm.solver import load_result
from ufm.solver import run as solver_run

SOLVE = ["solve", "--K", "4", "--d", "5", "--num-lams", "5", "--no-progress"]
TRAIN_FLAGS = ["--pairs-all-classes", str(FAST_MEASUREMENT["pairs_all_classes"]),
               "--pairs-per-class-pair", str(FAST_MEASUREMENT["pairs_per_class_pair"]),
               "--linearity-pairs", str(FAST_MEASUREMENT["linearity_pairs"]), "--no-progress"]


def _available_memory(monkeypatch, size: int) -> None:
    """Make the machine report ``size`` bytes of available memory."""
    import ufm.memory

    monkeypatch.setattr(ufm.memory, "available_memory", lambda device: size)


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.fixture
def read_only_file_system(monkeypatch):
    """Every new file fails as on a read-only file system (the up-front check's probe)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def _command(name: str, tmp_path, out) -> list[str]:
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('[base]\nK = 3\nd = 3\n\n[grid]\nlam_H = [0.005]\n')
    return {
        "theory": ["theory", "--out", str(out)],
        "solve": [*SOLVE, "--out", str(out)],
        "train": ["train", "--out", str(out), "--epochs", "1", *TRAIN_FLAGS],
        "sweep": ["sweep", "--config", str(sweep_file), "--out", str(out), "--no-progress"],
        "reproduce": ["reproduce", "--quick", "--out", str(out), "--no-progress"],
        "figures": ["figures", "--from", str(tmp_path / "results"), "--out", str(out)],
        "compare": ["compare", "--features", str(tmp_path / "f.npz"), "--out", str(out)],
    }[name]


@pytest.mark.parametrize(
    "name", ["theory", "solve", "train", "sweep", "reproduce", "figures", "compare"])
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(
        name, tmp_path, capsys, read_only_file_system):
    out = tmp_path / "out"
    assert main(_command(name, tmp_path, out)) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"ufm {name}: error: cannot write into ") and "Read-only" in line
    assert capsys.readouterr().out == ""  # theory printed its whole table first
    assert not out.exists()


def test_a_full_disk_is_one_line_and_the_rerun_is_free(tmp_path, capsys, monkeypatch, full_disk):
    """theory used to print its table, then a traceback, and leave config.json behind."""
    full_disk(".csv")
    out = tmp_path / "theory"
    assert main(["theory", "--out", str(out), "--K", "5"]) == 2
    line = _one_error_line(capsys)
    assert line == (f"ufm theory: error: cannot write {str(out / 'theory.csv')!r}: "
                    "No space left on device")
    assert not out.exists()
    assert main([*SOLVE, "--out", str(tmp_path / "solve")]) == 2
    assert _one_error_line(capsys).startswith("ufm solve: error: cannot write ")
    monkeypatch.undo()
    assert main(["theory", "--out", str(out), "--K", "6"]) == 0


def test_theory_into_a_solve_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SOLVE, "--out", str(out)]) == 0
    config = (out / "config.json").read_text()
    capsys.readouterr()
    assert main(["theory", "--out", str(out)]) == 2
    assert "holds another kind of run" in _one_error_line(capsys)
    assert capsys.readouterr().out == ""
    assert (out / "config.json").read_text() == config
    assert load_result(out).config.K == 4  # still readable
    theory = tmp_path / "theory"
    assert main(["theory", "--out", str(theory), "--K", "5"]) == 0
    assert main(["theory", "--out", str(theory), "--K", "5"]) == 0  # the same table again
    assert main(["theory", "--out", str(theory), "--K", "6"]) == 2
    assert "another configuration (fields that differ: K, d)" in capsys.readouterr().err
    assert main(["theory", "--out", str(theory), "--K", "6", "--force"]) == 0


def test_solve_resume_says_the_run_has_finished(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SOLVE, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["solve", "--resume", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "has finished (converged)" in line and "kept no checkpoint.pt" in line
    assert "no checkpoint.pt and config.json" not in line
    (out / "summary.json").unlink()
    assert main(["solve", "--resume", str(out)]) == 2
    assert "stopped before its first checkpoint" in _one_error_line(capsys)


@pytest.mark.parametrize("every", ["-1", "0"])
def test_solve_refuses_a_checkpoint_interval_that_is_not_positive(tmp_path, capsys, every):
    out = tmp_path / "run"
    assert main([*SOLVE, "--out", str(out), "--checkpoint-every", every]) == 2
    assert f"checkpoint_every must lie in (0, inf), got {float(every)}" in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("size", ["1000", "100000"])
def test_solve_refuses_a_problem_beyond_the_memory(tmp_path, capsys, monkeypatch, size):
    if size == "1000":  # 337 GB: refused on any machine with less available
        _available_memory(monkeypatch, 64 * 10**9)
    out = tmp_path / "huge"
    assert main(["solve", "--out", str(out), "--K", size, "--d", size, "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("ufm solve: error: the solve needs about ") and " GB is available" in line
    assert "features H (n x d)" in line and "--ignore-memory-check" in line
    assert not out.exists()


def test_solve_runs_past_the_memory_check_when_told(tmp_path, capsys, monkeypatch):
    _available_memory(monkeypatch, 1000)
    assert main([*SOLVE, "--out", str(tmp_path / "a")]) == 2
    assert "needs about" in _one_error_line(capsys)
    assert main([*SOLVE, "--out", str(tmp_path / "a"), "--ignore-memory-check"]) == 0


def test_a_solve_that_fails_in_its_first_allocation_does_not_block_the_next(
        tmp_path, monkeypatch):
    """``ufm solve --out huge --K 1000 --d 1000`` that failed left config.json, and
    ``ufm solve --out huge --K 10 --d 16`` was refused as another configuration."""
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(solver_run, "build_problem", out_of_memory)
    huge = tmp_path / "huge"
    with pytest.raises(RuntimeError):
        main(["solve", "--out", str(huge), "--K", "1000", "--d", "1000", "--no-progress",
              "--ignore-memory-check"])
    monkeypatch.undo()
    assert main(["solve", "--out", str(huge), "--K", "10", "--d", "16", "--num-lams", "3",
                 "--no-progress"]) == 0
    assert read_json(huge / "config.json")["K"] == 10


def test_train_into_a_folder_of_other_files_is_refused(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    assert main(["train", "--out", str(notes), "--epochs", "1", *TRAIN_FLAGS]) == 2
    assert "non-empty folder without the config.json of a training run" in _one_error_line(capsys)
    assert [p.name for p in notes.iterdir()] == ["mine.txt"]


def test_train_refuses_a_model_beyond_the_memory(tmp_path, capsys):
    out = tmp_path / "huge"
    assert main(["train", "--out", str(out), "--feature-dim", "100000000", "--epochs", "1",
                 *TRAIN_FLAGS]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("ufm train: error: the training run needs about ")
    assert "GB is available" in line and "--ignore-memory-check" in line
    assert not out.exists()


def test_train_interrupted_prints_its_resume_command_which_continues_it(
        tmp_path, capsys, monkeypatch):
    real_epoch, epochs = nets_run.train_epoch, []

    def interrupted_in_epoch_two(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(nets_run, "train_epoch", interrupted_in_epoch_two)
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--epochs", "2", "--checkpoint-every", "1", *TRAIN_FLAGS]
    assert main(argv) == 130
    line = _one_error_line(capsys)
    assert line.endswith(f"Continue with: ufm train --resume --out {out}")
    monkeypatch.undo()
    assert main(line.split("Continue with: ufm ", 1)[1].split() + ["--no-progress"]) == 0
    assert read_json(out / "summary.json")["epochs"] == 2


def test_train_interrupted_before_its_first_checkpoint_leaves_a_free_folder(
        tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nets_run, "train_epoch", interrupted)
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--epochs", "1", *TRAIN_FLAGS]
    assert main(argv) == 130
    assert "nothing was kept; run the same command again" in _one_error_line(capsys)
    assert not out.exists()
    monkeypatch.undo()
    assert main(argv) == 0


def test_train_starts_again_where_a_run_stopped_before_its_first_checkpoint(tmp_path, capsys):
    """What a killed run leaves (config.json and metrics.csv, no checkpoint) was refused as
    'an unfinished run; pass --resume', and --resume found no checkpoint."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {"epochs": 100}}))
    (out / "metrics.csv").write_text("epoch\n1\n")
    assert main(["train", "--out", str(out), "--resume", *TRAIN_FLAGS]) == 2
    assert "stopped before its first checkpoint" in _one_error_line(capsys)
    assert main(["train", "--out", str(out), "--epochs", "1", *TRAIN_FLAGS]) == 0
    assert read_json(out / "config.json")["config"]["epochs"] == 1


def test_a_measurement_that_fails_to_save_can_be_saved_again(tmp_path, monkeypatch, full_disk):
    """``ufm compare --out`` takes only a new folder: a save that failed half way used to
    leave files, and the rerun was refused ('already holds files')."""
    measurement = Measurement({"amplification": 1.0}, {"coefficients_vs_lam": [{"lam": 0.5}]},
                              {"cells": {"means": np.zeros(3)}}, {"loss": "ce"})
    full_disk(".npz")
    out = tmp_path / "compared"
    with pytest.raises(OSError):
        measurement.save(out)
    assert not out.exists()
    monkeypatch.undo()
    measurement.save(out)
    assert read_json(out / "summary.json") == {"amplification": 1.0}


def test_sweep_points_check_their_memory_unless_told(tmp_path, capsys, monkeypatch):
    _available_memory(monkeypatch, 1000)
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('[base]\nK = 3\nd = 3\nnum_lams = 3\n\n[grid]\nlam_H = [0.005]\n')
    argv = ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "s"),
            "--executor", "debug", "--no-progress"]
    assert main(argv) == 1
    assert "failed: lam_H=0.005: ValueError: the solve needs about" in capsys.readouterr().out
    assert main([*argv, "--ignore-memory-check"]) == 0


def test_reproduce_checks_the_memory_of_every_run_unless_told(tmp_path, capsys, monkeypatch):
    """With 1000 bytes available the reproduction's first solve is refused before it allocates;
    --ignore-memory-check hands check_memory=False to the solver, network and sweep stages."""
    _available_memory(monkeypatch, 1000)
    argv = ["reproduce", "--quick", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(argv) == 2
    assert "the solve needs about" in capsys.readouterr().err
    from ufm.reproduce import network_stage, solver_stage, sweep_stage

    seen = {}

    def recorder(stage):
        def run(config, root, progress=True, log=print, check_memory=True):
            seen[stage] = check_memory
            raise KeyboardInterrupt  # stop after the first stage that is asked to run

        return run

    for stage in (solver_stage, network_stage, sweep_stage):
        monkeypatch.setattr(stage, "run", recorder(stage.__name__))
    assert main([*argv, "--ignore-memory-check"]) == 130
    assert seen == {"ufm.reproduce.solver_stage": False}
