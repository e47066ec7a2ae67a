"""What made a network's measurement cheaper (issue 23) gives the numbers of the old code path.

* A fit of an effective lam_H (:func:`ufm.nets.ufm_comparison.fit_log_lam_H`) evaluates the
  theory on a grid of ridges, then refines with Brent. The grid is solved for all ridges at
  once (:func:`ufm.theory.optimum.optimal_coefficients_over_lam_H`); the old path solved once
  per ridge. The coefficients, the objective on the grid and the fitted lam_H must be equal
  bit for bit.
* :func:`ufm.nets.ufm_comparison.sample_agreement` takes the distance between two classifier
  rows from a table of the K x K pairs, and the softmax of the theory's optimum once per cell
  instead of once per sample; both against the per-sample formulas of the old path.
* :func:`ufm.io.write_csv`, which rewrites metrics.csv after every epoch with a measurement's
  hundred columns, gathers its cells by plain lists: the file must be byte for byte what
  ``csv.DictWriter`` wrote before.
* ``ufm train`` runs numpy's BLAS on its own threads (one by default), ``ufm compare`` on the
  machine's: a measurement must not depend on their number, so its Frobenius norms are
  summed by numpy (:func:`ufm.nets.ufm_comparison.frobenius_norm`), within rounding of the
  BLAS norms of the old path.
"""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nets_support import one_torch_thread  # noqa: F401

import ufm
from ufm.devices import blas_threads
from ufm.io import to_jsonable, write_csv
from ufm.losses import get_loss
from ufm.nets import coefficient_curves, ufm_comparison
from ufm.nets.coefficient_curves import binned_ce_curves, fit_curve_lam_H
from ufm.nets.ufm_comparison import fit_lam_H, ufm_margins
from ufm.theory.optimum import optimal_coefficients_over_lam_H

GRID = [math.exp(t) for t in np.linspace(math.log(1e-8), math.log(1e4), 31)]
LAMS = np.linspace(0.0, 1.0, 11)
LAMS[5] = 0.5
BINNED = np.sort(np.random.default_rng(0).random((7, 5)), axis=1)


@pytest.mark.parametrize(
    "loss", ["ce", "label_smoothing", "mse", get_loss("label_smoothing", eps=0.3)]
)
@pytest.mark.parametrize(("K", "scale"), [(3, 0.4), (10, 1.7), (100, 3.0)])
@pytest.mark.parametrize("lams", [LAMS, LAMS[:, None], BINNED], ids=["grid", "column", "binned"])
def test_coefficients_over_lam_H_equal_one_solve_per_ridge(loss, K, scale, lams):
    a, b = optimal_coefficients_over_lam_H(K, lams, GRID, scale, loss)
    assert a.shape == b.shape == (len(GRID), *lams.shape)
    for k, lam_H in enumerate(GRID):
        a_k, b_k = ufm.optimal_coefficients(K, lams, lam_H, scale, loss)
        assert np.array_equal(a[k], a_k) and np.array_equal(b[k], b_k)


@pytest.mark.parametrize(
    ("ridges", "message"),
    [([], "at least one"), ([1e-3, 0.0], "lam_H"), ([1e-3, math.nan], "lam_H")],
)
def test_coefficients_over_lam_H_refuse_bad_ridges(ridges, message):
    with pytest.raises(ValueError, match=message):
        optimal_coefficients_over_lam_H(10, LAMS, ridges)


def test_coefficients_over_lam_H_refuse_a_loss_without_theory():
    with pytest.raises(ValueError, match="no exact theory"):
        optimal_coefficients_over_lam_H(10, LAMS, [1e-3], loss="focal")


def _spy_on_grid(monkeypatch, module):
    """Replace ``module.fit_log_lam_H`` by one that checks, on every fit, that the vectorised
    grid gives exactly the scalar objective's values, and records the fit with and without it
    (the old path: one solve per grid point)."""
    real = ufm_comparison.fit_log_lam_H
    fits = []

    def checking(objective, points=61, grid_objective=None):
        assert grid_objective is not None
        grid = np.linspace(math.log(1e-8), math.log(1e4), points)
        assert list(grid_objective(grid)) == [objective(t) for t in grid]
        fits.append((real(objective, points, grid_objective), real(objective, points)))
        return fits[-1][0]

    monkeypatch.setattr(module, "fit_log_lam_H", checking)
    return fits


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
@pytest.mark.parametrize("lams", [LAMS[:, None], BINNED], ids=["grid", "binned"])
def test_margin_fit_is_that_of_the_old_path(monkeypatch, loss, lams):
    fits = _spy_on_grid(monkeypatch, ufm_comparison)
    K, gain = 10, 2.5
    rng = np.random.default_rng(1)
    theory, _, _ = ufm_margins(K, gain, lams, 3e-3, get_loss(loss))
    counts = rng.integers(5, 40, size=len(lams)).astype(np.float64)
    margins = theory + 0.05 * rng.standard_normal(len(lams))
    fitted = fit_lam_H(margins, lams, K, gain, get_loss(loss), counts)
    assert len(fits) == 1 and fits[0][0] == fits[0][1] == fitted


@pytest.mark.parametrize("lams", [LAMS, BINNED], ids=["grid", "binned"])
@pytest.mark.parametrize("lam_H", [3e-3, 1e3])
def test_curve_fit_is_that_of_the_old_path(monkeypatch, lams, lam_H):
    fits = _spy_on_grid(monkeypatch, coefficient_curves)
    K, gain = 10, 2.5
    a, b = binned_ce_curves(K, gain, lams, lam_H)
    noise = 0.01 * np.random.default_rng(2).standard_normal((2, len(a)))
    a_norm, b_norm = a + noise[0], b + noise[1]
    a_norm[3] = np.nan  # a lam without cells is left out of the fit
    centres = lams if lams.ndim == 1 else lams.mean(axis=1)
    curves = SimpleNamespace(a_norm=a_norm, b_norm=b_norm, lam=centres)
    fitted = fit_curve_lam_H(curves, K, gain, lams)
    assert len(fits) == 1 and fits[0][0] == fits[0][1] == fitted


def _samples(K=10, L=11, N=3000, seed=3):
    """Classifier rows, classes c != c' and lam indices of N random samples, and (a, b) (L,)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((K, 16))
    c = rng.integers(K, size=N)
    c_prime = (c + rng.integers(1, K, size=N)) % K
    return W, c, c_prime, rng.integers(L, size=N), rng.random(L), rng.random(L)


def test_theory_probabilities_per_cell_equal_those_per_sample():
    W, c, c_prime, lam_index, a, b = _samples()
    optimum = a[lam_index, None] * W[c] + b[lam_index, None] * W[c_prime]  # the old path
    logits = optimum @ W.T
    old = np.exp(logits - logits.max(-1, keepdims=True))
    old /= old.sum(-1, keepdims=True)
    new = ufm_comparison._theory_probabilities(W, a, b, c, c_prime, lam_index)
    assert np.array_equal(new, old)


def test_boundary_distances_from_the_row_table_equal_those_per_sample():
    W, c, c_prime, lam_index, _, _ = _samples()
    c_prime[:300] = c[:300]  # some same-class samples, which have no boundary distance
    features = np.random.default_rng(4).standard_normal((len(c), W.shape[1]))
    agreement = ufm_comparison.sample_agreement(
        features, c, c_prime, lam_index, LAMS, W, None, np.zeros(W.shape[1]), get_loss("focal")
    )
    d = c != c_prime
    logits = features[d] @ W.T
    margins = logits[np.arange(d.sum()), c[d]] - logits[np.arange(d.sum()), c_prime[d]]
    distances = np.abs(margins) / np.linalg.norm(W[c[d]] - W[c_prime[d]], axis=-1)  # old path
    half, ends = lam_index[d] == 5, np.isin(lam_index[d], (0, 10))
    assert agreement.scalars["boundary_distance_half"] == float(distances[half].mean())
    assert agreement.scalars["boundary_distance_half_relative"] == float(
        distances[half].mean() / distances[ends].mean()
    )


def _old_write_csv(path, rows):
    """write_csv as it was: ``csv.DictWriter`` over the union of the keys."""
    rows = [dict(to_jsonable(r)) for r in rows]
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_csv_is_byte_for_byte_that_of_dict_writer(tmp_path):
    rows = [
        {"epoch": 1, "lr": 0.05, "loss": np.float32(0.25), "flag": True, "none": None},
        {"epoch": 2, "nc1": math.nan, "ratio": math.inf, "low": -math.inf, "big": 1e300,
         "tiny": 5e-324, "name": 'a, "quoted"\nline', "list": [1.5, np.float64(math.nan)],
         "count": np.int64(7), "yes": np.bool_(False), "epoch_again": 2.0},
        {"seconds": 3.25, "epoch": 3, "lr": np.float64(0.1) / 3},
        {},
    ]  # fmt: skip
    _old_write_csv(tmp_path / "old.csv", rows)
    write_csv(tmp_path / "new.csv", rows)
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    for value in (0.5, -0.0, math.nan, math.inf, 3, True, None, "s"):
        assert repr(to_jsonable(value)) == repr(
            str(value) if isinstance(value, float) and not math.isfinite(value) else value
        )


def test_a_measurement_is_the_same_on_one_and_on_two_blas_threads():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24), torch.nn.Linear(24, 10)
    ).double()
    x = torch.randn(400, 8, dtype=torch.float64)
    y = torch.arange(400) % 10
    settings = ufm.MeasureSettings(pairs_all_classes=40, linearity_pairs=10)  # 24,200 samples
    measured = {}
    for threads in (1, 2):
        with blas_threads(threads):
            measured[threads] = ufm.measure_network(model, x, y, settings=settings).summary
    one, two = measured[1], measured[2]
    keys = set(one) - {"seconds"}
    assert [k for k in keys if repr(one[k]) != repr(two[k])] == []
    assert one["samples"] == 24200 and math.isfinite(one["exact_W_feature_distance"])


@pytest.mark.parametrize("shape", [(24200, 64), (55, 11, 64), (3,)])
def test_frobenius_norm_is_the_blas_norm_within_rounding(shape):
    x = np.random.default_rng(5).standard_normal(shape)
    assert ufm_comparison.frobenius_norm(x) == pytest.approx(np.linalg.norm(x), rel=1e-13)
