"""Seeds: the ``seeds`` setting of a sweep, the seed mean and spread of a sweep's table
(checked against numpy), the rule that resolves a difference, and the refusal of a bad
setting before any work."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ufm import cli
from ufm.io import read_csv, read_json, write_json
from ufm.plots import sweep_files
from ufm.seeds import resolved, seed_list, spread
from ufm.sweep import load_sweep, point_job, run_sweep, sweep_from_dict, table
from ufm.sweep.point_folders import point_folder

BASE = {"K": 3, "d": 3, "num_lams": 3, "classifier": "learned", "tol": 1e-6, "max_iters": 100,
        "device": "cpu"}  # fmt: skip


def test_spread_is_numpy_mean_sample_sd_and_standard_error():
    values = [0.3, 1.7, -0.4, 2.25]
    result = spread(values + [None, "nan", float("inf"), True, "text"])  # only numbers count
    assert result.n == 4 and result.values == tuple(values)
    assert math.isclose(result.mean, np.mean(values), rel_tol=1e-15)
    assert math.isclose(result.sd, np.std(values, ddof=1), rel_tol=1e-14)
    assert math.isclose(result.se, np.std(values, ddof=1) / 2.0, rel_tol=1e-14)
    one = spread([5.0])
    assert (one.mean, one.sd, one.se, one.n) == (5.0, None, None, 1)
    assert spread([]).mean is None and spread(["nan"]).n == 0


def test_a_difference_is_resolved_beyond_twice_the_combined_standard_error():
    def shifted(by: float):
        return spread([v + by for v in (1.0, 1.2, 1.4)])  # sd 0.2, se 0.2 / sqrt(3)

    error = math.hypot(0.2 / math.sqrt(3), 0.2 / math.sqrt(3))
    assert resolved(shifted(0.0), shifted(2 * error - 1e-9)) is False
    assert resolved(shifted(0.0), shifted(2 * error + 1e-9)) is True
    assert resolved(shifted(0.0), spread([9.0])) is None  # one seed: no spread to weigh it by
    assert resolved(spread([1.0, 1.0]), spread([2.0, 2.0])) is True  # no spread at all


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"seeds must be a number of seeds >= 1 or a list of seeds, got 0"),
        (-2, r"got -2"),
        (2.0, r"\(integers >= 0\), got 2.0"),
        ("3", r"got '3'"),
        (True, r"got True"),
        ([], r"empty list"),
        ([0, 1, 0], r"lists seed\(s\) 0 more than once"),
        ([1, -1], r"must list integers >= 0, got -1"),
        ([1, 2.5], r"got 2.5"),
    ],
)
def test_bad_seeds_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        seed_list(value)


def test_seed_list():
    assert seed_list(3) == [0, 1, 2]
    assert seed_list(2, first=5) == [5, 6]
    assert seed_list([7, 3]) == [7, 3]


def _write_sweep_file(path: Path, seeds: str, grid: str = "lam_H = [0.005, 0.01]") -> Path:
    base = "\n".join(f"{k} = {json.dumps(v)}" for k, v in BASE.items())
    path.write_text(f"[base]\n{base}\n{seeds}\n\n[grid]\n{grid}\n")
    return path


@pytest.mark.parametrize(
    ("seeds", "grid", "message"),
    [
        ("seeds = 0", "lam_H = [0.005]", r"\[base\] seeds must be a number of seeds >= 1"),
        ("seeds = -3", "lam_H = [0.005]", r"\[base\] seeds .* got -3"),
        ("seeds = 2.5", "lam_H = [0.005]", r"\[base\] seeds .* got 2.5"),
        ('seeds = "2"', "lam_H = [0.005]", r"\[base\] seeds .* got '2'"),
        ("seeds = [1, 2, 1]", "lam_H = [0.005]", r"lists seed\(s\) 1 more than once"),
        ("seeds = []", "lam_H = [0.005]", r"empty list"),
        ("seeds = 2\nseed = 1", "lam_H = [0.005]", r"seed is in \[base\] and \[base\] seeds"),
        ("seeds = 2", "seed = [0, 1]", r"seed is in \[grid\] and \[base\] seeds"),
        ("", "seeds = [0, 1]", r"seeds cannot be swept"),
    ],
)
def test_bad_seeds_in_a_sweep_file_are_refused_before_anything_runs(tmp_path, capsys, seeds,
                                                                   grid, message):
    path = _write_sweep_file(tmp_path / "bad.toml", seeds, grid)
    with pytest.raises(ValueError, match=message):
        run_sweep(load_sweep(path), tmp_path / "out", "debug")
    assert cli.main(["sweep", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "ufm sweep: error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _fake_solve(summaries):
    """A stand-in for a point's solve that writes ``summaries(config)`` as its summary."""

    def solve(config, out, resume, **options):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config))
        (out / "summary.json").write_text(json.dumps(summaries(config)))
        return "converged"

    return solve


def test_a_sweep_without_seeds_writes_the_table_it_always_wrote(tmp_path, monkeypatch):
    """The files of a sweep without seeds are byte for byte those of the code before seeds
    (commit 3d32e4b, the same points and summaries): no seed column, no sweep_mean.csv."""
    monkeypatch.setattr(point_job, "_solve", _fake_solve(lambda c: {
        "stop_reason": "converged", "iterations": 7, "loss": c["lam_H"] * 3, "seconds": 1.5,
        "etf_distance_W": float("nan") if c["lam_H"] == 0.01 else 1e-6}))  # fmt: skip
    spec = sweep_from_dict({"base": {"K": 3, "d": 3, "classifier": "learned", "seed": 4},
                            "grid": {"lam_H": [0.005, 0.01], "loss": ["ce", "mse"]}})
    run_sweep(spec, tmp_path / "s", "debug", progress=False, sweep_text="x")
    out = tmp_path / "s"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "config.json", "sweep.csv", "sweep.json", "sweep.toml"]  # fmt: skip
    header = ("point,folder,lam_H,loss,status,error,stop_reason,iterations,seconds,final_loss,"
              "grad_norm,etf_distance_W,etf_distance_W_centred,minority_cosine,etf_cosine,"
              "theory_distance,theory_distance_learned_W")
    rows = [f'"lam_H={h},loss={loss}","points/lam_H={h},loss={loss}",{h},{loss},done,,'
            f"converged,7,1.5,{f},,{e},,,,,"
            for h, f, e in (("0.005", "0.015", "1e-06"), ("0.01", "0.03", "nan"))
            for loss in ("ce", "mse")]  # fmt: skip
    assert (out / "sweep.csv").read_bytes() == ("\r\n".join([header, *rows]) + "\r\n").encode()
    digests = {name: hashlib.sha1((out / name).read_bytes()).hexdigest()
               for name in ("sweep.json", "config.json")}
    assert digests == {"sweep.json": "07ac56d0942ca9e645d332c965dd7752385991c2",
                       "config.json": "0eee01abbfece65a78112b08fb3fa319bf4843b7"}


def test_seed_rows_of_a_synthetic_table_are_numpys_mean_and_spread(tmp_path):
    """Three seeds of two configurations written by hand: one seed failed, one has no
    finite value; mean, sd (ddof 1), se and n of every numeric column against numpy."""
    rng = np.random.default_rng(7)
    drawn: dict[tuple[float, int], dict] = {}
    rows = []
    for lam_W in (0.01, 0.1):
        for seed in (0, 1, 2):
            name = f"lam_W={lam_W},seed={seed}"
            folder = point_folder(tmp_path, name)
            folder.mkdir(parents=True)
            status = "failed" if (lam_W, seed) == (0.1, 2) else "done"
            summary = {"stop_reason": "converged" if seed else "max_iters",
                       "iterations": int(rng.integers(5, 50)), "loss": float(rng.normal()),
                       "etf_distance_W": float(rng.lognormal(-8, 1)),
                       "minority_cosine": "nan" if (lam_W, seed) == (0.01, 1)
                       else float(rng.uniform(-1, 1))}  # fmt: skip
            if status == "done":
                write_json(folder / "summary.json", summary)
                drawn[(lam_W, seed)] = summary
            rows.append(table.make_row("solve", name, {"lam_W": lam_W, "seed": seed}, status,
                                       "boom" if status == "failed" else None, folder))
    table.write_table(tmp_path, "solve", ["lam_W"], rows, seeds=[0, 1, 2])
    saved = read_json(tmp_path / "sweep.json")
    assert saved["seeds"] == [0, 1, 2] and saved["swept"] == ["lam_W"]
    assert [r["point"] for r in saved["points"]] == [r["point"] for r in rows]  # per seed kept
    means = {r["configuration"]: r for r in saved["configurations"]}
    assert list(means) == ["lam_W=0.01", "lam_W=0.1"]
    csv_rows = {r["configuration"]: r for r in read_csv(tmp_path / "sweep_mean.csv")}
    for lam_W, done_seeds, status in ((0.01, (0, 1, 2), "done"), (0.1, (0, 1), "failed")):
        row = means[f"lam_W={lam_W}"]
        assert row["lam_W"] == lam_W and row["seeds"] == [0, 1, 2] and row["status"] == status
        assert row["n_done"] == len(done_seeds)
        assert row["folders"][0] == f"points/lam_W={lam_W},seed=0"
        for key, column in (("iterations", "iterations"), ("loss", "final_loss"),
                            ("etf_distance_W", "etf_distance_W"),
                            ("minority_cosine", "minority_cosine")):
            values = np.array([drawn[(lam_W, s)][key] for s in done_seeds
                               if drawn[(lam_W, s)][key] != "nan"], dtype=float)
            assert row[f"{column}_n"] == len(values)
            assert math.isclose(row[f"{column}_mean"], values.mean(), rel_tol=1e-12)
            sd = values.std(ddof=1)
            assert math.isclose(row[f"{column}_sd"], sd, rel_tol=1e-12)
            assert math.isclose(row[f"{column}_se"], sd / math.sqrt(len(values)), rel_tol=1e-12)
            assert math.isclose(float(csv_rows[f"lam_W={lam_W}"][f"{column}_mean"]),
                                values.mean(), rel_tol=1e-12)
        assert row["grad_norm_n"] == 0 and row["grad_norm_mean"] is None
    assert means["lam_W=0.01"]["stop_reason"] == ["max_iters", "converged", "converged"]
    assert means["lam_W=0.1"]["stop_reason"] == ["max_iters", "converged"]


def test_a_real_sweep_with_seeds_runs_each_configuration_once_per_seed(tmp_path, capsys):
    path = _write_sweep_file(tmp_path / "seeds.toml", "seeds = [3, 5]", "lam_W = [0.01, 0.1]")
    out = tmp_path / "s"
    assert cli.main(["sweep", "--config", str(path), "--out", str(out), "--executor", "debug",
                     "--no-progress"]) == 0
    assert "sweep_mean.csv (2 configurations x 2 seeds)" in capsys.readouterr().out
    saved = table.read_table(out)
    names = [r["point"] for r in saved["points"]]
    assert names == ["lam_W=0.01,seed=3", "lam_W=0.01,seed=5", "lam_W=0.1,seed=3",
                     "lam_W=0.1,seed=5"]  # fmt: skip
    for row in saved["points"]:
        assert read_json(out / row["folder"] / "config.json")["seed"] == row["seed"]
    assert read_json(out / "config.json")["seeds"] == [3, 5]
    # the seeds differ in their draws: the two solves of one configuration start elsewhere
    with np.load(out / "points/lam_W=0.01,seed=3/arrays.npz") as a, \
            np.load(out / "points/lam_W=0.01,seed=5/arrays.npz") as b:
        assert not np.allclose(a["W"], b["W"])
    for row in saved["configurations"]:
        points = [r for r in saved["points"] if r["point"] in row["points"]]
        values = np.array([r["etf_distance_W"] for r in points])
        assert math.isclose(row["etf_distance_W_mean"], values.mean(), rel_tol=1e-12)
        assert math.isclose(row["etf_distance_W_sd"], values.std(ddof=1), rel_tol=1e-12)
        assert math.isclose(row["etf_distance_W_se"], values.std(ddof=1) / math.sqrt(2),
                            rel_tol=1e-12)
    # the figures' rows carry the mean under the column's own name
    (mean_row, _) = sweep_files.mean_rows(saved)
    assert mean_row["point"] == "lam_W=0.01" and mean_row["folder"] == "points/lam_W=0.01,seed=3"
    assert mean_row["etf_distance_W"] == saved["configurations"][0]["etf_distance_W_mean"]


def test_sweep_help_names_the_seeds(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[base] seeds = N" in text and "sweep_mean.csv" in text
