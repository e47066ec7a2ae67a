"""``ufm theory``: printed table, written files, configuration from TOML, clear refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ufm.cli import main
from ufm.io import read_csv
from ufm.theory import ce_coefficients


def test_prints_and_writes_full_precision(tmp_path, capsys):
    out = tmp_path / "theory"
    code = main(["theory", "--K", "10", "--lam-H", "5e-3", "--num-lams", "11", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    # 15 significant digits, those of docs/theory.md section 2 to within one unit of the last:
    # the exact value
    # 5.3154645627440727 lies 2.3e-15 (2.6 ulps) below the point where the 15th digit would
    # round up, so the printed string itself depends on the float64 result's last ulps
    assert "same class (any lam): a = " in printed
    printed_a = printed.split("same class (any lam): a = ", 1)[1].split(",", 1)[0]
    assert len(printed_a.replace(".", "")) == 15
    assert float(printed_a) == pytest.approx(5.31546456274407, rel=0, abs=1e-14)
    rows = read_csv(out / "theory.csv")
    assert [float(r["lam"]) for r in rows] == pytest.approx(np.linspace(0, 1, 11))
    a, b = ce_coefficients(10, np.linspace(0, 1, 11), 5e-3)
    assert [float(r["a"]) for r in rows] == list(a)  # repr round-trips float64 exactly
    summary = json.loads((out / "theory.json").read_text())
    assert summary["K"] == 10 and len(summary["rows"]) == 11
    config = json.loads((out / "config.json").read_text())
    assert config["lam_H"] == 5e-3 and config["loss"] == "ce"


def test_toml_configuration_and_override(tmp_path, capsys):
    toml = tmp_path / "job.toml"
    toml.write_text('K = 4\nd = 5\nloss = "label_smoothing"\nloss_params = { eps = 0.2 }\n'
                    'lams = [0.0, 0.5, 1.0]\n')
    assert main(["theory", "--config", str(toml), "--lam-H", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "K=4" in printed and "lam_H=0.1" in printed and "label_smoothing (eps=0.2)" in printed


@pytest.mark.parametrize(
    "argv,message",
    [
        (["theory", "--K", "1"], "K must be >= 2, got 1"),
        (["theory", "--K", "10", "--d", "5"], "d must be >= K-1 = 9"),
        (["theory", "--lam-H", "0"], "lam_H must lie in (0, inf), got 0.0"),
        (["theory", "--loss", "focal"], "loss must be one of 'ce', 'label_smoothing', 'mse'"),
        (["theory", "--loss", "nope"], "unknown loss 'nope'"),
        (["theory", "--lams", "0.2", "1.5"], "lams must lie in [0, 1], got 1.5"),
        (["theory", "--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_toml_field_and_output_is_a_file(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("K = 3\nwidth = 7\n")
    assert main(["theory", "--config", str(toml)]) == 2
    assert "unknown configuration field(s) 'width'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["theory", "--out", str(blocker)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "ufm.cli", "theory", "--num-lams", "3"],
                            capture_output=True, text=True, check=True)
    assert "lam" in result.stdout and "0.500" in result.stdout
