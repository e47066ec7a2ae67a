r"""Where the soft directions of a learned classifier's reduced Hessian live, and a metric that removes them.

With the features eliminated, a learned classifier's objective is
:math:`F(W) = \min_H L(H, W)` (docs/theory.md section 1), and L-BFGS on it needs many more
iterations on sparse random class pairs than on all pairs (``scripts/bench_outer.py``,
``scripts/reduced_hessian.py --num-pairs``). This study solves one problem to gradient
1e-11, forms the exact Hessian of F at the optimum column by column from the solver's
implicit-differentiation products (:meth:`ufm.solver.newton_cg.NewtonCG.hessian_vector`,
features re-solved to 1e-14 first) and asks three questions of it.

1. **Where are the soft directions?** F depends on W only through :math:`G = WW^\top`
   (rotations of feature space are exactly flat and are projected out here), and at the
   optimum the penalty's curvature is cancelled by the loss's on the row space of W, so the
   Hessian is the curvature of the per-sample optima in G. For each of the five softest
   eigenvectors :math:`\Delta` the study splits :math:`\|\delta G\|^2`,
   :math:`\delta G = \Delta W^\top + W\Delta^\top`, between the entries of class pairs that
   the samples contain, the entries of pairs they never contain, and the diagonal.
2. **Is the optimal Gram matrix of full rank?** The singular values of the centred W (the
   softmax is blind to a common row offset, which the penalty removes): where one falls
   towards zero, changes of G along it need large changes of W, and no metric in G helps.
3. **Does a Gram-entry metric remove them?** Dropping the coupling between entries, the
   curvature of F along :math:`\delta G` is about
   :math:`\sum_{jk}\bar M_{jk}\,\delta G_{jk}^2/2` with
   :math:`M_{jk} = \frac1{\lambda_H n}\sum_s S_{s,j}\,g_{s,k}^2`, :math:`\bar M = M + M^\top`,
   where :math:`g_s` is the sample's logit gradient and
   :math:`S_{s,j} = a_{s,j}/(\lambda_H + G_{jj}a_{s,j})` with :math:`a_{s,j}` the diagonal
   of its logit Hessian (the second derivative of
   :math:`\min_z \ell_s(z) + \frac{\lambda_H}2 z^\top G^+z` in G is
   :math:`\frac1{\lambda_H}u^\top\nabla^2\ell\,(\lambda_H + G\nabla^2\ell)^{-1}u`,
   :math:`u = \delta G\,g_s`). An entry that no sample's pair contains gets only the tails
   :math:`a_{s,j}` of classes far from the sample: that is what makes it soft. The metric
   maps a direction R (K, d) to :math:`\Gamma = \mathrm{sym}(\Pi RW^+\Pi)` (:math:`\Pi` the
   centring), then :math:`\delta G = \Pi(\Gamma/\bar M)\Pi` entrywise and
   :math:`\frac12\delta G\,W^{+\top}`, with :math:`1/\lambda_W` on the common row offset and
   off the row space: a symmetric positive semidefinite operator built from one pass over
   the samples. The study reports the condition number of the Hessian with and without it
   on the complement of the rotations.

It is a measurement: away from the optimum the metric misses the term
:math:`\langle 2\nabla_G F, \Delta\Delta^\top\rangle`, which makes F non-convex in W there,
and where the optimal Gram matrix is rank-deficient (question 2) the metric's
:math:`W^+` is unbounded. Method ``"newton_gram"`` uses a metric built on it that mends both
(:mod:`ufm.solver.gram_preconditioner`).

    python scripts/gram_curvature.py [--K 50] [--num-pairs N] [--out results/gram_curvature.json]

Default pairs: round(9.524 K) random pairs of classes, the density of ``bench_scaling.py``'s
K = d = 1000 problem; d = K, lam_H = lam_W = 5e-3, cross-entropy, 21 lams. K = 50 takes a
few minutes (2,500 Hessian products).
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from ufm import UFMConfig, solve
from ufm.io import write_json
from ufm.solver.gram_preconditioner import rotation_complement
from ufm.solver.newton_cg import NewtonCG
from ufm.solver.problem import build_problem
from ufm.solver.state import RunState

PAIR_DENSITY = 9.524  # pairs of classes per class, as bench_scaling.py


def exact_hessian(config: UFMConfig, W: torch.Tensor) -> tuple[torch.Tensor, NewtonCG]:
    """(Kd, Kd) reduced Hessian at W from exact Hessian-vector products, and the method
    object (its features solved at W)."""
    method = NewtonCG(RunState(build_problem(config)))
    method.state.W = W
    method._evaluate(W, None, 1e-14)
    size = W.numel()
    hessian = torch.empty(size, size, dtype=W.dtype)
    for i in range(size):
        unit = torch.zeros(size, dtype=W.dtype)
        unit[i] = 1.0
        hessian[:, i] = method.hessian_vector(unit)
    return 0.5 * (hessian + hessian.T), method


def gram_entry_curvature(method: NewtonCG) -> torch.Tensor:
    r""":math:`\bar M` (K, K) of the module docstring, from one pass over the samples
    (:meth:`ufm.solver.feature_newton.FeatureSolver.gram_curvature`)."""
    solver = method.feature_solver
    M = solver.gram_curvature().entry / (solver.lam_H * solver.samples)
    return M + M.T


def gram_metric(W: torch.Tensor, M_bar: torch.Tensor, lam_W: float):
    """The metric of the module docstring as a function of a (K, d) direction."""
    centred = W - W.mean(0, keepdim=True)
    pinv = torch.linalg.pinv(centred, rtol=1e-7)  # (d, K)
    row_space = pinv @ centred  # (d, d) projector

    def apply(R: torch.Tensor) -> torch.Tensor:
        offset = R.mean(0, keepdim=True)
        Rc = R - offset
        Gamma = Rc @ pinv
        Gamma = 0.5 * (Gamma + Gamma.T)
        Gamma = Gamma - Gamma.mean(0, keepdim=True)
        Gamma = Gamma - Gamma.mean(1, keepdim=True)
        dG = Gamma / M_bar
        dG = dG - dG.mean(0, keepdim=True)
        dG = dG - dG.mean(1, keepdim=True)
        off_row_space = Rc - Rc @ row_space
        return 0.5 * dG @ pinv.T + (off_row_space + offset.expand_as(R)) / lam_W

    return apply


def gram_shares(D: torch.Tensor, W: torch.Tensor, sampled: torch.Tensor) -> dict[str, float]:
    """Shares of |delta G|^2 on sampled pairs, unsampled pairs and the diagonal."""
    dG = D @ W.T + W @ D.T
    total = float((dG * dG).sum())
    diagonal = torch.eye(W.shape[0], dtype=torch.bool)
    share = {name: float((dG[mask] ** 2).sum()) / total
             for name, mask in (("sampled_pairs", sampled & ~diagonal),
                                ("unsampled_pairs", ~sampled & ~diagonal),
                                ("diagonal", diagonal))}
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=50)
    parser.add_argument("--num-pairs", type=int, default=None,
                        help="random pairs of classes (default round(9.524 K))")
    parser.add_argument("--out", default="results/gram_curvature.json")
    parser.add_argument("--singular-values-only", action="store_true",
                        help="answer question 2 only (no Hessian: for K where K^2 products are too many)")
    args = parser.parse_args()
    K = args.K
    num_pairs = args.num_pairs or round(PAIR_DENSITY * K)
    config = UFMConfig(K=K, d=K, classifier="learned", tol=1e-11, mixed_precision=False,
                       lam_H=5e-3, lam_W=5e-3, pairs="random", num_pairs=num_pairs, device="cpu")
    result = solve(config)
    W = result.W
    print(f"K = d = {K}, {num_pairs} random pairs: solved to gradient "
          f"{result.summary['grad_norm']:.1e} in {result.summary['iterations']} iterations", flush=True)
    singular = torch.linalg.svdvals(W - W.mean(0, keepdim=True))
    report = {
        "command": shlex.join(["python", "scripts/gram_curvature.py", *sys.argv[1:]]),
        "K": K, "d": K, "num_pairs": num_pairs, "lam_H": config.lam_H, "lam_W": config.lam_W,
        "grad_norm": result.summary["grad_norm"], "iterations": result.summary["iterations"],
        "centred_singular_values_smallest": [float(v) for v in singular[-4:]],
        "centred_singular_value_largest": float(singular[0]),
    }
    print("smallest singular values of the centred W: "
          + ", ".join(f"{v:.3g}" for v in report["centred_singular_values_smallest"])
          + f" (largest {report['centred_singular_value_largest']:.3g})", flush=True)
    if not args.singular_values_only:
        report.update(hessian_study(config, result))
    write_json(args.out, report)
    print(f"wrote {args.out}")


def hessian_study(config: UFMConfig, result) -> dict:
    """Questions 1 and 3 of the module docstring, printed and returned."""
    W, K = result.W, config.K
    hessian, method = exact_hessian(config, W)
    basis = rotation_complement(W)
    reduced = basis.T @ hessian @ basis
    values, vectors = torch.linalg.eigh(reduced)
    lam_W = config.lam_W
    sampled = torch.zeros(K, K, dtype=torch.bool)
    sampled[result.c, result.c_prime] = True
    sampled |= sampled.clone().T
    softest = [{"per_lam_W": float(values[k] / lam_W),
                **gram_shares((basis @ vectors[:, k]).reshape(W.shape), W, sampled)}
               for k in range(5)]
    metric = gram_metric(W, gram_entry_curvature(method), lam_W)
    columns = [metric(basis[:, k].reshape(W.shape)).reshape(-1) for k in range(basis.shape[1])]
    metric_reduced = basis.T @ torch.stack(columns, 1)
    metric_reduced = 0.5 * (metric_reduced + metric_reduced.T)
    # eigenvalues of P H on the complement: those of L^T H L with P = L L^T
    L = torch.linalg.cholesky(metric_reduced)
    preconditioned = torch.linalg.eigvalsh(L.T @ reduced @ L)
    report = {
        "unsampled_share_of_pairs": float((~sampled).sum()) / (K * K),
        "condition": float(values[-1] / values[0]),
        "eigenvalues_per_lam_W": [float(values[0] / lam_W), float(values[-1] / lam_W)],
        "softest": softest,
        "preconditioned_condition": float(preconditioned[-1] / preconditioned[0]),
        "preconditioned_eigenvalues": [float(preconditioned[0]), float(preconditioned[-1])],
    }
    print(f"Hessian off the rotations: eigenvalues {values[0] / lam_W:.3g} to {values[-1] / lam_W:.3g} "
          f"lam_W, condition {report['condition']:.1f}")
    for k, row in enumerate(softest):
        print(f"  softest {k}: {row['per_lam_W']:.4f} lam_W; |dG|^2 on unsampled pairs "
              f"{row['unsampled_pairs']:.3f}, sampled pairs {row['sampled_pairs']:.3f}, "
              f"diagonal {row['diagonal']:.3f}")
    print(f"unsampled share of the K^2 entries: {report['unsampled_share_of_pairs']:.3f}")
    print(f"with the Gram-entry metric: eigenvalues {preconditioned[0]:.3f} to {preconditioned[-1]:.3f}, "
          f"condition {report['preconditioned_condition']:.2f}")
    return report


if __name__ == "__main__":
    main()
