"""Mixed precision for a learned classifier (ufm.solver.newton) and the anchor start
(ufm.solver.anchor_start).

A learned classifier is unique only up to a rotation of feature space, so two runs are
compared through rotation-invariant quantities: W W^T, the loss, the feature norms. Each
mixed-precision result is checked against the same problem solved in float64 throughout,
and the anchors against independent solves (autograd Newton, and the exact theory for a
simplex ETF).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ufm
from ufm.solver import anchor_start
from ufm.solver.feature_newton import FeatureSolver
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState
from ufm.solver.newton import newton_method

LEARNED = dict(K=6, d=8, classifier="learned", tol=1e-9)


def _phases(result):
    return [row["feature_dtype"] for row in result.history]


def _objective(result) -> float:
    """The penalised objective of (H, W, b), from its definition (docs/theory.md section 1)."""
    config = result.config
    problem = build_problem(config)
    z = result.H @ result.W.T + (0 if result.b is None else result.b)
    values, _, _ = problem.loss.pair_terms(z, problem.c, problem.c_prime,
                                                     problem.lam, need_grad=False)
    F = values.mean() + 0.5 * config.lam_H * (result.H * result.H).sum(-1).mean()
    F = F + 0.5 * config.lam_W * (result.W * result.W).sum()
    if result.b is not None:
        F = F + 0.5 * config.lam_b * (result.b * result.b).sum()
    return float(F)


def _same_optimum(a, b, tol=1e-6):
    gram_a, gram_b = a.W @ a.W.T, b.W @ b.W.T
    assert float((gram_a - gram_b).norm() / gram_b.norm()) < tol
    assert abs(a.summary["loss"] - b.summary["loss"]) < 1e-12
    assert float((a.H.norm(dim=1) - b.H.norm(dim=1)).abs().max() / b.H.norm(dim=1).max()) < tol


CASES = [
    LEARNED,
    dict(LEARNED, loss="label_smoothing"),
    dict(LEARNED, loss="mse"),
    dict(K=5, d=6, classifier="learned", tol=1e-9, mixup_points=3, num_lams=4),
    dict(LEARNED, bias=True, lam_b=1e-3),
    dict(K=6, d=8, bias=True, lam_b=1e-3, tol=1e-10),  # fixed ETF, learned bias: logit frame
    dict(LEARNED, imbalance_ratio=8.0, minority_classes=2),
    # small lam_H: newton_gram's float32 Hessian products lose every digit there and must
    # give way to float64 ones
    dict(LEARNED, lam_H=1e-4, lam_W=1e-4),
    # the float32 phase's LU of the mixture preconditioner was singular here when formed
    # in float32
    {"K": 5, "d": 6, "classifier": "learned", "tol": 1e-9, "mixup_points": 3, "num_lams": 4,
     "lam_H": 1e-4, "lam_W": 1e-4},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_mixed_precision_reaches_the_float64_optimum(case):
    mixed = ufm.solve(ufm.UFMConfig(**case))
    plain = ufm.solve(ufm.UFMConfig(**case, mixed_precision=False))
    for result in (mixed, plain):
        assert result.stop_reason == "converged" and result.summary["grad_norm"] <= case["tol"]
        assert result.H.dtype == result.W.dtype == torch.float64
    phases = _phases(mixed)
    # a float32 phase, then float64 to the end
    assert phases[0] == "float32" and phases[-1] == "float64"
    assert phases == sorted(phases, key=lambda p: p == "float64")
    assert set(_phases(plain)) == {"float64"}
    # each W within about its gradient norm over lam_W of the optimum (up to a rotation)
    _same_optimum(mixed, plain, tol=max(1e-6, 5 * case["tol"] / case.get("lam_W", 5e-3)))
    if mixed.b is not None:
        assert float((mixed.b - plain.b).norm()) < 1e-6


def test_a_stop_in_the_float32_phase_is_measured_in_float64():
    result = ufm.solve(ufm.UFMConfig(**LEARNED, max_iters=2))
    assert result.stop_reason == "max_iters"
    assert _phases(result)[:2] == ["float32", "float32"] and _phases(result)[-1] == "float64"
    assert result.H.dtype == torch.float64
    # the recorded loss is that of the returned float64 variables, to float64 precision
    assert abs(result.summary["loss"] - _objective(result)) < 1e-13


def test_resume_from_the_float32_phase_is_the_straight_run(tmp_path):
    config = ufm.UFMConfig(**LEARNED)
    straight = ufm.solve(config)
    stopped = ufm.solve(replace(config, max_iters=2), checkpoint_dir=tmp_path)
    assert _phases(stopped)[-1] == "float64"  # the final measurement ...
    resumed = ufm.solve(config, checkpoint_dir=tmp_path, resume=True)
    # ... but the checkpoint held the float32 phase, so the runs agree to the bit
    assert torch.equal(resumed.W, straight.W) and torch.equal(resumed.H, straight.H)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def test_float32_problems_and_fixed_classifiers_have_one_phase():
    single = ufm.solve(ufm.UFMConfig(**dict(LEARNED, tol=1e-5), dtype="float32"))
    assert set(_phases(single)) == {"float32"} and single.H.dtype == torch.float32
    fixed = ufm.solve(ufm.UFMConfig(K=6, d=8, tol=1e-10))
    assert set(_phases(fixed)) == {"float64"}


def test_mixed_precision_must_be_a_bool():
    with pytest.raises(ValueError, match="mixed_precision must be true or false, got 'yes'"):
        ufm.UFMConfig(mixed_precision="yes")


# -- the anchor start ------------------------------------------------------------------------

def _solver(config):
    config = replace(config, mixed_precision=False)  # the solver in the problem's float64
    state = RunState(build_problem(config))
    method = newton_method(state)
    solver = method.feature_solver
    method._set_classifier(state.W, state.b)
    return state, solver


def _autograd_anchor(W, b, loss, k, lam_H):
    """The pure-target optimum of class k by dense Newton with autograd (independent)."""
    h = torch.zeros(W.shape[1], dtype=W.dtype, requires_grad=True)
    c = torch.tensor([k])
    lam = torch.ones(1, dtype=W.dtype)

    def phi(h):
        z = (W @ h + (0 if b is None else b))[None]
        value, _, _ = loss.pair_terms(z, c, c, lam, need_grad=False)
        return value.sum() + 0.5 * lam_H * h.dot(h)

    for _ in range(60):
        grad = torch.autograd.grad(phi(h), h)[0]
        hess = torch.autograd.functional.hessian(phi, h.detach())
        h = (h.detach() - torch.linalg.solve(hess, grad)).requires_grad_(True)
    return h.detach()


@pytest.mark.parametrize("loss", ["ce", "mse", "label_smoothing"])
def test_anchors_are_the_pure_target_optima(loss):
    config = ufm.UFMConfig(K=5, d=7, classifier="learned", loss=loss, bias=True)
    state, solver = _solver(config)
    b = 0.3 * torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    solver.set_classifier(state.W, b)
    anchors = anchor_start.anchor_coordinates(solver) @ solver.V.T  # as features
    for k in range(5):
        exact = _autograd_anchor(state.W, b, solver.loss, k, config.lam_H)
        assert float((anchors[k] - exact).norm() / exact.norm()) < 1e-12


def test_anchor_mixtures_of_a_simplex_etf_against_the_theory():
    config = ufm.UFMConfig(K=6, d=8, num_lams=5)
    problem = build_problem(config)
    _, solver = _solver(config)
    anchor_start.start_at_anchors(solver)
    H = solver.features()
    h = ufm.optimal_features(problem.W0, torch.arange(6), torch.arange(6), 1.0, config.lam_H)
    pairs = solver.pair_columns  # the solver's samples: one per soft target
    lam = pairs.lam[:, None]
    expected = lam * h[pairs.c] + (1 - lam) * h[pairs.c_prime]
    assert float((H - expected).norm() / expected.norm()) < 1e-12
    # the samples of one class (same-class pairs, lam = 0 or 1) start at their exact optimum
    pure = (pairs.c == pairs.c_prime) | (pairs.lam == 0) | (pairs.lam == 1)
    c = torch.where(pairs.lam == 0, pairs.c_prime, pairs.c)[pure]
    exact = ufm.optimal_features(problem.W0, c, c, 1.0, config.lam_H)
    assert float((H[pure] - exact).norm() / exact.norm()) < 1e-12


def test_anchor_mixtures_of_m_classes():
    config = ufm.UFMConfig(K=5, d=6, classifier="learned", mixup_points=3, num_lams=4)
    _, solver = _solver(config)
    anchor_start.start_at_anchors(solver)
    anchors = anchor_start.anchor_coordinates(solver)
    expected = (solver.weights[:, :, None] * anchors[solver.classes]).sum(1)
    assert float((solver.X - expected).norm() / expected.norm()) < 1e-13


def test_the_anchor_start_saves_newton_passes(monkeypatch):
    config = ufm.UFMConfig(K=20, d=24, tol=1e-11)
    anchored = ufm.solve(config)
    monkeypatch.setattr("ufm.solver.newton.start_at_anchors", lambda solver: None)
    from_zero = ufm.solve(config)
    assert from_zero.history[0]["loss"] > anchored.history[0]["loss"]
    assert anchored.summary["iterations"] < from_zero.summary["iterations"]
    # tol 1e-11 on the gradient claims about 1e-10 on the features (curvature >= lam_H)
    assert anchored.summary["theory_distance"] < 1e-10 and from_zero.summary["theory_distance"] < 1e-10


def test_start_at_anchors_fills_every_chunk():
    config = ufm.UFMConfig(K=4, d=5, classifier="learned", num_lams=7, chunk_size=5)
    state, solver = _solver(config)
    anchor_start.start_at_anchors(solver)
    reference = FeatureSolver(solver.classes, solver.weights, solver.loss, config.lam_H, 10**6)
    reference.set_classifier(state.W, None)
    anchor_start.start_at_anchors(reference)
    # the same elementwise formula row by row, whatever the chunks
    assert float((solver.X - reference.X).norm() / reference.X.norm()) < 1e-15
