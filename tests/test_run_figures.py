"""Figures of one measured network: a training run or a measurement folder (ufm.plots.run_figures).

The measurement folders are synthetic: mixed features that are the exact UFM optimum for a
random (non-ETF) classifier with a bias, found here by a plain Newton iteration independent of
the package's solver, so the theory panel must put its points exactly where the network
panel does; ``coefficients_vs_lam.csv`` comes from :func:`ufm.nets.cell_comparison.compare_cells`
on noisy copies of them, ``reliability.csv`` from :class:`ufm.metrics.CalibrationAccumulator`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401 (autouse fixture)

from ufm import cli
from ufm.io import write_csv, write_json, write_npz
from ufm.metrics import CalibrationAccumulator
from ufm.nets import TrainConfig, run_training
from ufm.nets.cell_comparison import compare_cells
from ufm.nets.triple_theory import own_classifier_triple
from ufm.plots import (
    RUN_FIGURES,
    draw_from,
    draw_run_figures,
    plot_coefficient_curves,
    plot_reliability,
    plot_theory_triple,
    plot_triple,
)
from ufm.plots.run_files import choose_triple, folder_kind, read_mixed_features, theory_lam_H

K, D, LAM_H = 4, 6, 0.05
LAMS = np.linspace(0.0, 1.0, 5)
TRIPLE = (0, 1, 3)


def _newton_optimum(W, offset, target, lam_H):
    """argmin_h logsumexp(Wh + o) - target . (Wh + o) + lam_H/2 |h|^2, by damped Newton."""
    h = np.zeros(W.shape[1])

    def objective(h):
        z = W @ h + offset
        return np.log(np.exp(z - z.max()).sum()) + z.max() - target @ z + lam_H / 2 * h @ h

    for _ in range(100):
        z = W @ h + offset
        p = np.exp(z - z.max())
        p /= p.sum()
        gradient = W.T @ (p - target) + lam_H * h
        if np.linalg.norm(gradient) < 1e-13:
            break
        hessian = W.T @ (np.diag(p) - np.outer(p, p)) @ W + lam_H * np.eye(len(h))
        step, t = np.linalg.solve(hessian, gradient), 1.0
        while objective(h - t * step) > objective(h) and t > 1e-8:
            t /= 2
        h = h - t * step
    return h


def _classifier():
    rng = np.random.default_rng(7)
    weight = np.eye(K, D) + 0.3 * rng.standard_normal((K, D))
    return weight, 0.2 * rng.standard_normal(K), rng.standard_normal(D)


def _optimal_samples(pairs, lams=LAMS):
    """Features mu_G + h*(c, c', lam) for every pair (c, c') and lam, flat, with their labels."""
    weight, bias, mean = _classifier()
    offset = weight @ mean + bias
    c, c_prime, lam, features = [], [], [], []
    for first, second in pairs:
        for value in lams:
            target = value * np.eye(K)[first] + (1 - value) * np.eye(K)[second]
            features.append(mean + _newton_optimum(weight, offset, target, LAM_H))
            c.append(first)
            c_prime.append(second)
            lam.append(value)
    return {"features": np.array(features), "c": np.array(c), "c_prime": np.array(c_prime),
            "lam": np.array(lam), "weight": weight, "bias": bias, "global_mean": mean}  # fmt: skip


def _all_pairs():
    return [(a, b) for a in range(K) for b in range(a, K)]


def _measurement_folder(path, reliability=True, triple=TRIPLE, summary=None):
    """A measurement folder as ufm.measure_network(...).save writes it, from the exact optimum."""
    arrays = _optimal_samples(_all_pairs())
    write_npz(path / "mixed_features.npz", **arrays)
    rng = np.random.default_rng(1)
    grid = arrays["features"].reshape(-1, len(LAMS), D)  # (pairs, L, d)
    noisy = np.concatenate([grid + 1e-3 * rng.standard_normal(grid.shape) for _ in range(3)])
    labels = np.tile(np.array(_all_pairs()).T, 3)
    cells = compare_cells(noisy, labels[0], labels[1], LAMS, arrays["weight"],
                          arrays["global_mean"], bias=arrays["bias"])  # fmt: skip
    write_csv(path / "coefficients_vs_lam.csv", cells.rows)
    scalars = {**cells.scalars, "fitted_lam_H": LAM_H, "curve_fitted_lam_H": LAM_H,
               "ece": 0.04, "test_accuracy": 0.9, **(summary or {})}  # fmt: skip
    if triple is not None:
        scalars["triple"] = list(triple)
    # What the measurement writes for the three-class figure: the exact optimum for its own W.
    drawn = triple or choose_triple(arrays["c"], arrays["c_prime"], K)
    theory = own_classifier_triple(arrays["weight"], arrays["bias"], arrays["global_mean"], drawn,
                                   LAM_H, LAMS)  # fmt: skip
    write_npz(path / "theory_triple.npz", **theory)
    scalars["theory_triple_lam_H_source"] = "curve_fitted_lam_H"
    write_json(path / "summary.json", scalars)
    if reliability:
        accumulator = CalibrationAccumulator(10)
        generator = torch.Generator().manual_seed(0)
        logits = 3 * torch.randn(500, K, generator=generator, dtype=torch.float64)
        accumulator.update(logits, torch.randint(0, K, (500,), generator=generator))
        write_csv(path / "reliability.csv", accumulator.compute()["reliability"])
    return path


def _files(written):
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)
    return sorted(p.name for p in written)


def test_a_measurement_folder_draws_its_three_figures(tmp_path):
    folder = _measurement_folder(tmp_path / "m")
    assert folder_kind(folder) == "measurement"
    written = draw_from(folder, dpi=40)
    assert _files(written) == sorted(f"{n}.{x}" for n in RUN_FIGURES for x in ("png", "pdf"))
    assert all(p.parent == folder / "figures" for p in written)


def test_the_theory_panel_puts_its_points_where_the_network_panel_does(tmp_path):
    # The network's features are the exact optimum for its own W and offset, at the lam_H and
    # on the cells the theory panel draws: the two panels must show the same points.
    arrays = _optimal_samples([(a, b) for i, a in enumerate(TRIPLE) for b in TRIPLE[i:]])
    figure = Figure()
    network_ax, theory_ax = figure.subplots(1, 2)
    network = plot_triple(network_ax, arrays, TRIPLE)
    exact = own_classifier_triple(arrays["weight"], arrays["bias"], arrays["global_mean"], TRIPLE,
                                  LAM_H, LAMS)  # fmt: skip
    theory = plot_theory_triple(theory_ax, arrays, theory=exact)
    for key in ("c", "c_prime", "lam"):
        np.testing.assert_array_equal(network[key], theory[key])
    np.testing.assert_allclose(network["basis"], theory["basis"])
    np.testing.assert_allclose(theory["coordinates"], network["coordinates"], atol=1e-6)
    for net, exact in zip(network_ax.collections[:2], theory_ax.collections[:2]):
        np.testing.assert_allclose(exact.get_offsets(), net.get_offsets(), atol=1e-6)
    centred = arrays["features"] - arrays["global_mean"]
    np.testing.assert_allclose(theory["features"], centred, atol=1e-6)
    assert len(network_ax.collections[0].get_offsets()) == 3 * len(LAMS)  # pairs c != c'


def test_the_panels_draw_from_a_folder(tmp_path):
    folder = _measurement_folder(tmp_path / "m", triple=None)
    figure = Figure()
    axes = figure.subplots(1, 4)
    network = plot_triple(axes[0], folder)
    # No triple stored: the three classes with the most samples, ties to the first (0, 1, 2).
    assert network["classes"].tolist() == [0, 1, 2]
    theory = plot_theory_triple(axes[1], folder)  # the folder's theory_triple.npz
    np.testing.assert_allclose(theory["coordinates"], network["coordinates"], atol=1e-6)
    plot_coefficient_curves(axes[2], folder)
    assert "amplification" in axes[2].get_title()
    plot_reliability(axes[3], folder)
    assert "ECE = 0.040" in axes[3].get_title()
    with pytest.raises(ValueError, match="theory must be given when source is not a folder"):
        plot_theory_triple(axes[1], read_mixed_features(folder))


def test_the_triple_with_the_most_samples():
    c = np.array([0, 0, 2, 2, 3, 4, 4, 4])
    c_prime = np.array([1, 1, 3, 4, 4, 4, 4, 2])
    assert choose_triple(c, c_prime, 5) == (2, 3, 4)  # 6 samples among them, 2 among 0, 1, x
    assert choose_triple(np.array([0]), np.array([0]), 4) == (0, 1, 2)


def test_lam_H_of_the_theory_panel():
    assert theory_lam_H({"curve_fitted_lam_H": 0.01, "fitted_lam_H": 0.2}) == (
        0.01,
        "curve_fitted_lam_H",
    )
    assert theory_lam_H({"curve_fitted_lam_H": 1e4, "fitted_lam_H": 0.2}) == (0.2, "fitted_lam_H")
    assert theory_lam_H({"curve_fitted_lam_H": "nan", "fitted_lam_H": 0.2}) == (0.2, "fitted_lam_H")
    value, key = theory_lam_H({"curve_fitted_lam_H": "nan"})
    assert np.isnan(value) and key == ""


def test_without_reliability_csv_there_is_no_reliability_figure(tmp_path):
    folder = _measurement_folder(tmp_path / "m", reliability=False,
                                 summary={"curve_fitted_lam_H": "nan", "fitted_lam_H": "nan"})  # fmt: skip
    logged = []
    written = draw_run_figures(folder, out=tmp_path / "out", dpi=40, log=logged.append)
    assert _files(written) == ["coefficient_curves.pdf", "coefficient_curves.png",
                               "three_classes.pdf", "three_classes.png"]  # fmt: skip
    assert any("reliability: not drawn" in line for line in logged)
    with pytest.raises(ValueError, match="needs reliability.csv"):
        draw_run_figures(folder, ["reliability"], out=tmp_path / "out")
    with pytest.raises(ValueError, match="unknown figure 'nc'.*three_classes"):
        draw_run_figures(folder, ["nc"])


def test_a_training_run_folder_draws_its_figures(tmp_path, capsys):
    run = tmp_path / "run"
    run_training(TrainConfig(epochs=1, **FAST_MEASUREMENT), run, progress=False)
    assert folder_kind(run) == "run"
    assert cli.main(["figures", "--from", str(run), "--dpi", "40"]) == 0
    assert "wrote 6 files" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(
        f"{n}.{x}" for n in RUN_FIGURES for x in ("png", "pdf")
    )
    triple = json.loads((run / "summary.json").read_text())["triple"]
    network = plot_triple(Figure().subplots(), run)
    assert network["classes"].tolist() == triple
    # A run measured before the features file existed gives the figures of the files it has.
    (run / "measurements" / "epoch_0001" / "mixed_features.npz").unlink()
    written = draw_from(run, out=tmp_path / "old", dpi=40)
    assert _files(written) == ["coefficient_curves.pdf", "coefficient_curves.png",
                               "reliability.pdf", "reliability.png"]  # fmt: skip


def test_an_unknown_folder_is_refused_naming_each_kind(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError) as error:
        draw_from(empty)
    for text in ("reproduction", "sweep folder", "training run", "measurement folder",
                 "summary.json or scalars.json", "measurements/epoch_NNNN"):  # fmt: skip
        assert text in str(error.value)
    with pytest.raises(ValueError, match="not the folder of a measured network"):
        draw_run_figures(empty)
    assert cli.main(["figures", "--from", str(empty)]) == 2
    assert "training run" in capsys.readouterr().err


def test_a_bad_features_file_is_refused(tmp_path):
    arrays = _optimal_samples([(0, 0), (0, 1)], lams=[0.5])
    with pytest.raises(ValueError, match="features file: missing required 'lam'"):
        read_mixed_features({k: v for k, v in arrays.items() if k != "lam"})
    with pytest.raises(ValueError, match=r"'lam' must lie in \[0, 1\]"):
        read_mixed_features({**arrays, "lam": arrays["lam"] + 1})
    with pytest.raises(ValueError, match="does not exist"):
        read_mixed_features(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="triple must be three distinct classes"):
        plot_triple(Figure().subplots(), arrays, (0, 1, 1))
    with pytest.raises(ValueError, match="lam_H must be a finite positive number, got -1"):
        own_classifier_triple(arrays["weight"], None, arrays["global_mean"], (0, 1, 2), -1, LAMS)
    # Without bias and centre: no bias, the centre estimated from the mixed features.
    loose = read_mixed_features(
        {k: v for k, v in arrays.items() if k not in ("bias", "global_mean")}
    )
    assert not loose["bias"].any() and loose["global_mean"].shape == (D,)


def test_the_dpi_help_shows_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["figures", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 150)" in out and "measurement folder" in out
