"""``ufm solve``: result folder, resume, and refusals before any work."""

import json

import numpy as np
import pytest

from ufm.cli import main
from ufm.io import read_csv
from ufm.solver.results import load_result


def test_writes_a_complete_result_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["solve", "--out", str(out), "--K", "4", "--d", "5", "--num-lams", "5",
                 "--no-progress", "--tol", "1e-11"])
    assert code == 0
    assert "relative distance to the exact theory" in capsys.readouterr().out
    for name in ("config.json", "arrays.npz", "history.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()  # a converged run leaves no checkpoint behind
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "converged" and summary["theory_distance"] < 1e-10
    history = read_csv(out / "history.csv")
    assert float(history[-1]["grad_norm"]) <= 1e-11 < float(history[0]["grad_norm"])
    result = load_result(out)
    assert result.H.shape == (80, 5) and result.config.K == 4
    with np.load(out / "arrays.npz") as arrays:
        assert set(arrays.files) == {"H", "W", "c", "c_prime", "lam"}


def test_resume_after_max_iters(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["solve", "--out", str(out), "--K", "6", "--d", "8", "--classifier", "learned",
            "--tol", "1e-8", "--no-progress"]
    assert main(args + ["--max-iters", "3"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert first["stop_reason"] == "max_iters" and first["iterations"] == 3
    assert "continue with --resume" in capsys.readouterr().out
    assert main(["solve", "--resume", str(out), "--max-iters", "500", "--no-progress"]) == 0
    final = json.loads((out / "summary.json").read_text())
    assert final["stop_reason"] == "converged" and final["iterations"] > 3
    assert json.loads((out / "config.json").read_text())["max_iters"] == 500


def test_toml_configuration(tmp_path):
    toml = tmp_path / "ufm.toml"
    toml.write_text('K = 3\nd = 4\nloss = "label_smoothing"\nloss_params = { eps = 0.05 }\n'
                    'lams = [0.25, 0.5]\npairs = "different"\n')
    out = tmp_path / "run"
    assert main(["solve", "--config", str(toml), "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["loss_params"] == {"eps": 0.05} and config["pairs"] == "different"
    assert load_result(out).H.shape == (6 * 2, 4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--method", "adam"], "method must be one of 'auto', 'newton', 'newton_cg', 'newton_gram', 'gd'; got 'adam'"),
        (["--loss", "hinge"], "unknown loss 'hinge'"),
        (["--K", "10", "--d", "5"], "d must be >= K-1 = 9"),
        (["--alpha", "-1"], "alpha must lie in (0, inf), got -1.0"),
        (["--lam-W", "-1"], "lam_W must lie in [0, inf), got -1.0"),
        (["--device", "cuda"], "CUDA is not available here"),
    ],
)
def test_bad_configuration_is_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["solve", "--out", str(out), "--no-progress"] + argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_resume_refusals(tmp_path, capsys):
    assert main(["solve", "--resume", str(tmp_path)]) == 2
    assert "holds no solve (no config.json there)" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["solve", "--out", str(out), "--K", "3", "--d", "3", "--no-progress", "--max-iters", "1"]) == 0
    assert main(["solve", "--resume", str(out), "--K", "5"]) == 2
    assert "--resume can only change" in capsys.readouterr().err
    assert main(["solve"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


def test_checkpoint_kept_when_asked_or_when_the_run_can_continue(tmp_path):
    base = ["solve", "--K", "4", "--d", "5", "--num-lams", "5", "--no-progress"]
    kept = tmp_path / "kept"
    assert main(base + ["--out", str(kept), "--keep-checkpoint"]) == 0
    assert json.loads((kept / "summary.json").read_text())["stop_reason"] == "converged"
    assert (kept / "checkpoint.pt").is_file()
    limited = tmp_path / "limited"
    assert main(base + ["--out", str(limited), "--max-iters", "1"]) == 0
    assert (limited / "checkpoint.pt").is_file()  # --resume needs it


def test_another_configuration_in_out_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["solve", "--out", str(out), "--K", "4", "--d", "5", "--num-lams", "5", "--no-progress"]
    assert main(base) == 0
    before = (out / "arrays.npz").read_bytes()
    capsys.readouterr()
    assert main(base + ["--d", "6"]) == 2
    error = capsys.readouterr().err
    assert "holds a solve with another configuration" in error and "d" in error and "--force" in error
    assert (out / "arrays.npz").read_bytes() == before  # untouched
    assert main(base + ["--parallel", "kernels"]) == 0  # how it runs is not what it computes
    assert main(base + ["--d", "6", "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["d"] == 6


def test_non_empty_folder_without_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "paper.txt").write_text("mine")
    assert main(["solve", "--out", str(out), "--K", "3", "--d", "3", "--no-progress"]) == 2
    assert "non-empty folder without the config.json" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["paper.txt"]


def test_impossible_etf_is_announced_at_the_start_and_in_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", "--out", str(out), "--K", "6", "--d", "3", "--classifier", "learned",
                 "--max-iters", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: d = 3 < K - 1 = 5" in captured.err
    assert json.loads((out / "summary.json").read_text())["etf_possible"] is False
    fine = tmp_path / "fine"
    assert main(["solve", "--out", str(fine), "--K", "4", "--d", "3", "--no-progress",
                 "--classifier", "learned", "--max-iters", "2"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((fine / "summary.json").read_text())["etf_possible"] is True


def test_help_lists_allowed_values_and_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from ufm.losses import LOSSES

    for flag, values in (("--loss", ", ".join(sorted(LOSSES))),
                         ("--classifier", "fixed_etf, fixed, learned"),
                         ("--method", "auto, newton, newton_cg, newton_gram, gd"), ("--parallel", "chunks, kernels")):
        assert f"one of {values}; default:" in text, flag
    assert "(default: None)" not in text and text.count("default: 'ce'") == 1
    assert "seconds between checkpoints (default: 60.0)" in text
