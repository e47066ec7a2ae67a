"""The UFM solver against the exact theory, the convex certificate and finite differences."""

import math
import signal
import threading
import _thread
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest
import torch

from ufm.theory.certificate import certify
from ufm.etf import etf_distance, simplex_etf
from ufm.solver.feature_newton import FeatureSolver
from ufm.losses import get_loss
from ufm.solver.problem import UFMConfig, build_problem
from ufm.solver import solve
from ufm.solver.state import Iterate
from ufm.theory import optimal_features

SMALL = dict(K=10, d=32)


def _objective(H, W, b, problem, config):
    """L(H, W, b) written out independently of the solver (docs/theory.md section 1)."""
    z = H @ W.T + (0 if b is None else b)
    loss = problem.loss(z, problem.c, problem.c_prime, problem.lam).mean()
    value = loss + 0.5 * config.lam_H * (H * H).sum(1).mean() + 0.5 * config.lam_W * (W * W).sum()
    if b is not None:
        value = value + 0.5 * config.lam_b * (b * b).sum()
    return value


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_fixed_etf_small_matches_theory_to_1e10(loss):
    result = solve(UFMConfig(**SMALL, loss=loss, tol=1e-11))
    assert result.stop_reason == "converged"
    W = simplex_etf(10, 32, seed=0)
    exact = optimal_features(W, result.c, result.c_prime, result.lam, 5e-3, loss=loss)
    relative = float((result.H - exact).norm() / exact.norm())
    assert relative <= 1e-10
    reported = result.summary["theory_distance"]
    assert reported <= 1e-10
    # The summary reports the same distance, computed on another path: equal to 1e-6 when it is
    # resolved, and both at rounding level (< 1e-13, where their digits are the CPU's) otherwise.
    assert reported == pytest.approx(relative, rel=1e-6, abs=1e-13)
    assert max(result.summary["theory_distance_per_lam"].values()) <= 1e-10
    assert torch.equal(result.W, W)  # a fixed classifier is never changed


def test_fixed_etf_medium_matches_theory_to_1e8():
    result = solve(UFMConfig(K=100, d=128, tol=1e-10))
    assert result.stop_reason == "converged" and result.H.shape == (210_000, 128)
    assert result.summary["theory_distance"] <= 1e-8


def test_geometry_of_the_solved_features():
    result = solve(UFMConfig(K=6, d=8, tol=1e-11))
    H, W = result.H, result.W
    same = result.c == result.c_prime
    for k in range(6):
        rows = H[same & (result.c == k)]
        assert (rows - rows[0]).abs().max() <= 1e-10 * rows[0].norm()  # lam-independent
    half = (~same) & (result.lam == 0.5)
    z = H[half] @ W.T
    idx = torch.arange(z.shape[0])
    gap = z[idx, result.c[half]] - z[idx, result.c_prime[half]]
    assert gap.abs().max() <= 1e-10 * z.abs().max()  # on the decision boundary


def test_learned_classifier_ce_converges_to_an_etf_and_the_theory():
    result = solve(UFMConfig(**SMALL, classifier="learned", tol=1e-8))
    s = result.summary
    assert result.stop_reason == "converged" and s["grad_norm"] <= 1e-8
    assert s["etf_distance_W"] <= 1e-6
    exact = optimal_features(result.W, result.c, result.c_prime, result.lam, 5e-3, etf_tol=1e-6)
    assert float((result.H - exact).norm() / exact.norm()) <= 1e-6
    assert s["theory_distance_learned_W"] <= 1e-6


def test_reported_gradients_match_finite_differences():
    config = UFMConfig(K=4, d=5, classifier="learned", bias=True, lam_b=1e-2, num_lams=3)
    problem = build_problem(config)
    g = torch.Generator().manual_seed(1)
    W = torch.randn(4, 5, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    H = torch.randn(problem.n, 5, generator=g, dtype=torch.float64)
    solver = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H)
    solver.set_classifier(W, b, H=H)
    H = solver.features()  # the solver keeps features in the row space of W
    stats = solver.evaluate()
    n = problem.n
    assert stats.objective_sum / n + 0.5 * config.lam_W * float((W * W).sum()) + 0.5 * config.lam_b * float(
        (b * b).sum()
    ) == pytest.approx(float(_objective(H, W, b, problem, config)), rel=1e-14)
    step = 1e-6
    for name, tensor, analytic in (
        ("W", W, stats.grad_W / n + config.lam_W * W),
        ("b", b, stats.grad_b / n + config.lam_b * b),
    ):
        direction = torch.randn(tensor.shape, generator=g, dtype=torch.float64)

        def value(t, name=name, direction=direction):
            Wt = W + t * direction if name == "W" else W
            bt = b + t * direction if name == "b" else b
            return float(_objective(H, Wt, bt, problem, config))

        fd = (value(step) - value(-step)) / (2 * step)
        assert float((analytic * direction).sum()) == pytest.approx(fd, rel=1e-7, abs=1e-10)
    # per-sample feature gradient n dL/dh_s, in its root-mean-square form
    Hg = H.clone().requires_grad_(True)
    (grad_H,) = torch.autograd.grad(_objective(Hg, W, b, problem, config), Hg)
    rms = float((n * grad_H).norm() / math.sqrt(n))
    assert math.sqrt(stats.feature_grad_sq_sum / n) == pytest.approx(rms, rel=1e-12)


def test_fixed_random_classifier_agrees_with_the_convex_certificate():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(5, 7, generator=g, dtype=torch.float64)
    config = UFMConfig(K=5, d=7, classifier="fixed", num_lams=5, tol=1e-12)
    result = solve(config, W_init=W)
    certificate = certify(W, result.c, result.c_prime, result.lam, config.lam_H)
    scale = result.H.norm(dim=1).max().item()
    assert np.abs(certificate.h - result.H.numpy()).max() <= 1e-6 * scale


@pytest.mark.parametrize(
    "overrides",
    [dict(loss="label_smoothing", loss_params={"eps": 0.1}), dict(loss="focal"),
     dict(classifier="learned", loss="mse"), dict(classifier="learned", bias=True, lam_b=1e-3)],
)
def test_other_variants_reach_a_stationary_point(overrides):
    result = solve(UFMConfig(**SMALL, tol=1e-8, **overrides))
    assert result.stop_reason == "converged" and result.summary["grad_norm"] <= 1e-8


def test_momentum_gradient_descent_reaches_the_theory():
    result = solve(UFMConfig(K=5, d=6, method="gd", tol=1e-9, max_iters=20000))
    assert result.stop_reason == "converged"
    assert result.summary["theory_distance"] <= 1e-8


def test_diverging_run_stops_at_once_and_keeps_a_finite_state():
    result = solve(UFMConfig(K=5, d=6, loss="mse", method="gd", lr=50.0, max_iters=5000))
    assert result.stop_reason == "diverged"
    assert torch.isfinite(result.H).all() and torch.isfinite(result.W).all()
    assert len(result.history) < 500


def test_same_seed_gives_bit_identical_results():
    config = UFMConfig(K=6, d=7, classifier="learned", alpha=1.0, samples_per_pair=3, tol=1e-8)
    first, second = solve(config), solve(config)
    assert torch.equal(first.H, second.H) and torch.equal(first.W, second.W)
    assert torch.equal(first.lam, second.lam)
    other = solve(replace(config, seed=1))
    assert not torch.equal(first.lam, other.lam)


def test_resume_continues_to_the_same_answer(tmp_path):
    config = UFMConfig(**SMALL, classifier="learned", tol=1e-8)
    straight = solve(config)
    stopped = solve(replace(config, max_iters=4), checkpoint_dir=tmp_path)
    assert stopped.stop_reason == "max_iters"
    resumed = solve(config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.stop_reason == "converged"
    assert torch.equal(resumed.W, straight.W) and torch.equal(resumed.H, straight.H)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    # every row keeps the record of the step that led to it, the one recorded again on
    # resuming (the step before the stop) too
    def steps(result):
        return [{key: value for key, value in row.items() if key.startswith("step_")}
                for row in result.history]

    assert steps(resumed) == steps(straight) and all(steps(straight)[1:])
    assert steps(stopped) == steps(straight)[: len(stopped.history)]


def test_the_checkpoint_holds_the_measured_iterate_without_inner_statistics(tmp_path):
    config = UFMConfig(K=5, d=6, num_lams=5, classifier="learned", mixed_precision=False,
                       max_iters=3)
    stopped = solve(config, checkpoint_dir=tmp_path)
    contents = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    saved = contents["current"]
    assert isinstance(saved, dict) and "stats" not in saved and "inner_stats" not in saved
    current = Iterate.from_checkpoint(saved)
    assert current.inner_stats is None and current.feature_dtype == "float64"
    last = stopped.history[-1]
    assert (current.objective, current.grad_norm) == (last["loss"], last["grad_norm"])
    assert current.feature_grad_rms == last["feature_grad_rms"]
    assert torch.equal(current.theta_grad[: 5 * 6].reshape(5, 6), current.grad_W)
    with pytest.raises(FrozenInstanceError):
        current.grad_norm = 0.0


@pytest.mark.parametrize("method", ["newton", "gd"])
def test_a_checkpoint_of_an_earlier_version_resumes_to_the_straight_run(tmp_path, method):
    """Checkpoints written before :class:`Iterate` held the measured iterate as a dict with a
    ``"stats"`` entry (None) and only the keys of the method; they resume bit for bit."""
    config = UFMConfig(K=5, d=6, num_lams=5, classifier="learned", method=method, tol=1e-8,
                       max_iters=40)
    straight = solve(config)
    solve(replace(config, max_iters=4), checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    contents = torch.load(path, weights_only=False)
    old_keys = ("F", "grad_W", "grad_b", "feature_rms", "grad_norm",
                *(("theta_grad", "feature_dtype") if method == "newton" else ("grad_H",)))
    contents["current"] = {**{key: contents["current"][key] for key in old_keys}, "stats": None}
    torch.save(contents, path)
    resumed = solve(config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.stop_reason == straight.stop_reason
    assert torch.equal(resumed.W, straight.W) and torch.equal(resumed.H, straight.H)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    config = UFMConfig(K=30, d=32, classifier="learned", tol=1e-9)
    # Ctrl-C raises KeyboardInterrupt also where SIGINT was inherited as ignored (a test
    # suite started in the background), where interrupt_main would do nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        interrupted = solve(config, checkpoint_dir=tmp_path)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert interrupted.stop_reason == "interrupted"
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = solve(config, checkpoint_dir=tmp_path, resume=True)
    straight = solve(config)
    assert resumed.stop_reason == "converged"
    # W is unique up to a rotation of feature space, which the interrupted path may change
    gram, straight_gram = resumed.W @ resumed.W.T, straight.W @ straight.W.T
    assert float((gram - straight_gram).norm() / straight_gram.norm()) <= 1e-7


def test_time_limit_is_a_stop_reason():
    result = solve(UFMConfig(K=30, d=32, classifier="learned", tol=1e-12, time_limit=0.3))
    assert result.stop_reason == "time_limit"
    # It stops at the first check past the limit, however slow the machine (no wall-clock
    # bound, which a busy CPU would break). A row is written just after its check, so only the
    # row before the last may carry a time past the limit; all earlier rows are inside it.
    times = [row["seconds"] for row in result.history]
    assert times[-1] >= 0.3 and all(t < 0.3 for t in times[:-2])
    assert result.summary["seconds"] >= times[-1]


def test_sample_layouts():
    assert build_problem(UFMConfig(K=4, d=3, num_lams=5)).n == 16 * 5
    same = build_problem(UFMConfig(K=4, d=3, pairs="same", num_lams=2, samples_per_pair=3))
    assert same.n == 4 * 2 * 3 and bool((same.c == same.c_prime).all())
    different = build_problem(UFMConfig(K=4, d=3, pairs="different", lams=(0.2, 0.7)))
    assert different.n == 12 * 2 and bool((different.c != different.c_prime).all())
    random = build_problem(UFMConfig(K=5, d=4, pairs="random", num_pairs=7, alpha=0.4, samples_per_pair=10))
    assert random.n == 70 and len(set(zip(random.c.tolist(), random.c_prime.tolist()))) == 7
    assert float(random.lam.min()) >= 0 and float(random.lam.max()) <= 1


def test_float32_runs_and_is_close_to_the_theory():
    result = solve(UFMConfig(K=5, d=6, dtype="float32", tol=1e-5))
    assert result.H.dtype == torch.float32
    assert result.summary["theory_distance"] <= 1e-5


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(loss="hinge"), "unknown loss 'hinge'"),
        (dict(method="adam"), "method must be one of 'auto', 'newton', 'newton_cg', 'newton_gram', 'gd'; got 'adam'"),
        (dict(device="tpu"), "device must be one of 'auto', 'cpu', 'cuda', 'mps'"),
        (dict(K=1), "K must be >= 2, got 1"),
        (dict(K=10, d=5), "d must be >= K-1 = 9 for a simplex-ETF classifier, got d=5"),
        (dict(lam_H=-1.0), "lam_H must lie in (0, inf), got -1.0"),
        (dict(lam_W=-0.1), "lam_W must lie in [0, inf), got -0.1"),
        (dict(alpha=0.0), "alpha must lie in (0, inf), got 0.0"),
        (dict(pairs="some"), "pairs must be one of"),
        (dict(classifier="learned", lam_W=0.0), "lam_W must be > 0 for a learned classifier"),
        (dict(lams=(0.5, 1.2)), "lams must lie in [0, 1], got 1.2"),
        (dict(dtype="float16"), "dtype must be one of 'float32', 'float64'"),
    ],
)
def test_bad_configuration_is_refused_before_any_work(overrides, message):
    with pytest.raises(ValueError) as info:
        UFMConfig(**overrides)
    assert message in str(info.value)


def test_unavailable_device_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")  # pragma: no cover
    with pytest.raises(ValueError, match="CUDA is not available here"):
        solve(UFMConfig(K=3, d=3, device="cuda"))


def test_loss_registry_instance_is_used():
    assert build_problem(UFMConfig(K=3, d=3, loss="focal", loss_params={"gamma": 1.0})).loss == get_loss(
        "focal", gamma=1.0
    )
    # rounding level for a rotated 3 x 3 frame (~sqrt(K d) eps; up to 3e-16 seen, and 1e-15 would
    # be only 4.5 eps)
    assert etf_distance(build_problem(UFMConfig(K=3, d=3)).W0) < 1e-14


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse", "focal"])
def test_feature_gradient_and_newton_model_match_finite_differences(loss):

    config = UFMConfig(K=5, d=7, classifier="fixed", num_lams=4, loss=loss, bias=True)
    problem = build_problem(config)
    g = torch.Generator().manual_seed(2)
    W = torch.randn(5, 7, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    solver = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H)
    solver.set_classifier(W, b, H=torch.randn(problem.n, 7, generator=g, dtype=torch.float64))
    X = solver.X.clone()
    idx = torch.arange(problem.n)
    z = X @ solver.frame.A.T + b
    _, _, g_z = problem.loss.pair_terms(z, problem.c, problem.c_prime, problem.lam)
    gradient = g_z @ solver.frame.A + config.lam_H * X  # per-sample gradient in x-coordinates
    direction = torch.randn(X.shape, generator=g, dtype=torch.float64)
    step = 1e-6

    def total(t):
        solver.X = X + t * direction
        return solver.evaluate().objective_sum

    fd = (total(step) - total(-step)) / (2 * step)
    assert float((gradient * direction).sum()) == pytest.approx(fd, rel=1e-7)
    # the Hessian-vector product that Newton's method uses
    solver.X = X
    p = torch.softmax(z, -1)
    hv = solver._hessian_vector(z, p, direction, idx)

    def grad_at(t):
        x = X + t * direction
        _, _, gz = problem.loss.pair_terms(x @ solver.frame.A.T + b, problem.c, problem.c_prime, problem.lam)
        return gz @ solver.frame.A + config.lam_H * x

    fd_hv = (grad_at(step) - grad_at(-step)) / (2 * step)
    assert torch.allclose(hv, fd_hv, rtol=1e-6, atol=1e-8)
