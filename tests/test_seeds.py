"""Seeds: the ``seeds`` setting of a sweep and of ``ufm reproduce``, the seed mean and spread
of a sweep's table (checked against numpy), the rule that resolves a difference, and the
refusal of a bad setting before any work."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from reproduce_support import run_tiny

from ufm import cli
from ufm.io import read_csv, read_json, write_json
from ufm.plots import minority_phase, sweep_files
from ufm.reproduce import layout, preset, sweep_stage
from ufm.reproduce.report import _fmt
from ufm.reproduce.sweep_report import sweep_section
from ufm.seeds import resolved, seed_list, spread, total_se, within_error
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


def test_the_error_of_a_mean_of_measured_runs_adds_their_own_errors_to_the_seed_spread():
    assert within_error([0.3, 0.4]) == pytest.approx(0.25, rel=1e-15)  # sqrt(0.09 + 0.16) / 2
    assert within_error([]) is None and within_error([0.1, float("nan")]) is None
    values = spread([1.0, 1.2, 1.4])  # se 0.2 / sqrt(3)
    errors = [0.1, 0.1, 0.1]
    assert total_se(values, errors) == pytest.approx(math.hypot(0.2, 0.1) / math.sqrt(3))
    assert total_se(values, errors) > max(values.se, within_error(errors))
    assert total_se(spread([1.0]), [0.1]) is None  # one seed: no spread to add
    assert total_se(values, [0.1, None, 0.1]) is None  # a run without its error


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


def _imbalance_sweep(root: Path, cosines: dict[str, list[float]], seeds: list[int]) -> None:
    """A reproduction's sweep stage holding one imbalance sweep written by hand: at rho = 4,
    per kind ("mixup", "plain") the minority cosine of each seed."""
    folder = root / "sweep" / "imbalance"
    rows = []
    for kind, lams in (("plain", [1.0]), ("mixup", [0.0, 0.5, 1.0])):
        for seed, cosine in zip(seeds, cosines[kind]):
            values = {"imbalance_ratio": 4.0, "lams": lams, "seed": seed}
            name = f"{kind},seed={seed}"
            run = point_folder(folder, name)
            run.mkdir(parents=True)
            write_json(run / "config.json", {"K": 4, "lams": lams, "alpha": None,
                                             "imbalance_ratio": 4.0, "seed": seed})
            write_json(run / "summary.json", {"minority_cosine": cosine, "etf_distance_W": 0.5})
            rows.append(table.make_row("solve", name, values, "done", None, run))
    table.write_table(folder, "solve", ["imbalance_ratio", "lams"], rows, seeds=seeds)
    write_json(folder / "config.json", {"job": "solve", "base": {"K": 4}, "grid": {},
                                        "executor": {}, "seeds": seeds})
    write_json(root / "sweep" / "summary.json", {"sweep_grid": "quick", "sweeps": {
        "imbalance": {"question": "Minority collapse?"}}})  # fmt: skip


def test_the_report_resolves_mixup_against_plain_only_beyond_the_seed_spread(tmp_path):
    spaced = {"mixup": [0.50, 0.52, 0.54], "plain": [0.30, 0.31, 0.32]}
    _imbalance_sweep(tmp_path / "apart", spaced, [0, 1, 2])
    text = "\n".join(sweep_section(tmp_path / "apart"))
    mix, plain = spread(spaced["mixup"]), spread(spaced["plain"])
    assert "minority cosine is 0.52 +- 0.02 (3 seeds) for mixup and 0.31 +- 0.01 (3 seeds)" in text
    assert "| 4 | 0.52 +- 0.02 | 0.31 +- 0.01 |" in text
    assert (f"stronger under mixup (higher cosine): the difference 0.21 exceeds 2 combined "
            f"standard errors ({math.hypot(mix.se, plain.se):.2g})") in text
    assert "sweep/imbalance/sweep_mean.csv" in text
    overlapping = {"mixup": [0.2, 0.6, 0.4], "plain": [0.3, 0.5, 0.25]}
    _imbalance_sweep(tmp_path / "close", overlapping, [0, 1, 2])
    text = "\n".join(sweep_section(tmp_path / "close"))
    assert "not resolved: the difference 0.05 is within 2 combined standard errors" in text
    _imbalance_sweep(tmp_path / "one", {"mixup": [0.5], "plain": [0.3]}, [0])
    text = "\n".join(sweep_section(tmp_path / "one"))
    assert "one seed, no seed spread" in text and "(higher cosine) (one seed, no seed spread)" in text
    figure = minority_phase(tmp_path / "apart" / "sweep" / "imbalance")
    labels = [c.get_label() for c in figure.axes[0].containers]
    assert "mixup (mean +- sd of 3 seeds)" in labels


def test_the_reproduction_seeds(tmp_path, capsys):
    quick, full = preset("quick"), preset("full")
    assert quick.seeds == 1 and full.seeds == 3 and full.seed_values == [0, 1, 2]
    assert preset("full", seed=4, seeds=2).seed_values == [4, 5]
    assert full.train_config(1.0, "learned", seed=2).seed == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="seeds must be"):
            preset("quick", seeds=bad)
    assert cli.main(["reproduce", "--quick", "--seeds", "0", "--out", str(tmp_path / "r")]) == 2
    assert "seeds must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    # the imbalance sweep runs once per seed, the other sweeps once
    imbalance, *others = sweep_stage.planned_sweeps(preset("quick", seeds=3, seed=1))
    assert imbalance.spec.seeds == [1, 2, 3] and "seed" not in imbalance.spec.base
    assert all(s.spec.seeds is None and s.spec.base["seed"] == 1 for s in others)
    one = sweep_stage.planned_sweeps(preset("quick"))[0].spec
    assert one.seeds is None and one.base["seed"] == 0  # as before seeds: the same folders


def test_help_lists_the_seeds_and_their_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # the help of --seeds runs to the next option (the minority study's, then the sweep grid)
    after = text.split("--seeds SEEDS ")[-1]
    seeds_help = min((after.split(f" {option}")[0] for option in ("--minority-dataset", "--sweep-grid")), key=len)
    assert seeds_help.startswith("networks per run") and seeds_help.endswith("default: 3")
    assert "--quick: 1 (one seed, no seed spread)" in seeds_help
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[base] seeds = N" in text and "sweep_mean.csv" in text


def test_a_reproduction_with_two_seeds_trains_each_run_twice_and_reports_the_spread(tmp_path):
    root = tmp_path / "r"
    run_tiny(root, seeds=2)
    networks = read_json(layout.stage_dir(root, layout.NETWORKS) / layout.SUMMARY)
    assert networks["seeds"] == [0, 1]
    for name, _, _ in layout.NETWORK_RUNS:
        runs = networks["seed_runs"][name]
        assert [(r["seed"], r["folder"]) for r in runs] == [(0, name), (1, f"{name}_seed1")]
        saved = read_json(layout.network_seed_run(root, name, 1, 0) / "config.json")
        assert saved["config"]["seed"] == 1
        assert networks["runs"][name]["ece"] == runs[0]["ece"]  # the tables: the first seed
    assert not (layout.stage_dir(root, layout.NETWORKS) / "mixup3_fixed_etf_seed1").exists()
    imbalance = table.read_table(layout.sweep_dir(root, "imbalance"))
    assert imbalance["seeds"] == [0, 1] and len(imbalance["points"]) == 12
    assert "seeds" not in table.read_table(layout.sweep_dir(root, "d_lamW"))
    report = (root / layout.REPORT).read_text()
    assert "Each of the four runs trained with 2 seeds (0, 1)" in report
    assert "### Runs per seed" in report and "networks/erm_learned_seed1/config.json" in report
    # claim 5 against numpy: mean +- sd of the ECE and the verdict by the stated rule
    erm, mix = (np.array([r["ece"] for r in networks["seed_runs"][n]])
                for n in ("erm_learned", "mixup_learned"))  # fmt: skip
    line = next(x for x in report.splitlines() if x.startswith("5. *Mixup improves calibration"))
    assert (f"ERM {_fmt(erm.mean())} +- {_fmt(erm.std(ddof=1))} (2 seeds), mixup "
            f"{_fmt(mix.mean())} +- {_fmt(mix.std(ddof=1))} (2 seeds)") in line
    error = math.hypot(erm.std(ddof=1), mix.std(ddof=1)) / math.sqrt(2)
    if abs(mix.mean() - erm.mean()) > 2 * error:
        verdict = "**agrees**" if mix.mean() < erm.mean() else "**does not agree**"
    else:
        verdict = "**undecided** (the seeds do not resolve the difference)"
    assert f"{_fmt(error)} (combined standard error)" in line and verdict in line
    assert "Evidence: 2 seeds per run; no error within a run is measured" in line
    assert "one seed, no seed spread" not in report.split("## The paper's claims")[1].split(
        "## When does")[0]
