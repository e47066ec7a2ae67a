"""``scripts/bench_alternating.py``: two source trees timed on the same solves in turn.

The two trees here hold the same package (the baseline links to it), so both must reach the
same stop and iteration count, and each ratio must be the quotient of the recorded seconds.
"""

import argparse
import json

import pytest
from scripts_support import SCRIPTS, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_alternating.py")


def test_cases_are_named_solve_arguments_without_the_scripts_own(bench):
    assert bench.parse_case("K4 = --K 4 --d 5") == ("K4", ["--K", "4", "--d", "5"])
    for bad in ("--K 4", "name=", "=--K 4", "K=4 d=5=--K 4"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=ARGS"):
            bench.parse_case(bad)
    for reserved in ("K4=--K 4 --out somewhere", "K4=--K 4 --out=somewhere"):
        with pytest.raises(argparse.ArgumentTypeError, match="--out"):
            bench.parse_case(reserved)
    with pytest.raises(argparse.ArgumentTypeError, match="refuses"):
        bench.parse_case("typo=--K 4 --dd 5")


def test_alternating_runs_are_recorded_and_compared(bench, tmp_path, capsys):
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "ufm").symlink_to(SCRIPTS.parent / "ufm")
    out = tmp_path / "record.json"
    args = ["--baseline", str(baseline), "--baseline-label", "same code", "--pairs", "2",
            "--case", "tiny=--K 3 --d 4 --num-lams 3",
            "--case", "short=--K 3 --d 4 --num-lams 3 --classifier learned --max-iters 1",
            "--out", str(out)]
    record = bench.main(args)
    assert json.loads(out.read_text())["cases"][0]["name"] == "tiny"
    case = record["cases"][0]
    runs = case["runs"]
    assert len(runs["candidate"]) == len(runs["baseline"]) == 2
    for a, b, ratio in zip(runs["candidate"], runs["baseline"], case["ratio"]):
        assert ratio == pytest.approx(a["seconds"] / b["seconds"], rel=1e-12)
        assert a["stop_reason"] == b["stop_reason"] == "converged"
        assert a["exit_code"] == b["exit_code"] == 0
        assert a["peak_mb"] > 10 and b["peak_mb"] > 10
    assert case["same_stop_and_iterations"]
    # a solve stopped short of its tolerance is recorded with its stop reason
    short = record["cases"][1]["runs"]["candidate"][0]
    assert short["stop_reason"] == "max_iters" and short["exit_code"] == 0
    assert min(case["ratio"]) == case["ratio_range"][0] <= case["ratio_median"]
    assert "tiny" in capsys.readouterr().out
    # a second run does not replace the record without --force
    with pytest.raises(SystemExit):
        bench.main(args)
    assert json.loads(out.read_text())["baseline"] == "same code"


def test_a_tree_without_ufm_is_refused_before_any_run(bench, tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match="no ufm package"):
        bench.source_tree(str(tmp_path))
