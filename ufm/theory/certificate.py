r"""Convex certificate: the per-sample UFM problems as CVXPY programs, and duality gaps.

For a fixed classifier :math:`W\in\mathbb{R}^{K\times d}` (any matrix, not only an ETF) and an
optional fixed bias :math:`b`, the UFM objective of docs/theory.md section 1 separates into one
problem per mixed sample,

.. math:: P(h) = \ell(Wh + b;\, c, c', \lambda) + \frac{\lambda_H}{2}\|h\|^2 ,

strictly convex whenever :math:`\ell` is convex in the logits: cross-entropy and label
smoothing (log-sum-exp, an exponential-cone program) and squared error (a quadratic
program). :func:`certify` solves them with an exponential-cone solver from PyPI (SCS by
default; Clarabel on request).

Certificate. With :math:`\ell^*` the convex conjugate in the logits, every :math:`\mu` gives the
Fenchel lower bound

.. math:: D(\mu) = \mu^\top b - \ell^*(\mu) - \frac{1}{2\lambda_H}\|W^\top\mu\|^2 \le \min_h P(h),

and :math:`\mu = \nabla\ell(Wh+b)` is optimal when :math:`h` is. :func:`duality_gap` evaluates
:math:`P(h) - D(\nabla\ell(Wh+b)) \ge 0` for *any* candidate features (from CVXPY, the exact
theory or the gradient solver), and, since :math:`P` is :math:`\lambda_H`-strongly convex,
:math:`\|h - h^\star\| \le \sqrt{2\,\mathrm{gap}/\lambda_H}` (:func:`feature_error_bound`
adds an allowance for the rounding of the computed gap).

Soft targets. :func:`certify_targets` and :func:`duality_gap_targets` take any target
:math:`y` on the probability simplex, shape (n, K), instead of pairs :math:`(c, c', \lambda)`:
mixtures of :math:`m` classes (Chaudhry et al., "When does mixup promote local linearity in
learned representations?", 2022) get the same independent check as pairs. The loss is then
:math:`\ell(z; y)`: cross-entropy against :math:`y`, against :math:`(1-\varepsilon)y +
\varepsilon\mathbf 1/K` for label smoothing, and :math:`\frac12\|z-y\|^2` for squared error
(its pair form adds the constant :math:`\frac12(1 - \|y\|^2)`, as
:math:`\sum_j y_j\frac12\|z - e_j\|^2` does). Fisher, Meng & Papyan, ICLR 2024
(arXiv:2402.06171) give the exact optimum these programs certify.

Conjugates used: soft-target cross-entropy :math:`\ell(z) = \operatorname{lse}(z) - t^\top z`
has :math:`\ell^*(\mu) = \sum_i (\mu+t)_i\log(\mu+t)_i` on :math:`\mu + t\in\Delta`; halved squared
error :math:`\ell(z) = \frac12\|z-t\|^2` has :math:`\ell^*(\mu) = \frac12\|\mu\|^2 + \mu^\top t`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import (
    SIMPLEX_SUM_TOL,
    check_choice,
    check_float,
    check_index_tensor,
    check_simplex_rows,
    check_tensor_range,
)
from ..losses import LOSSES, MixupLoss, get_loss, mixup_target

__all__ = [
    "Certificate",
    "certify",
    "certify_targets",
    "duality_gap",
    "duality_gap_targets",
    "feature_error_bound",
    "SOLVERS",
    "TARGET_SUM_TOL",
]

TARGET_SUM_TOL = SIMPLEX_SUM_TOL
r"""Allowed :math:`|\sum_j y_j - 1|` of a soft target; targets within it are divided by the sum."""

SOLVERS = ("SCS", "CLARABEL")


@dataclass(frozen=True)
class Certificate:
    """Solutions of the per-sample convex programs and their certificates.

    Arrays have one row per input sample (after broadcasting ``c``, ``c_prime``, ``lam``).
    """

    h: np.ndarray
    objective: np.ndarray
    dual_objective: np.ndarray
    duality_gap: np.ndarray
    feature_error_bound: np.ndarray
    status: tuple[str, ...]
    solver: str


def _certified_losses() -> str:
    """The registered losses with a convex program, for error messages."""
    names = []
    for name, cls in sorted(LOSSES.items()):
        if cls.convex and cls.cvxpy_value is not MixupLoss.cvxpy_value:
            names.append(repr(name))
    return ", ".join(names)


def _check_certifiable(loss: MixupLoss) -> MixupLoss:
    """``loss`` if it is convex and declares its convex program, else a ValueError."""
    if not loss.convex or type(loss).cvxpy_value is MixupLoss.cvxpy_value:
        raise ValueError(f"{loss._no_certificate()}; losses with one: {_certified_losses()}")
    return loss


def _soft_target(loss: MixupLoss, c, c_prime, lam, K: int) -> torch.Tensor:
    """The loss's own target of each pair, as its convex program takes it."""
    return _check_certifiable(loss).certificate_target(mixup_target(c, c_prime, lam, K, torch.float64))


def _pair_constant(loss: MixupLoss, c, c_prime, lam, K: int) -> torch.Tensor:
    """The constant the loss adds per pair (the pair form of the squared error adds one)."""
    return loss.certificate_constant(mixup_target(c, c_prime, lam, K, torch.float64))


def _classifier_and_loss(W, lam_H, loss):
    """W as float64 on the CPU (a (K, d) matrix), the checked lam_H and the loss."""
    W = torch.as_tensor(W).detach().to(torch.float64).cpu()
    if W.ndim != 2:
        raise ValueError(f"W must be a (K, d) matrix, got shape {tuple(W.shape)}")
    return W, check_float("lam_H", lam_H, 0.0, None, low_open=True), get_loss(loss)


def _prepare(W, c, c_prime, lam, lam_H, loss, bias):
    W, lam_H, loss = _classifier_and_loss(W, lam_H, loss)
    K = W.shape[0]
    c = check_index_tensor("c", torch.as_tensor(c), K)
    c_prime = check_index_tensor("c_prime", torch.as_tensor(c_prime), K)
    lam = torch.as_tensor(lam, dtype=torch.float64)
    check_tensor_range("lam", lam, 0.0, 1.0)
    c, c_prime, lam = (x.reshape(-1) for x in torch.broadcast_tensors(c, c_prime, lam))
    if bias is None:
        bias = torch.zeros(K, dtype=torch.float64)
    bias = torch.as_tensor(bias, dtype=torch.float64).cpu()
    if bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},), got {tuple(bias.shape)}")
    return W, c, c_prime, lam, lam_H, loss, bias


def duality_gap(W, h, c, c_prime, lam, lam_H, loss="ce", bias=None):
    r"""Primal value, Fenchel dual value and gap of candidate features ``h`` (n, d).

    Works for any fixed ``W`` (K, d) and bias; computed in float64 with torch, batched.
    Returns three float64 numpy arrays of shape (n,). The gap is :math:`\ge 0` up to rounding
    (about 1e-16 times the objective).
    """
    W, c, c_prime, lam, lam_H, loss, bias = _prepare(W, c, c_prime, lam, lam_H, loss, bias)
    h = torch.as_tensor(h).detach().to(torch.float64).cpu().reshape(-1, W.shape[1])
    if h.shape[0] != c.shape[0]:
        raise ValueError(f"h has {h.shape[0]} rows but there are {c.shape[0]} samples")
    K = W.shape[0]
    target = _soft_target(loss, c, c_prime, lam, K)
    constant = _pair_constant(loss, c, c_prime, lam, K)
    return _gap(W, h, target, constant, lam_H, loss, bias)


def _gap(W, h, target, constant, lam_H, loss, bias):
    """Primal, dual and gap for rows of ``h`` against soft targets (the loss's own target)."""
    z = h @ W.T + bias
    ridge = 0.5 * lam_H * (h * h).sum(-1)
    primal, mu, conjugate = loss.fenchel(z, target)
    Wt_mu = mu @ W
    dual = (mu * bias).sum(-1) - conjugate - (Wt_mu * Wt_mu).sum(-1) / (2 * lam_H)
    primal = primal + ridge + constant
    dual = dual + constant
    return primal.numpy(), dual.numpy(), (primal - dual).numpy()


def feature_error_bound(primal, dual, gap, lam_H: float) -> np.ndarray:
    r"""Rigorous bound :math:`\|h - h^\star\| \le \sqrt{2(\mathrm{gap} + \rho)/\lambda_H}`.

    :math:`\rho = 8\varepsilon(|P| + |D|)` allows for the rounding of the computed gap, so
    the bound never falls below about :math:`\sqrt{2\cdot 10^{-15}|P|/\lambda_H}`.
    """
    rounding = 8 * np.finfo(np.float64).eps * (np.abs(primal) + np.abs(dual))
    return np.sqrt(2 * (np.maximum(gap, 0.0) + rounding) / lam_H)


def _build_problem(W: np.ndarray, bias: np.ndarray, lam_H: float, loss: MixupLoss):
    import cvxpy as cp

    K, d = W.shape
    h = cp.Variable(d)
    target = cp.Parameter(K)
    data_term = loss.cvxpy_value(W @ h + bias, target)
    problem = cp.Problem(cp.Minimize(data_term + 0.5 * lam_H * cp.sum_squares(h)))
    return problem, h, target


def certify(
    W,
    c,
    c_prime,
    lam,
    lam_H: float,
    loss="ce",
    bias=None,
    solver: str = "SCS",
    tol: float = 1e-10,
) -> Certificate:
    r"""Solve :math:`\min_h \ell(Wh+b; c, c', \lambda) + \frac{\lambda_H}{2}\|h\|^2` per sample with CVXPY.

    One parametrised (DPP) program is compiled once and re-solved for each distinct
    (c, c', lam); duplicates share the solution. ``tol`` is passed to the solver as its
    stopping tolerance (``eps_abs``/``eps_rel`` for SCS, the gap and feasibility tolerances
    for Clarabel). Measured accuracy against the exact theory (K <= 20,
    :math:`\lambda_H \ge 10^{-4}`): SCS about 1e-8 relative at ``tol=1e-10``; Clarabel's
    interior point stalls between 1e-6 and 2e-4 (worse for small :math:`\lambda_H`), even
    when it reports "optimal". The
    returned :class:`Certificate` carries the Fenchel duality gap of each solution and the
    resulting bound on the feature error.
    """
    solver, options = _solver_options(solver, tol)
    W_t, c, c_prime, lam, lam_H, loss, bias = _prepare(W, c, c_prime, lam, lam_H, loss, bias)
    K = W_t.shape[0]
    target_all = _soft_target(loss, c, c_prime, lam, K)
    problem, h_var, target = _build_problem(W_t.numpy(), bias.numpy(), lam_H, loss)

    keys = torch.stack([c.to(torch.float64), c_prime.to(torch.float64), lam], dim=1)
    first, inverse = _first_of_each(keys)
    solutions, statuses = _solve_each(problem, h_var, target, target_all, first, solver, options)
    h = solutions[inverse.numpy()]
    primal, dual, gap = duality_gap(W_t, h, c, c_prime, lam, lam_H, loss, bias)
    return _certificate(h, primal, dual, gap, lam_H, statuses, inverse, solver)


def _first_of_each(keys: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Index of the first row of each distinct row of ``keys``, and each row's group."""
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), -1, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin", include_self=False)
    return first.tolist(), inverse


def _solver_options(solver: str, tol: float) -> tuple[str, dict]:
    solver = check_choice("solver", str(solver).upper(), SOLVERS)
    tol = check_float("tol", tol, 0.0, 1e-2, low_open=True)
    if solver == "SCS":
        return solver, {"eps_abs": tol, "eps_rel": tol, "max_iters": 500_000, "warm_start": False}
    return solver, {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol, "max_iter": 500}


def _solve_each(problem, h_var, target, target_all, samples, solver, options):
    """Solve the compiled program once per listed sample; solutions (len, d) and statuses."""
    import cvxpy as cp

    solutions = np.zeros((len(samples), h_var.shape[0]))
    statuses = []
    for row, sample in enumerate(samples):
        target.value = target_all[sample].numpy()
        try:
            problem.solve(solver=getattr(cp, solver), **options)
        except cp.error.SolverError as error:
            raise RuntimeError(f"{solver} failed on sample {sample}: {error}") from error
        if h_var.value is None:
            raise RuntimeError(
                f"{solver} returned no solution for sample {sample}: {problem.status}"
            )
        solutions[row] = h_var.value
        statuses.append(problem.status)
    return solutions, statuses


def _certificate(h, primal, dual, gap, lam_H, statuses, inverse, solver) -> Certificate:
    return Certificate(
        h=h,
        objective=primal,
        dual_objective=dual,
        duality_gap=gap,
        feature_error_bound=feature_error_bound(primal, dual, gap, lam_H),
        status=tuple(statuses[i] for i in inverse.tolist()),
        solver=solver,
    )


# -- any soft target on the simplex (mixtures of m classes) --------------------------------


def _check_targets(targets, K: int) -> torch.Tensor:
    """Validated targets as float64 (n, K), each row divided by its sum."""
    targets = torch.as_tensor(targets).detach().to(torch.float64).cpu()
    if targets.ndim == 0 or targets.shape[-1] != K:
        raise ValueError(f"targets must have shape (..., K) with K={K}, got {tuple(targets.shape)}")
    targets = targets.reshape(-1, K)
    if targets.numel() == 0:
        return targets
    return torch.from_numpy(check_simplex_rows("targets", targets.numpy()))


def _prepare_targets(W, targets, lam_H, loss, bias):
    W, lam_H, loss = _classifier_and_loss(W, lam_H, loss)
    K = W.shape[0]
    targets = _check_targets(targets, K)
    own = _check_certifiable(loss).certificate_target(targets)
    constant = loss.certificate_constant(targets)
    bias = torch.zeros(K, dtype=torch.float64) if bias is None else bias
    bias = torch.as_tensor(bias, dtype=torch.float64).cpu()
    if bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},), got {tuple(bias.shape)}")
    return W, own, constant, lam_H, loss, bias


def duality_gap_targets(W, h, targets, lam_H, loss="ce", bias=None):
    r"""Primal value, Fenchel dual value and gap of features ``h`` (n, d) for soft targets.

    ``targets`` (n, K) lie on the simplex (checked: finite, :math:`\ge 0`, row sums within
    :data:`TARGET_SUM_TOL` of 1); otherwise as :func:`duality_gap`.
    """
    W, own, constant, lam_H, loss, bias = _prepare_targets(W, targets, lam_H, loss, bias)
    h = torch.as_tensor(h).detach().to(torch.float64).cpu().reshape(-1, W.shape[1])
    if h.shape[0] != own.shape[0]:
        raise ValueError(f"h has {h.shape[0]} rows but there are {own.shape[0]} targets")
    return _gap(W, h, own, constant, lam_H, loss, bias)


def certify_targets(
    W, targets, lam_H: float, loss="ce", bias=None, solver: str = "SCS", tol: float = 1e-10
) -> Certificate:
    r"""Solve :math:`\min_h \ell(Wh+b;\, y) + \frac{\lambda_H}{2}\|h\|^2` by CVXPY per soft target.

    The certificate of :func:`certify` for any ``targets`` (..., K) on the probability simplex
    (checked: finite, :math:`\ge 0`, row sums within :data:`TARGET_SUM_TOL` of 1, then
    divided by them), e.g. :func:`ufm.theory.mixtures.mixture_target` of m-class mixtures.
    ``loss`` is "ce", "label_smoothing" (applied to the targets) or "mse" (see the module
    docstring); ``bias``, ``solver`` and ``tol`` as for :func:`certify`. One solve per distinct
    target; returns a :class:`Certificate` with one row per target (rows of ``targets``
    flattened to (n, K)).
    """
    solver, options = _solver_options(solver, tol)
    W_t, own, _, lam_H, loss, bias = _prepare_targets(W, targets, lam_H, loss, bias)
    problem, h_var, target = _build_problem(W_t.numpy(), bias.numpy(), lam_H, loss)
    first, inverse = _first_of_each(own)
    solutions, statuses = _solve_each(problem, h_var, target, own, first, solver, options)
    h = solutions[inverse.numpy()]
    primal, dual, gap = duality_gap_targets(W_t, h, targets, lam_H, loss, bias)
    return _certificate(h, primal, dual, gap, lam_H, statuses, inverse, solver)
