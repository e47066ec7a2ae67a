"""The common logit shift of a learned classifier (``common_logit_shift`` in a solve's summary):
the squared error's common row offset shifts every sample's logits alike, as the bias it
lacks would, and a learned bias takes the shift over; a shift-invariant loss has none."""

import torch

from ufm import etf_distance
from ufm.solver import UFMConfig, solve

# Solved to gradient 1e-10: the stationarity conditions below hold to about 1e-8.
SMALL = {"K": 4, "d": 6, "num_lams": 5, "classifier": "learned", "tol": 1e-10, "device": "cpu"}
CLOSE = 1e-7


def test_the_squared_error_shifts_every_sample_alike_and_a_bias_takes_the_shift_over():
    plain = solve(UFMConfig(**SMALL, loss="mse"))
    s = plain.summary
    shift = plain.H @ plain.W.mean(0)  # u . h for every sample, u the mean row of W
    assert s["common_logit_shift"] == float(shift.mean())
    assert s["common_logit_shift_sd"] == float(shift.std())
    assert s["bias_mean"] is None and s["bias_spread"] is None
    # the same shift for every sample, and W is no ETF while its centred W is
    assert s["common_logit_shift_sd"] < CLOSE * s["common_logit_shift"]
    assert s["etf_distance_W"] > 0.1 and s["etf_distance_W_centred"] < CLOSE
    biased = solve(UFMConfig(**SMALL, loss="mse", bias=True)).summary
    # the bias is the mean target, 1/K in every entry: at the optimum the mean logit of
    # every class is the mean of its targets, and the centred features average to zero
    assert abs(biased["bias_mean"] - 1 / SMALL["K"]) < CLOSE and biased["bias_spread"] < CLOSE
    assert biased["etf_distance_W"] < CLOSE


def test_a_shift_invariant_loss_has_no_common_shift():
    result = solve(UFMConfig(**SMALL, loss="ce"))
    # a minimum has 1^T W = 0: the mean row of W, and with it the shift, vanish
    assert torch.linalg.vector_norm(result.W.mean(0)) < CLOSE
    assert abs(result.summary["common_logit_shift"]) < CLOSE
    assert etf_distance(result.W) < CLOSE
