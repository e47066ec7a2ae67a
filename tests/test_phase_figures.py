"""Phase figures of sweep folders (ufm.plots.phase), ``ufm figures --from`` on a sweep, and
the sweep stage of the reproduction with its report section (docs/theory.md section 4)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from reproduce_support import build_tiny

from ufm import cli
from ufm.io import read_json, write_json
from ufm.plots import (
    FIGURES,
    SWEEP_FIGURES,
    draw_from,
    draw_sweep_figures,
    etf_phase,
    minority_phase,
    phase,
    sweep_files,
)
from ufm.reproduce import layout, sweep_stage
from ufm.reproduce.sweep_report import TITLE
from ufm.sweep import point_folders, run_sweep, sweep_from_dict, table


@pytest.fixture(scope="session")
def tiny_reproduction(tmp_path_factory):
    return build_tiny(tmp_path_factory)


def _fake_sweep(folder: Path, swept: list[str], points: list[dict], base=None) -> Path:
    """A sweep folder written by hand the way the sweep engine writes it: each point
    ``{"values": {...}, "status": ..., "summary": {...}, "config": {...}}``."""
    rows = []
    for k, point in enumerate(points):
        name = f"p{k}"
        run = point_folders.point_folder(folder, name)
        run.mkdir(parents=True)
        if "config" in point:
            write_json(run / "config.json", point["config"])
        if point["status"] == "done":
            write_json(run / "summary.json", point["summary"])
        rows.append(table.make_row("solve", name, point["values"], point["status"],
                                   "boom" if point["status"] == "failed" else None, run))
    table.write_table(folder, "solve", swept, rows)
    write_json(folder / "config.json", {"job": "solve", "base": base or {"K": 4}, "grid": {},
                                        "executor": {}})
    return folder


def _etf_sweep(folder: Path) -> tuple[Path, dict]:
    """lam_W (3 values) x lams (2 list values); one point failed, one pending."""
    values = {}
    points = []
    for i, lam_W in enumerate((1e-3, 1e-2, 1e-1)):
        for j, lams in enumerate(([1.0], [0.0, 0.25, 0.5, 0.75, 1.0])):
            status = "failed" if (i, j) == (1, 0) else "pending" if (i, j) == (2, 1) else "done"
            value = 10.0 ** (-1 - 2 * i - j)
            if status == "done":
                values[(lam_W, tuple(lams))] = value
            points.append({"values": {"lam_W": lam_W, "lams": lams}, "status": status,
                           "summary": {"etf_distance_W": value}})
    return _fake_sweep(folder, ["lam_W", "lams"], points), values


def _image_axes(figure):
    return [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_the_sweep_file_names_are_the_engines():
    assert sweep_files.TABLE == table.TABLE_JSON
    assert point_folders.point_folder("D", "p").parent.name == point_folders.POINTS
    assert not set(SWEEP_FIGURES) & set(FIGURES)


def test_etf_phase_has_a_cell_per_point_with_its_value_and_blank_failed_cells(tmp_path):
    folder, values = _etf_sweep(tmp_path / "s")
    figure = etf_phase(folder)
    (ax,) = _image_axes(figure)
    assert ax.get_xlabel().startswith("lam_W") and ax.get_ylabel().startswith("lams")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01", "0.1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["[1]", "5 in [0, 1]"]
    grid = ax.images[0].get_array()
    assert grid.shape == (2, 3) and isinstance(ax.images[0].norm, LogNorm)
    texts = {tuple(np.round(t.get_position()).astype(int)): t.get_text() for t in ax.texts}
    assert len(texts) == 6
    assert texts[(1, 0)] == "failed" and texts[(2, 1)] == "pending"
    assert grid.mask[0, 1] and grid.mask[1, 2] and grid.mask.sum() == 2
    lams = [(1.0,), (0.0, 0.25, 0.5, 0.75, 1.0)]
    for (lam_W, lam_tuple), value in values.items():
        j, i = (1e-3, 1e-2, 1e-1).index(lam_W), lams.index(lam_tuple)
        assert texts[(j, i)] == phase.cell_text(value)
        assert math.isclose(float(texts[(j, i)]), value, rel_tol=0.05)
        assert math.isclose(grid[i, j], value)
    # the colour scale spans the values: the darkest cell is the smallest distance
    assert math.isclose(ax.images[0].norm.vmin, min(values.values()))


def test_etf_phase_refuses_wrong_axes_and_listing_the_swept_fields(tmp_path):
    folder, _ = _etf_sweep(tmp_path / "s")
    refused = r"x = 'd' is not a swept field .*swept fields: lam_W, lams"
    with pytest.raises(ValueError, match=refused):
        etf_phase(folder, x="d", y="lams")
    with pytest.raises(ValueError, match="x and y are both 'lams'"):
        etf_phase(folder, x="lams", y="lams")
    one = _fake_sweep(tmp_path / "one", ["lam_W"], [
        {"values": {"lam_W": 0.1}, "status": "done", "summary": {"etf_distance_W": 0.5}}])
    with pytest.raises(ValueError, match=r"sweeps 1 field\(s\) \(lam_W\); give x and y"):
        etf_phase(one)
    three = _fake_sweep(tmp_path / "three", ["a", "b", "c"], [
        {"values": {"a": a, "b": b, "c": c}, "status": "done", "summary": {"etf_distance_W": 0.1}}
        for a in (1, 2) for b in (1, 2) for c in ("x", "y", "z")])
    with pytest.raises(ValueError, match=r"sweeps 3 field\(s\) \(a, b, c\)"):
        etf_phase(three)
    panels = _image_axes(etf_phase(three, x="a", y="b"))  # one panel per value of c
    assert [ax.get_title() for ax in panels] == ["c = x", "c = y", "c = z"]
    assert phase.applicable_figures(three) == []
    with pytest.raises(ValueError, match="no sweep figure suits .*etf_phase needs exactly two"):
        draw_sweep_figures(three)
    assert not (three / "figures").exists()


def _imbalance_points(cosines):
    points = []
    for rho, (mixup, plain) in cosines.items():
        for lams, cosine in (([1.0], plain), ([0.0, 0.5, 1.0], mixup)):
            points.append({
                "values": {"imbalance_ratio": rho, "lams": lams}, "status": "done",
                "summary": {"minority_cosine": cosine, "etf_cosine": -1 / 3,
                            "etf_distance_W": 0.1 * rho},
                "config": {"K": 4, "lams": lams, "alpha": None, "imbalance_ratio": rho},
            })
    return points


def test_minority_phase_draws_mixup_against_plain_with_the_etf_and_collapse_lines(tmp_path):
    cosines = {1.0: (-0.33, -0.32), 4.0: (0.1, -0.05), 16.0: (0.6, 0.3)}
    folder = _fake_sweep(tmp_path / "s", ["imbalance_ratio", "lams"], _imbalance_points(cosines))
    figure = minority_phase(folder)
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    mixup, plain = lines["mixup"], lines["plain training (lams = [1.0])"]
    assert list(mixup.get_xdata()) == [1.0, 4.0, 16.0]
    assert list(mixup.get_ydata()) == [m for m, _ in cosines.values()]
    assert list(plain.get_ydata()) == [p for _, p in cosines.values()]
    etf = next(line for label, line in lines.items() if label.startswith("balanced simplex ETF"))
    assert math.isclose(etf.get_ydata()[0], -1 / 3)
    collapse = lines["collapse (cosine 1)"]
    assert collapse.get_ydata()[0] == 1.0 and collapse.get_linestyle() == ":"
    assert len(lines) == 4
    assert phase.applicable_figures(folder) == ["etf_phase", "minority_phase"]


def test_minority_phase_reads_the_kind_from_each_point_and_names_what_is_missing(tmp_path):
    points = _imbalance_points({2.0: (0.2, 0.1)})
    points[1]["config"] = {"K": 4, "lams": None, "alpha": 1.0, "imbalance_ratio": 2.0}
    points[0]["config"] = {"K": 4, "lams": [0.0, 1.0], "alpha": None, "imbalance_ratio": 2.0}
    folder = _fake_sweep(tmp_path / "s", ["imbalance_ratio", "lams"], points)
    labels = [line.get_label() for line in minority_phase(folder).axes[0].get_lines()]
    assert "mixup" in labels and "plain training (lams = [1.0])" in labels
    assert sweep_files.is_plain({"lams": [1.0], "alpha": None})
    assert not sweep_files.is_plain({"lams": [1.0], "alpha": 0.5})
    assert not sweep_files.is_plain({"lams": None, "alpha": None})
    assert sweep_files.is_plain({"alpha": 0.0}) and not sweep_files.is_plain({"alpha": 1.0})
    balanced, _ = _etf_sweep(tmp_path / "balanced")
    with pytest.raises(ValueError, match=r"no imbalance_ratio values \(swept fields: lam_W, lams"):
        minority_phase(balanced)
    with pytest.raises(ValueError, match="unknown sweep figure 'nope'; known sweep figures"):
        draw_sweep_figures(balanced, ["nope"])


def test_cli_figures_from_a_sweep_folder_writes_the_figures_that_apply(tmp_path, capsys):
    folder = _fake_sweep(tmp_path / "s", ["imbalance_ratio", "lams"],
                         _imbalance_points({1.0: (-0.3, -0.3), 8.0: (0.5, 0.2)}))
    assert cli.main(["figures", "--from", str(folder), "--dpi", "40"]) == 0
    assert "wrote 4 files" in capsys.readouterr().out
    for name in ("etf_phase", "minority_phase"):
        for suffix in ("png", "pdf"):
            assert (folder / "figures" / f"{name}.{suffix}").stat().st_size > 1000
    out = tmp_path / "only"
    assert cli.main(["figures", "--from", str(folder), "--only", "minority_phase", "--out",
                     str(out), "--dpi", "40"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["minority_phase.pdf", "minority_phase.png"]
    assert cli.main(["figures", "--from", str(folder), "--only", "channels"]) == 2
    assert "known sweep figures: etf_phase, minority_phase" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert cli.main(["figures", "--from", str(folder), "--out", str(blocked)]) == 2
    assert "not a directory" in capsys.readouterr().err
    neither = tmp_path / "neither"
    neither.mkdir()
    assert cli.main(["figures", "--from", str(neither)]) == 2
    err = capsys.readouterr().err
    assert "not a folder of reproduction results" in err and "nor a sweep folder" in err


def test_a_real_four_point_sweep_draws_its_table(tmp_path):
    spec = sweep_from_dict({
        "base": {"K": 3, "classifier": "learned", "num_lams": 3, "tol": 1e-6, "max_iters": 100,
                 "device": "cpu"},
        "grid": {"d": [1, 2], "lam_W": [1e-2, 1e-1]},
    })  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # d = 1 < K - 1 warns
        rows = run_sweep(spec, tmp_path / "s", "debug", progress=False)
    assert [r["status"] for r in rows] == ["done"] * 4
    (ax,) = _image_axes(etf_phase(tmp_path / "s"))
    assert ax.get_xlabel() == "d (feature dimension); K - 1 = 2"
    texts = {tuple(np.round(t.get_position()).astype(int)): t.get_text() for t in ax.texts}
    for row in rows:
        j, i = [1, 2].index(row["d"]), [1e-2, 1e-1].index(row["lam_W"])
        assert texts[(j, i)] == phase.cell_text(row["etf_distance_W"])
    written = draw_from(tmp_path / "s", dpi=40)
    assert [p.name for p in written] == ["etf_phase.png", "etf_phase.pdf"]


def test_the_sweep_grids_of_the_reproduction(tmp_path):
    from ufm.reproduce import preset

    quick = sweep_stage.planned_sweeps(preset("quick"))
    full = sweep_stage.planned_sweeps(preset("full"))
    assert [s.name for s in quick] == ["imbalance", "d_lamW", "loss_lamH", "mse_bias"]
    assert [s.name for s in full] == ["imbalance", "d_lamW", "loss_lamH", "mse_bias",
                                      "lamW_lamH", "sampling"]  # fmt: skip
    assert sum(len(s.spec.points()) for s in quick) <= 25
    for sweeps in (quick, full):  # the points below d = K - 1 are solved from several starts
        d_lamW, mse_bias = sweeps[1].spec, sweeps[3].spec
        assert d_lamW.base["starts"] == preset("full").starts == 4
        assert mse_bias.base["loss"] == "mse" and mse_bias.grid["bias"] == [False, True]
    imbalance = quick[0].spec
    assert imbalance.grid["lams"][0] == [1.0] and imbalance.base["minority_classes"] == 2
    K = preset("full").K
    assert K - 2 in full[1].spec.grid["d"] and K - 1 in full[1].spec.grid["d"]
    assert set(full[0].spec.grid) == {"imbalance_ratio", "lams", "pairing"}
    for sweep in quick + full:
        assert sweep.spec.base["classifier"] == "learned"


def test_the_reproduction_sweeps_draws_and_reports(tiny_reproduction, tmp_path):
    root = tiny_reproduction
    summary = read_json(layout.stage_dir(root, layout.SWEEP) / layout.SUMMARY)
    assert list(summary["sweeps"]) == ["imbalance", "d_lamW", "loss_lamH", "mse_bias"]
    figures = read_json(layout.stage_dir(root, layout.FIGURES) / layout.SUMMARY)
    report = (root / layout.REPORT).read_text()
    section = report.split(TITLE, 1)[1].split("\n## ", 1)[0]
    for name, info in summary["sweeps"].items():
        rows = table.read_table(layout.sweep_dir(root, name))["points"]
        assert info["counts"]["done"] == len(rows) == info["points"]
        assert f"sweep/{name}/sweep.csv" in section
    assert figures["phase_figures"] == [
        "imbalance_etf_phase", "imbalance_minority_phase", "d_lamW_etf_phase",
        "loss_lamH_etf_phase", "mse_bias_etf_phase"]  # fmt: skip
    for name in figures["phase_figures"]:
        assert f"figures/{name}.png" in section
        assert (layout.stage_dir(root, layout.FIGURES) / f"{name}.pdf").is_file()
    # the claims carry the table's numbers
    imbalance = layout.sweep_dir(root, "imbalance")
    rows = table.read_table(imbalance)["points"]
    top = max(r["imbalance_ratio"] for r in rows)
    at = {("plain" if sweep_files.is_plain(sweep_files.point_config(imbalance, r)) else "mixup"):
          r["minority_cosine"] for r in rows if r["imbalance_ratio"] == top}
    assert (f"At rho = {top:g} the minority cosine is {phase.cell_text(at['mixup'])} for mixup and "
            f"{phase.cell_text(at['plain'])} for plain training, against -1/(K-1) = "
            f"{phase.cell_text(-1 / 3)}") in section
    d_lamW = layout.sweep_dir(root, "d_lamW")
    K = sweep_files.sweep_K(d_lamW, [])
    for row in table.read_table(d_lamW)["points"]:
        assert f" {phase.cell_text(row['etf_distance_W'])} " in section
        # below d = K - 1 the lowest of several starts, and how many reached it; above, one
        record = sweep_files.point_summary(d_lamW, row)
        if row["d"] < K - 1:
            assert record["starts"] == 4 and record["loss"] == min(record["start_objectives"])
            assert f"({record['starts_reached']}/4 starts)" in section
        else:
            assert record["starts"] == 1
    assert "each was solved from 4 random starts (`starts`)" in section
    # the squared error's offset against a learned bias, with this run's numbers
    mse_bias = layout.sweep_dir(root, "mse_bias")
    records = [(row["bias"], sweep_files.point_summary(mse_bias, row))
               for row in table.read_table(mse_bias)["points"]]
    shifts = sorted(r["common_logit_shift"] for bias, r in records if not bias)
    assert ": the common row offset of W is the missing bias.**" in section
    assert f"u.h = {shifts[0]:.4g} to {shifts[-1]:.4g}" in section  # two lam_H
    for bias, record in records:
        if bias:  # the squared error's bias is 1/K, the mean target, to the solves' tolerance
            assert abs(record["bias_mean"] - 1 / K) < 1e-4
        else:
            assert record["common_logit_shift_sd"] < 1e-6 * record["common_logit_shift"]
    out = tmp_path / "redrawn"
    assert cli.main(["figures", "--from", str(root), "--only", "d_lamW_etf_phase", "channels",
                     "--out", str(out), "--dpi", "40"]) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == ["channels", "d_lamW_etf_phase"]
