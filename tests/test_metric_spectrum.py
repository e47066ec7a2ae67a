"""The pieces of ``scripts/metric_spectrum.py``: its preconditioned Lanczos must give the
eigenvalues of MH (against a dense eigensolver, on random matrices and on a small solved
problem's reduced Hessian and Gram-entry metric), and its four blocks must split |R|^2."""

import pytest
import torch
from scripts_support import load_script

from ufm.solver import UFMConfig, solve
from ufm.solver.gram_preconditioner import rotation_complement


@pytest.fixture(scope="module")
def study():
    return load_script("metric_spectrum.py")


def _spd(n, generator, shift):
    A = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return A @ A.T + shift * torch.eye(n, dtype=torch.float64)


def test_lanczos_gives_the_eigenvalues_of_MH(study):
    generator = torch.Generator().manual_seed(3)
    n = 30
    H, M = _spd(n, generator, 0.1), _spd(n, generator, 0.5)
    L = torch.linalg.cholesky(M)
    exact = torch.linalg.eigvalsh(L.T @ H @ L)
    start = torch.randn(n, generator=generator, dtype=torch.float64)
    # without reorthogonalisation rounding slows the process; it stops once exhausted
    values, vectors, earlier = study.lanczos(lambda v: H @ v, lambda v: M @ v, start, 3 * n)
    assert len(values) < 3 * n
    for k in (0, -1):
        assert abs(float(values[k] / exact[k]) - 1) < 1e-9
    y = vectors[:, -1]  # a right eigenvector of MH
    assert float((M @ (H @ y) - values[-1] * y).norm() / y.norm()) < 1e-8 * float(values[-1])
    assert earlier is not None and len(earlier) == len(values) - 10
    # fewer steps: the Ritz values lie inside the spectrum, the largest already converged
    few, _, _ = study.lanczos(lambda v: H @ v, lambda v: M @ v, start, 20)
    assert len(few) == 20
    assert float(few[0]) >= float(exact[0]) * (1 - 1e-12)
    assert float(few[-1]) <= float(exact[-1]) * (1 + 1e-12)
    assert abs(float(few[-1] / exact[-1]) - 1) < 1e-9


def test_lanczos_on_a_solved_problem_matches_the_dense_preconditioned_hessian(study):
    config = UFMConfig(K=6, d=6, pairs="random", num_pairs=10, num_lams=5, classifier="learned",
                       method="newton_gram", mixed_precision=False, tol=1e-10, device="cpu")
    W = solve(config).W
    method = study.method_at(config, W)
    metric, project = method._metric(), method._step_projector(row_space=False)
    basis = rotation_complement(W)
    hessian = torch.stack([method.hessian_vector(basis[:, k]) for k in range(basis.shape[1])], 1)
    metric_matrix = torch.stack([metric(basis[:, k]) for k in range(basis.shape[1])], 1)
    H, M = basis.T @ hessian, basis.T @ metric_matrix
    L = torch.linalg.cholesky(0.5 * (M + M.T))
    exact = torch.linalg.eigvalsh(L.T @ (0.5 * (H + H.T)) @ L)
    start = project(torch.randn(W.numel(), generator=torch.Generator().manual_seed(0), dtype=W.dtype))
    values, _, _ = study.lanczos(lambda v: project(method.hessian_vector(project(v))),
                                 lambda v: project(metric(project(v))), start, 3 * basis.shape[1])
    # Ritz values lie inside the spectrum (products exact to the per-sample systems' 1e-10);
    # on this well-conditioned problem CG meets the stop before it resolves every eigenvalue,
    # so the extreme ones are as close as the study needs, three digits
    assert float(values[0]) >= float(exact[0]) * (1 - 1e-8)
    assert float(values[-1]) <= float(exact[-1]) * (1 + 1e-8)
    assert abs(float(values[0] / exact[0]) - 1) < 1e-3
    assert abs(float(values[-1] / exact[-1]) - 1) < 1e-3


def test_the_four_blocks_split_the_squared_norm(study):
    generator = torch.Generator().manual_seed(5)
    K, d, rank = 7, 9, 4
    W = torch.randn(K, rank, generator=generator, dtype=torch.float64) @ torch.randn(
        rank, d, generator=generator, dtype=torch.float64) + torch.randn(1, d, generator=generator,
                                                                         dtype=torch.float64)
    centred = W - W.mean(0, keepdim=True)
    U, _, Vh = torch.linalg.svd(centred, full_matrices=True)
    u_range, v_row = U[:, 0], Vh[0]
    ones = torch.ones(K, dtype=torch.float64) / K**0.5
    collapsed = U[:, rank:] - ones[:, None] * (ones @ U[:, rank:])  # left null space, off 1
    u_null = collapsed[:, 0] / collapsed[:, 0].norm()
    v_off = Vh[rank]  # off the row space
    cases = {"offset": torch.outer(ones, v_row), "off_row": torch.outer(u_range, v_off),
             "row_range": torch.outer(u_range, v_row), "row_null": torch.outer(u_null, v_row)}
    bases = study.centred_bases(W)[:2]
    assert bases[0].shape[1] == bases[1].shape[1] == rank
    for name, R in cases.items():
        shares = study.block_shares(R, *bases)
        assert shares[name] == pytest.approx(1.0, abs=1e-12), (name, shares)
    mixed = study.block_shares(torch.randn(K, d, generator=generator, dtype=torch.float64), *bases)
    assert sum(mixed.values()) == pytest.approx(1.0, abs=1e-12)
    assert min(mixed.values()) > 0.0
