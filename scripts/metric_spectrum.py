r"""How well the Gram-entry metric preconditions the reduced Hessian where "newton_gram" spends its time.

Method ``"newton_gram"`` (:mod:`ufm.solver.newton_cg`) spends most of a learned-classifier
solve in the conjugate gradients of its last Newton steps: at K = d = 200 on random pairs
they need 20 to 30 reduced Hessian products each, every product a pass of per-sample solves.
How many they need is set by the spectrum of :math:`MH`, H the reduced Hessian of
:math:`F(W) = \min_H L(H, W)` (docs/theory.md section 1) and M the Gram-entry metric
(:mod:`ufm.solver.gram_preconditioner`), on the complement of the rotations
:math:`W\Omega` along which F is flat. ``scripts/gram_curvature.py`` forms H densely, which
stops near K = 50; this study needs only products, so it reaches the sizes that matter.

It solves one problem to gradient ``--tol`` with ``"newton_gram"``, solves the features at
the optimum to 1e-13, and runs ``--steps`` steps of the Lanczos process on MH (as
preconditioned conjugate gradients from a random right-hand side) with exact float64
products (per-sample systems to a relative residual of 1e-10): its extreme Ritz values are
the extreme eigenvalues of MH to the accuracy their convergence shows (``ritz_change``:
how far the smallest and the largest moved over the last ten steps).

For the three smallest and three largest Ritz vectors R (K, d) it splits
:math:`\|R\|^2` between four blocks, with :math:`W_c = U\Sigma V^\top` the centred W and
U, V its singular vectors above 1e-6 of the largest singular value:

- ``offset``: the common row offset :math:`\mathbf 1\mathbf 1^\top R/K`;
- ``off_row``: off the row space of :math:`W_c`;
- ``row_range``: on the row space, its columns in the range of U (changes of G inside the
  span of the optimal Gram matrix);
- ``row_null``: on the row space, its columns in the null space of :math:`W_c^\top`
  (apart from the offset): changes of G between the directions in which the optimal Gram
  matrix has collapsed (a rank-deficient optimum, ``rank_deficiency``) and the others.

    python scripts/metric_spectrum.py [--K 200] [--num-pairs N] [--steps 60] [--out results/metric_spectrum.json]

Default pairs: round(9.524 K) random pairs (``bench_scaling.py``'s density); d = K,
lam_H = lam_W = 5e-3, cross-entropy, 21 lams, float64 throughout. K = 200 takes a few
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

import torch

from ufm import UFMConfig, solve
from ufm.io import write_json
from ufm.solver.newton_cg import GramNewtonCG
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState

PAIR_DENSITY = 9.524  # pairs of classes per class, as bench_scaling.py
PRODUCT_RTOL = 1e-10  # relative residual of the per-sample systems of every product
REPORTED = 3  # Ritz vectors split into blocks at each end of the spectrum
# Lanczos stops once the preconditioned residual is this fraction of the first
EXHAUSTED = 1e-10


def method_at(config: UFMConfig, W: torch.Tensor) -> GramNewtonCG:
    """A ``"newton_gram"`` method object with its features solved at W to 1e-13 and its
    Hessian products exact to :data:`PRODUCT_RTOL` (float64)."""
    method = GramNewtonCG(RunState(build_problem(config)))
    method.state.W = W
    method._evaluate(W, None, 1e-13)
    method._product_rtol = PRODUCT_RTOL
    return method


def lanczos(hessian, metric, start: torch.Tensor, steps: int):
    r"""The Lanczos process on MH, run as preconditioned conjugate gradients.

    CG on :math:`Hx = b` (b = ``start``) preconditioned by M is the Lanczos process on MH
    in the :math:`M^{-1}` inner product (Golub & Van Loan, Matrix Computations, 4th ed.,
    section 11.3.5): from its step lengths :math:`\alpha_k` and ratios :math:`\beta_k`
    the tridiagonal matrix has diagonal :math:`1/\alpha_k + \beta_{k-1}/\alpha_{k-1}`
    and off-diagonal :math:`\sqrt{\beta_k}/\alpha_k`, and the Lanczos vectors are the
    preconditioned residuals :math:`\pm z_k/\sqrt{r_k^\top z_k}`. Only M is applied,
    never its inverse. Without reorthogonalisation, rounding repeats converged Ritz values
    (ghosts) but leaves the extreme ones in the spectrum (Paige), which is all this study
    reads. It stops early once the residual is :data:`EXHAUSTED` of the first: CG has then
    solved the system to the accuracy of the products, and the extreme Ritz values have
    settled (``ritz_change`` shows how far). Returns (Ritz values
    ascending, Ritz vectors as columns, the Ritz values ten steps before the end, or None
    when it took ten steps or fewer)."""
    residual = start
    z = metric(residual)
    rz = float(torch.dot(residual, z))
    first = rz
    direction = z
    vectors, diagonal, off = [z / math.sqrt(rz)], [], []
    previous = None  # (alpha, beta) of the step before
    for k in range(steps):
        Hd = hessian(direction)
        alpha = rz / float(torch.dot(direction, Hd))
        residual = residual - alpha * Hd
        z = metric(residual)
        rz_new = float(torch.dot(residual, z))
        beta = rz_new / rz
        diagonal.append(1.0 / alpha + (previous[1] / previous[0] if previous else 0.0))
        previous = (alpha, beta)
        if rz_new <= EXHAUSTED**2 * first or k == steps - 1:
            break
        off.append(math.sqrt(beta) / alpha)
        vectors.append((-1) ** (k + 1) * z / math.sqrt(rz_new))
        direction = z + beta * direction
        rz = rz_new
    values, ritz = torch.linalg.eigh(_tridiagonal(diagonal, off))
    earlier = None
    if len(diagonal) > 10:
        earlier = torch.linalg.eigvalsh(_tridiagonal(diagonal[:-10], off))
    return values, torch.stack(vectors, 1) @ ritz, earlier


def _tridiagonal(diagonal: list[float], off: list[float]) -> torch.Tensor:
    """The symmetric tridiagonal matrix of ``diagonal``, its off-diagonal the first
    ``len(diagonal) - 1`` entries of ``off``."""
    T = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off:
        band = torch.tensor(off[: len(diagonal) - 1], dtype=torch.float64)
        T = T + torch.diag(band, 1) + torch.diag(band, -1)
    return T


def centred_bases(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, V, sigma): the singular vectors of the centred W above 1e-6 of its largest
    singular value (U its range, V its row space) and all its singular values."""
    U, sigma, Vh = torch.linalg.svd(W - W.mean(0, keepdim=True), full_matrices=False)
    kept = sigma > 1e-6 * sigma[0]
    return U[:, kept], Vh[kept].T, sigma


def block_shares(R: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> dict[str, float]:
    """Shares of |R|^2 in the four blocks of the module docstring, U and V the bases of
    :func:`centred_bases`."""
    offset = R.mean(0, keepdim=True).expand_as(R)
    rest = R - offset
    on_row = rest @ V @ V.T
    row_range = U @ (U.T @ on_row)
    parts = {"offset": offset, "off_row": rest - on_row, "row_range": row_range,
             "row_null": on_row - row_range}
    total = float((R * R).sum())
    return {name: float((part * part).sum()) / total for name, part in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=200)
    parser.add_argument("--num-pairs", type=int, default=None,
                        help="random pairs of classes (default round(9.524 K))")
    parser.add_argument("--tol", type=float, default=1e-9, help="gradient norm of the solve")
    parser.add_argument("--steps", type=int, default=60, help="Lanczos steps (at least 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/metric_spectrum.json")
    args = parser.parse_args()
    if args.K < 3:
        parser.error(f"--K must be at least 3, got {args.K}")
    if args.steps < 20:
        parser.error(f"--steps must be at least 20, got {args.steps}")
    if not 0 < args.tol < 1e-3:
        parser.error(f"--tol must be in (0, 1e-3), got {args.tol}")
    K = args.K
    num_pairs = args.num_pairs or round(PAIR_DENSITY * K)
    config = UFMConfig(K=K, d=K, classifier="learned", tol=args.tol, mixed_precision=False,
                       lam_H=5e-3, lam_W=5e-3, pairs="random", num_pairs=num_pairs,
                       method="newton_gram", device="cpu", seed=args.seed)
    result = solve(config)
    W = result.W
    if result.summary["stop_reason"] != "converged":  # e.g. a signal stopped the solve
        sys.exit(f"the solve stopped without converging ({result.summary['stop_reason']}); "
                 "the spectrum is measured at an optimum only")
    print(f"K = d = {K}, {num_pairs} random pairs: solved to gradient "
          f"{result.summary['grad_norm']:.1e} in {result.summary['iterations']} iterations", flush=True)
    U, V, singular = centred_bases(W)
    method = method_at(config, W)
    metric, project = method._metric(), method._step_projector(row_space=False)
    generator = torch.Generator().manual_seed(args.seed)
    start = project(torch.randn(W.numel(), generator=generator, dtype=W.dtype))
    values, vectors, earlier = lanczos(lambda v: project(method.hessian_vector(project(v))),
                                       lambda v: project(metric(project(v))), start, args.steps)
    ends = list(range(REPORTED)) + list(range(len(values) - REPORTED, len(values)))
    ritz = [{"value": float(values[k]),
             **block_shares(vectors[:, k].reshape(W.shape), U, V)} for k in ends]
    # the extreme values against the extreme ones ten steps earlier (interior ranks shift
    # as rounding repeats converged values)
    change = None if earlier is None else max(
        float(abs(values[k] - earlier[k]) / abs(values[k])) for k in (0, -1))
    report = {
        "command": shlex.join(["python", "scripts/metric_spectrum.py", *sys.argv[1:]]),
        "K": K, "d": K, "num_pairs": num_pairs, "lam_H": config.lam_H, "lam_W": config.lam_W,
        "grad_norm": result.summary["grad_norm"], "iterations": result.summary["iterations"],
        # singular values of the centred W below 1e-6 of the largest, less the offset's one
        "rank_deficiency": int((singular <= 1e-6 * singular[0]).sum()) - 1,
        "lanczos_steps": len(values),
        "condition": float(values[-1] / values[0]),
        "smallest": float(values[0]), "largest": float(values[-1]),
        "ritz": ritz, "ritz_change": change,
    }
    print(f"centred W: {report['rank_deficiency']} of {K - 1} singular values below 1e-6 of the largest")
    print(f"MH after {len(values)} Lanczos steps: eigenvalues {values[0]:.3g} to {values[-1]:.3g}, "
          f"condition {report['condition']:.1f}" + ("" if change is None else
          f" (the extreme ones moved at most {change:.1e} relative over the last 10 steps)"))
    for row in ritz:
        print(f"  Ritz value {row['value']:8.3f}: |R|^2 offset {row['offset']:.3f}, off the row space "
              f"{row['off_row']:.3f}, row space x range {row['row_range']:.3f}, "
              f"row space x collapsed {row['row_null']:.3f}")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
