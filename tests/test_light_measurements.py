"""Light measurements (issue 23): ``ufm train`` skips the fits of lam_H before its final one.

A scheduled measurement before the last is light unless ``fits_every_measurement``
(``fit_lam_H`` of :class:`ufm.nets.MeasureSettings`): it measures everything a full one
does, only the numbers of the theory at a fitted lam_H are NaN. The final measurement, and
so the summary, is the full one whatever the setting.
"""

from __future__ import annotations

import math

import pytest
from nets_support import FAST_MEASUREMENT, one_torch_thread  # noqa: F401

from ufm.io import read_json
from ufm.nets import MeasureSettings, TrainConfig, run_training

THEORY_NUMBERS = (
    "fitted_lam_H", "margin_fit_rms", "curve_fitted_lam_H", "amplification_theory", "ce_chi2",
    "ce_chi2_per_dof", "ce_p_value", "ce_curve_rms", "ce_curve_rms_in_se",
    "amplification_exact_W", "exact_W_feature_distance", "exact_W_curve_distance",
    "exact_W_curve_rms",
)  # fmt: skip
"""NaN in a light measurement."""
THEORY_WORDS = ("curve_fitted_lam_H_status", "ce_verdict", "ce_dof", "better_fit",
                "squared_error_verdict", "theory_triple_lam_H_source")  # fmt: skip
"""Words and counts that follow from the fit (the null's verdict too: nothing to compare)."""


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_the_switches_must_be_true_or_false(value):
    with pytest.raises(ValueError, match="fit_lam_H must be true or false"):
        MeasureSettings(fit_lam_H=value)
    with pytest.raises(ValueError, match="fits_every_measurement must be true or false"):
        TrainConfig(fits_every_measurement=value)


def test_settings_of_a_run_are_light_before_the_final_measurement():
    config = TrainConfig()
    assert config.measure_settings(2).fit_lam_H
    assert not config.measure_settings(2, final=False).fit_lam_H
    every = TrainConfig(fits_every_measurement=True)
    assert every.measure_settings(2, final=False).fit_lam_H


def test_light_measurements_keep_every_measured_number_and_the_final_one_is_full(tmp_path):
    common = {"epochs": 3, "measure_every": 1, **FAST_MEASUREMENT}
    light = run_training(TrainConfig(**common), tmp_path / "light", progress=False)
    full = run_training(
        TrainConfig(**common, fits_every_measurement=True), tmp_path / "full", progress=False
    )
    light.pop("seconds"), full.pop("seconds")
    assert light.keys() == full.keys()
    assert all(_same(light[k], full[k]) for k in light), "the final measurement is the full one"
    assert math.isfinite(light["fitted_lam_H"])

    for epoch in ("epoch_0001", "epoch_0002"):
        first = read_json(tmp_path / "light" / "measurements" / epoch / "scalars.json")
        second = read_json(tmp_path / "full" / "measurements" / epoch / "scalars.json")
        assert first.keys() == second.keys()
        theory = set(THEORY_NUMBERS) | set(THEORY_WORDS) | {"seconds"}
        differing = [k for k in first if k not in theory and not _same(first[k], second[k])]
        assert not differing, differing
        assert all(first[k] == "nan" for k in THEORY_NUMBERS)  # NaN as JSON writes it
        assert math.isfinite(second["fitted_lam_H"])
        assert first["curve_fitted_lam_H_status"] == "not_fitted"
        assert not (tmp_path / "light" / "measurements" / epoch / "theory_triple.npz").exists()
    for run in ("light", "full"):
        assert (tmp_path / run / "measurements" / "epoch_0003" / "theory_triple.npz").is_file()
