"""How a solve runs: threads sharing chunks, float32 and its rounding floor, the progress bar."""

import math
import os
import threading

import pytest
import torch

from ufm.solver import solve
from ufm.solver import chunk_threads
from ufm.solver.chunk_threads import ChunkThreads
from ufm.solver.problem import UFMConfig
from ufm.solver.run import _Progress


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_chunk_threads_keep_order_and_run_each_chunk_on_one_intra_op_thread(two_threads):
    threads = ChunkThreads(torch.device("cpu"))
    assert threads.workers == 2
    seen = []

    def work(i):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return i * i

    assert threads.map(work, range(40)) == [i * i for i in range(40)]
    assert {count for _, count in seen} == {1}
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert torch.get_num_threads() == 2  # the caller's setting is back


needs_affinity = pytest.mark.skipif(chunk_threads.allowed_cpus() is None,
                                    reason="the platform has no CPU affinity (not Linux)")


@needs_affinity
def test_chunk_threads_keep_one_cpu_each_when_asked_and_there_is_one_per_cpu(two_threads, monkeypatch):
    # the machine's first allowed CPU twice: two workers, "two CPUs", on any machine
    first = chunk_threads.allowed_cpus()[0]
    monkeypatch.setattr(chunk_threads, "allowed_cpus", lambda: [first, first])
    assert ChunkThreads(torch.device("cpu")).cpus is None  # not asked: nothing pinned
    threads = ChunkThreads(torch.device("cpu"), pin_cpus=True)
    assert threads.cpus == [first, first]
    before = os.sched_getaffinity(0)
    seen = threads.map(lambda i: (threading.get_ident(), os.sched_getaffinity(0)), range(40))
    assert {frozenset(cpus) for _, cpus in seen} == {frozenset({first})}
    assert os.sched_getaffinity(0) == before  # the calling thread is left as it was


@needs_affinity
def test_chunk_threads_are_not_pinned_with_fewer_workers_than_cpus(two_threads, monkeypatch):
    first = chunk_threads.allowed_cpus()[0]
    monkeypatch.setattr(chunk_threads, "allowed_cpus", lambda: [first, first, first])
    threads = ChunkThreads(torch.device("cpu"), pin_cpus=True)
    assert threads.workers == 2 and threads.cpus is None
    process = os.sched_getaffinity(0)
    assert {frozenset(c) for c in threads.map(lambda i: os.sched_getaffinity(0), range(8))} == {
        frozenset(process)}


def test_chunk_threads_serial_paths_and_errors(two_threads):
    serial = ChunkThreads(torch.device("cpu"), parallel="kernels")
    assert serial.workers == 1
    caller = threading.get_ident()
    assert serial.map(lambda i: (threading.get_ident(), i), [1, 2]) == [(caller, 1), (caller, 2)]
    assert ChunkThreads(torch.device("meta")).workers == 1  # not a CPU: one stream of chunks
    with pytest.raises(ValueError, match="parallel must be one of"):
        ChunkThreads(torch.device("cpu"), parallel="processes")

    def fail(i):
        if i == 3:
            raise RuntimeError("chunk 3 failed")
        return i

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        ChunkThreads(torch.device("cpu")).map(fail, range(8))
    assert torch.get_num_threads() == 2


def test_bad_parallel_setting_is_refused():
    with pytest.raises(ValueError, match="parallel must be one of 'chunks', 'kernels'"):
        UFMConfig(parallel="threads")


@pytest.mark.parametrize("classifier", ["fixed_etf", "learned"])
def test_thread_strategies_give_the_same_solve(two_threads, classifier):
    """Chunks on two threads, chunks on one, and per-operation threads: the same iterates
    up to rounding (1e-12 relative), the same number of iterations and stop reason."""
    base = dict(K=5, d=6, num_lams=7, chunk_size=16, classifier=classifier,
                tol=1e-11 if classifier == "fixed_etf" else 1e-9)
    runs = {"chunks": solve(UFMConfig(**base)), "kernels": solve(UFMConfig(**base, parallel="kernels"))}
    torch.set_num_threads(1)
    runs["one thread"] = solve(UFMConfig(**base))
    reference = runs["chunks"]
    assert reference.stop_reason == "converged"
    for name, run in runs.items():
        assert run.stop_reason == reference.stop_reason, name
        assert run.summary["iterations"] == reference.summary["iterations"], name
        for a, b in ((run.H, reference.H), (run.W, reference.W)):
            assert float((a - b).norm() / b.norm()) <= 1e-12, name


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "mse"])
def test_float32_stops_at_its_rounding_floor_within_its_stated_precision(loss):
    """float32 reaches the exact theory to 1e-5 relative (measured: 3e-7 to 6e-7 at K = 10
    and 100) and stops as "rounding" when the tolerance is below its floor."""
    result = solve(UFMConfig(K=6, d=8, num_lams=11, loss=loss, dtype="float32", tol=1e-12,
                             max_iters=200))
    s = result.summary
    assert result.H.dtype == torch.float32
    assert s["stop_reason"] == "rounding" and s["iterations"] < 40
    assert s["theory_distance"] <= 1e-5
    assert s["grad_norm"] <= 1e-5


def test_float64_with_an_unreachable_tolerance_stops_at_rounding():
    result = solve(UFMConfig(K=4, d=5, num_lams=5, tol=1e-30, max_iters=200))
    assert result.stop_reason == "rounding" and result.summary["iterations"] < 30
    assert result.summary["theory_distance"] <= 1e-12


def test_float32_reaches_a_tolerance_above_its_floor():
    result = solve(UFMConfig(K=6, d=8, num_lams=11, dtype="float32", tol=1e-4))
    assert result.stop_reason == "converged" and result.summary["grad_norm"] <= 1e-4


def test_progress_bar_counts_decades_of_the_gradient_to_tol(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0.0
            bars.append(self)

        def set_postfix(self, **kwargs):
            self.postfix = kwargs

        def refresh(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    progress = _Progress(tol=1e-10)
    progress.update(0, 1.0, 1.0)
    (bar,) = bars
    assert bar.total == pytest.approx(10.0)  # from |grad| = 1 to 1e-10, whatever max_iters is
    progress.update(1, 0.5, 1e-3)
    assert bar.n == pytest.approx(3.0)
    progress.update(2, 0.4, 1e-2)  # the gradient norm may rise; the bar does not go back
    assert bar.n == pytest.approx(3.0)
    progress.update(3, 0.4, 1e-12)
    assert bar.n == pytest.approx(bar.total)
    progress.update(4, 0.4, math.nan)
    assert bar.n == pytest.approx(bar.total)


@pytest.mark.parametrize("loss", ["ce", "label_smoothing"])
@pytest.mark.parametrize("mixup_points", [2, 3])
def test_probability_frame_from_the_gradient_equals_the_product(loss, mixup_points):
    """A^T p formed as A^T grad(ell) + A^T t (the fast path) applies the same preconditioner
    as the product p A, for a random classifier and features (1e-12 relative)."""
    from ufm.solver.problem import build_problem
    from ufm.solver.newton import newton_method
    from ufm.solver.state import RunState

    config = UFMConfig(K=5, d=6, num_lams=5, classifier="fixed", loss=loss,
                       mixup_points=mixup_points, seed=3)
    method = newton_method(RunState(build_problem(config)))
    solver = method.feature_solver
    solver.set_classifier(method.state.W, None)
    generator = torch.Generator().manual_seed(0)
    solver.X = torch.randn(solver.X.shape, generator=generator, dtype=solver.X.dtype)
    idx = torch.arange(solver.n)
    x, _, _, p, _, grad = solver._measure(idx)
    fast, *_ = solver._preconditioner(p, idx, grad - solver.lam_H * x)
    plain, *_ = solver._preconditioner(p, idx)
    v = torch.randn(grad.shape, generator=generator, dtype=grad.dtype)
    assert float((fast(v) - plain(v)).norm() / plain(v).norm()) <= 1e-12


def test_fixed_classifier_with_a_fixed_bias_is_solved_exactly():
    """W and b held as given: every feature is stationary for CE(W h + b) + lam_H/2 |h|^2,
    checked by autograd (|grad| <= 1e-9, so |h - h*| <= 1e-9 / lam_H by strong convexity)."""
    from ufm.losses import get_loss

    generator = torch.Generator().manual_seed(5)
    K, d = 5, 7
    W = torch.randn(K, d, generator=generator, dtype=torch.float64)
    b = torch.randn(K, generator=generator, dtype=torch.float64)
    config = UFMConfig(K=K, d=d, num_lams=5, classifier="fixed", tol=1e-11)
    result = solve(config, W_init=W, b_init=b)
    assert result.stop_reason == "converged"
    assert torch.equal(result.b, b) and torch.equal(result.W, W)
    H = result.H.clone().requires_grad_(True)
    loss = get_loss("ce")(H @ W.T + b, result.c, result.c_prime, result.lam).sum()
    loss = loss + 0.5 * config.lam_H * (H * H).sum()
    (grad,) = torch.autograd.grad(loss, H)
    assert float(grad.norm(dim=1).max()) <= 1e-9
    unbiased = solve(config, W_init=W)
    assert float((unbiased.H - result.H).norm() / result.H.norm()) > 1e-3  # the bias matters
    with pytest.raises(ValueError, match=r"b_init must have shape \(K,\) = \(5,\)"):
        solve(config, W_init=W, b_init=torch.zeros(4))


def test_the_work_between_newton_passes_runs_on_the_chunk_threads(two_threads, monkeypatch):
    """The anchor start, the change of classifier, H = X V^T and the per-lam distances to the
    theory are formed block by block on the chunk threads, never on the caller's per-operation
    threads (beside a busy process those meet a barrier per operation), and they equal the
    dense computations: 1e-13 relative for the products, 1e-9 for distances of about 1e-3."""
    from ufm.solver import anchor_start
    from ufm.solver.feature_newton import FeatureSolver
    from ufm.solver.problem import build_problem
    from ufm.solver.reference import TheoryReference
    from ufm.theory import optimal_features

    caller, maps = threading.get_ident(), []
    original = ChunkThreads.map

    def recording(self, function, chunks):
        ran_on = []
        results = original(self, lambda chunk: (ran_on.append(threading.get_ident()), function(chunk))[1],
                           chunks)
        maps.append(ran_on)
        return results

    monkeypatch.setattr(ChunkThreads, "map", recording)
    config = UFMConfig(K=6, d=8, num_lams=5, chunk_size=16)
    problem = build_problem(config)  # 180 samples: 12 blocks
    solver = FeatureSolver.pairs(problem.c, problem.c_prime, problem.lam, problem.loss, config.lam_H, 16)

    def on_the_threads():
        assert maps and len(maps[-1]) == 12 and caller not in maps[-1]
        maps.clear()

    def relative(a, b):
        return float((a - b).norm() / b.norm())

    solver.set_classifier(problem.W0, None)
    anchor_start.start_at_anchors(solver)
    on_the_threads()
    H = solver.features()
    on_the_threads()
    assert relative(H, solver.X @ solver.V.T) < 1e-13
    X, V = solver.X, solver.V
    W1 = problem.W0 + 0.1 * torch.randn(problem.W0.shape, generator=torch.Generator().manual_seed(1),
                                        dtype=problem.W0.dtype)
    solver.set_classifier(W1, None)  # the features carried over to the new row space
    on_the_threads()
    assert relative(solver.X, X @ (V.T @ solver.V)) < 1e-13
    solver.set_classifier(W1, None, H)
    on_the_threads()
    assert relative(solver.X, H @ solver.V) < 1e-13

    exact = optimal_features(problem.W0, problem.c, problem.c_prime, problem.lam, config.lam_H)
    noisy = exact + 1e-3 * exact.norm(dim=1, keepdim=True) * torch.randn(
        exact.shape, generator=torch.Generator().manual_seed(2), dtype=exact.dtype)
    per_lam = TheoryReference.build(problem).distance_per_lam(noisy, problem.W0)
    on_the_threads()
    values = problem.lam.unique()
    assert len(per_lam) == len(values) == 5
    for value in values:
        rows = problem.lam == value
        expected = float((noisy[rows] - exact[rows]).norm() / exact[rows].norm())
        assert 3e-4 < expected < 3e-3
        assert abs(per_lam[f"{float(value):.6g}"] - expected) <= 1e-9 * expected
