"""``ufm sweep``: grids of solve/train jobs on submitit's local, debug and SLURM executors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ufm.cli import main
from ufm.io import read_csv, read_json
from ufm.sweep import load_sweep, point_job, point_name, read_table, run_sweep, sweep_from_dict
from ufm.sweep.executors import deal, make_executor, slurm_parameters, threads_per_point

BASE = {"K": 3, "d": 3, "num_lams": 5, "classifier": "learned", "tol": 1e-8}
SWEEP_TOML = """
[base]
K = 3
d = 3
num_lams = 5
classifier = "learned"
tol = 1e-8

[grid]
lam_H = [0.005, 0.01, 0.02]
"""


def _spec(grid, base=BASE, job=None, executor=None):
    data = {"base": dict(base), "grid": grid}
    if job:
        data["base"]["job"] = job
    if executor:
        data["executor"] = executor
    return sweep_from_dict(data)


def test_local_executor_end_to_end_with_a_failing_point_then_a_rerun(tmp_path):
    """Two worker processes; one point fails at run time (its folder path is a file), the
    others complete into folders identical to ``ufm solve``'s; the rerun runs only it."""
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(SWEEP_TOML)
    out = tmp_path / "sweep"
    blocked = out / "points" / "lam_H=0.01"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")

    # --force: the folder holds the blocking file but no sweep yet
    code = main(["sweep", "--config", str(sweep_file), "--out", str(out), "--jobs", "2",
                 "--no-progress", "--force"])
    assert code == 1  # one point failed
    rows = {r["point"]: r for r in read_csv(out / "sweep.csv")}
    assert list(rows) == ["lam_H=0.005", "lam_H=0.01", "lam_H=0.02"]
    assert rows["lam_H=0.01"]["status"] == "failed"
    assert "exists and is not a directory" in rows["lam_H=0.01"]["error"]
    for name in ("lam_H=0.005", "lam_H=0.02"):
        assert rows[name]["status"] == "done" and rows[name]["error"] == ""
        assert rows[name]["stop_reason"] == "converged"
        assert float(rows[name]["grad_norm"]) <= 1e-8
        assert float(rows[name]["etf_distance_W"]) < 1e-5  # a learned W becomes an ETF
    table = read_json(out / "sweep.json")
    assert table["counts"] == {"done": 2, "failed": 1, "interrupted": 0, "pending": 0}
    assert table["swept"] == ["lam_H"]
    assert (out / "sweep.toml").read_text() == SWEEP_TOML
    # two solve processes at once on the available cores: each got cores // 2 threads
    summary = read_json(out / "points" / "lam_H=0.005" / "summary.json")
    assert summary["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)

    # the point folder is exactly what `ufm solve` writes for the same configuration
    single = tmp_path / "single"
    assert main(["solve", "--config", str(_toml(tmp_path, {**BASE, "lam_H": 0.005})),
                 "--out", str(single), "--no-progress"]) == 0
    point = out / "points" / "lam_H=0.005"
    assert sorted(p.name for p in point.iterdir()) == sorted(p.name for p in single.iterdir())
    assert read_json(point / "config.json") == read_json(single / "config.json")
    with np.load(point / "arrays.npz") as a, np.load(single / "arrays.npz") as b:
        np.testing.assert_allclose(a["W"], b["W"], atol=1e-7)

    blocked.unlink()
    done_before = {n: (out / "points" / n / "summary.json").stat().st_mtime_ns
                   for n in ("lam_H=0.005", "lam_H=0.02")}
    assert main(["sweep", "--config", str(sweep_file), "--out", str(out), "--jobs", "2",
                 "--no-progress"]) == 0
    rows = {r["point"]: r for r in read_csv(out / "sweep.csv")}
    assert all(r["status"] == "done" for r in rows.values())
    for name, mtime in done_before.items():  # reused, not rerun
        assert (out / "points" / name / "summary.json").stat().st_mtime_ns == mtime


def _toml(tmp_path: Path, fields: dict) -> Path:
    path = tmp_path / "one.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + "\n")
    return path


def test_debug_executor_records_a_failure_and_reruns_only_it(tmp_path, monkeypatch):
    calls = []
    real = point_job._solve

    def flaky(config, out, resume, **options):
        calls.append(config["lam_H"])
        if config["lam_H"] == 0.01 and calls.count(0.01) == 1:
            raise RuntimeError("boom in the run")
        return real(config, out, resume, **options)

    monkeypatch.setattr(point_job, "_solve", flaky)
    spec = _spec({"lam_H": [0.005, 0.01], "loss": ["ce", "mse"]})
    rows = run_sweep(spec, tmp_path / "s", "debug", progress=False)
    status = {r["point"]: (r["status"], r["error"]) for r in rows}
    assert status["lam_H=0.01,loss=ce"] == ("failed", "RuntimeError: boom in the run")
    assert status["lam_H=0.01,loss=mse"] == ("done", None)
    assert status["lam_H=0.005,loss=mse"] == ("done", None)
    assert "boom in the run" in (tmp_path / "s/points/lam_H=0.01,loss=ce/error.txt").read_text()
    assert rows[0]["loss"] == "ce" and isinstance(rows[0]["final_loss"], float)
    assert len(calls) == 4
    rows = run_sweep(spec, tmp_path / "s", "debug", progress=False)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert len(calls) == 5  # only the failed point ran again
    assert not (tmp_path / "s/points/lam_H=0.01,loss=ce/error.txt").exists()


def test_interrupted_point_is_marked_so_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    calls = []

    def interrupted_once(config, out, resume, **options):
        calls.append(resume)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:  # as solve leaves it after Ctrl-C: configuration and checkpoint
            (out / "config.json").write_text(json.dumps(config))
            (out / "checkpoint.pt").write_text("state")
            return "interrupted"
        (out / "summary.json").write_text(json.dumps({"stop_reason": "converged"}))
        return "converged"

    monkeypatch.setattr(point_job, "_solve", interrupted_once)
    spec = _spec({"lam_H": [0.005]})
    with pytest.raises(KeyboardInterrupt):  # in this process only Ctrl-C interrupts a point
        run_sweep(spec, tmp_path / "s", "debug", progress=False)
    (row,) = read_table(tmp_path / "s")["points"]
    assert row["status"] == "interrupted" and calls == [False]
    (row,) = run_sweep(spec, tmp_path / "s", "debug", progress=False)
    assert row["status"] == "done" and row["stop_reason"] == "converged" and calls == [False, True]


def test_a_different_sweep_into_the_same_folder_is_refused_unless_forced(tmp_path, monkeypatch):
    calls = []
    real = point_job._solve
    monkeypatch.setattr(point_job, "_solve",
                        lambda c, o, r, **k: calls.append(c["lam_H"]) or real(c, o, r, **k))
    run_sweep(_spec({"lam_H": [0.005]}), tmp_path / "s", "debug", progress=False)
    bigger = _spec({"lam_H": [0.005, 0.01]})
    with pytest.raises(ValueError, match="another configuration.*grid.*--force"):
        run_sweep(bigger, tmp_path / "s", "debug", progress=False)
    # the executor settings say how it runs, not what: they may change
    run_sweep(_spec({"lam_H": [0.005]}, executor={"time": 5}), tmp_path / "s", "debug",
              progress=False)
    rows = run_sweep(bigger, tmp_path / "s", "debug", force=True, progress=False)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert calls == [0.005, 0.01]  # the matching point was reused even with --force
    assert read_json(tmp_path / "s" / "config.json")["grid"] == {"lam_H": [0.005, 0.01]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grid": {"lamH": [1]}}, r"unknown field 'lamH'.*allowed: K, d, "),
        ({"grid": {}}, r"\[grid\] is empty"),
        ({"base": {"K": 3}}, r"\[grid\] is empty"),
        ({"grid": {"lam_H": []}}, r"lam_H is an empty list"),
        ({"grid": {"lam_H": 0.1}}, r"must be a list"),
        ({"grid": {"lam_H": [0.1, 0.1]}}, r"lists 0.1 more than once"),
        ({"grid": {"lam_H": [0.1, -1.0]}}, r"grid point lam_H=-1.0: lam_H"),
        ({"base": {"K": 4, "minority_classes": 2}, "grid": {"imbalance_ratio": [4.0, 0.5]}},
         r"imbalance_ratio=0.5: imbalance_ratio must lie in \[1, inf\)"),
        ({"base": {"K": 4}, "grid": {"minority_classes": [1, 4]}},
         r"minority_classes=4: minority_classes must be <= 3"),
        ({"base": {"K": 3, "d": 1}, "grid": {"K": [3]}}, r"both in \[base\] and in \[grid\]"),
        ({"base": {"job": "fit"}, "grid": {"K": [3]}}, r"job must be one of 'solve', 'train'"),
        ({"base": {"job": "train"}, "grid": {"lam_H": [1]}}, r"unknown field 'lam_H'.*TrainConfig"),
        ({"base": {"job": "train"}, "grid": {"lam_grid": [5, 4]}}, r"lam_grid=4: lam_grid must be odd"),
        ({"grid": {"K": [3]}, "executor": {"partitions": "a"}}, r"unknown setting.*partition"),
        ({"grid": {"K": [3]}, "executor": {"time": "1h"}}, r"time must be int"),
        ({"grid": {"K": [3]}, "extra": {}}, r"unknown section"),
    ],
)
def test_bad_sweep_files_are_refused_before_anything_runs(tmp_path, data, message):
    path = tmp_path / "bad.toml"
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        run_sweep(load_sweep(path), tmp_path / "out", "debug")
    assert not (tmp_path / "out").exists()


def test_bad_executor_jobs_and_devices_are_refused_before_anything_runs(tmp_path, monkeypatch):
    spec = _spec({"lam_H": [0.005]})
    with pytest.raises(ValueError, match="unknown executor 'ray'; allowed: local, slurm, debug"):
        run_sweep(spec, tmp_path / "out", "ray")
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        run_sweep(spec, tmp_path / "out", "local", jobs=0)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, srun, sacct
    with pytest.raises(ValueError, match="SLURM is not reachable.*sbatch.*not found on PATH"):
        run_sweep(spec, tmp_path / "out", "slurm")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="grid point device=cuda: .*CUDA is not available"):
            run_sweep(_spec({"device": ["cpu", "cuda"]}), tmp_path / "out", "local")
    assert not (tmp_path / "out").exists()
    assert main(["sweep", "--config", str(tmp_path / "none.toml"), "--out",
                 str(tmp_path / "out")]) == 2


def test_slurm_job_array_script(tmp_path, monkeypatch):
    """The sbatch script submitit would submit for a 6-point array, without a cluster."""
    monkeypatch.setattr(shutil, "which", lambda command: f"/usr/bin/{command}")
    settings = {"partition": "gpu", "time": 30, "cpus_per_task": 2, "gpus_per_node": 1,
                "mem_gb": 4, "setup": ["source venv/bin/activate"]}
    executor = make_executor("slurm", tmp_path / "submitit", settings, jobs=3)
    executor.parameters["map_count"] = 6  # what submitit sets when it submits an array
    script = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    for line in ("#SBATCH --array=0-5%3", "#SBATCH --partition=gpu", "#SBATCH --time=30",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --mem=4096MB", "#SBATCH --job-name=ufm-sweep",
                 "source venv/bin/activate"):
        assert line in script, line
    assert "-m submitit.core._submit" in script
    assert slurm_parameters({"array_parallelism": 8}, jobs=3)["array_parallelism"] == 8
    assert threads_per_point("slurm", settings, jobs=3) == 2  # torch threads = cpus_per_task
    assert threads_per_point("local", {}, jobs=10**6) == 1


def test_train_sweep_on_the_debug_executor(tmp_path):
    spec = _spec({"alpha": [0.0, 1.0]}, job="train",
                 base={"epochs": 1, "train_subset": 200, "feature_dim": 16, "width": 32,
                       "exact_classifier": False, "linearity_pairs": 10,
                       "pairs_per_class_pair": 2, "pairs_all_classes": 2, "lam_grid": 3})
    rows = run_sweep(spec, tmp_path / "s", "debug", progress=False)
    assert [r["point"] for r in rows] == ["alpha=0.0", "alpha=1.0"]
    assert all(r["status"] == "done" and 0 <= r["test_accuracy"] <= 1 for r in rows)
    saved = read_json(tmp_path / "s/points/alpha=1.0/config.json")["config"]
    assert saved["alpha"] == 1.0 and saved["epochs"] == 1


def test_point_names_are_readable_and_filesystem_safe():
    assert point_name({"lam_H": 0.005, "loss": "ce"}) == "lam_H=0.005,loss=ce"
    assert point_name({"lams": [0.5, 0.25], "bias": True}) == "lams=0.5-0.25,bias=true"
    assert point_name({"data_dir": "/a b/c"}) == "data_dir=_a_b_c"
    long = point_name({"lams": [i / 1000 for i in range(200)]})
    assert len(long) <= 150 and long.startswith("lams=0.0-0.001")


def test_points_are_dealt_into_jobs_round_robin():
    items = list(range(7))
    assert deal("local", items, 2, {}) == [[0, 2, 4, 6], [1, 3, 5]]  # one process per worker
    assert deal("local", items[:1], 4, {}) == [[0]]
    assert deal("local", items, 2, {"points_per_job": 1}) == [[i] for i in items]
    assert deal("local", items, 2, {"points_per_job": 3}) == [[0, 3, 6], [1, 4], [2, 5]]
    assert deal("slurm", items, 2, {}) == [[i] for i in items]  # one array task per point
    assert deal("debug", items, 2, {}) == [items]
    assert deal("local", [], 2, {}) == []
