r"""Convex certificate: the per-sample UFM problems as CVXPY programs, and duality gaps.

For a fixed classifier :math:`W\in\mathbb{R}^{K\times d}` (any matrix, not only an ETF) and an
optional fixed bias :math:`b`, the UFM objective of THEORY.md section 1 separates into one
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

Conjugates used: soft-target cross-entropy :math:`\ell(z) = \operatorname{lse}(z) - t^\top z`
has :math:`\ell^*(\mu) = \sum_i (\mu+t)_i\log(\mu+t)_i` on :math:`\mu + t\in\Delta`; halved squared
error :math:`\ell(z) = \frac12\|z-t\|^2` has :math:`\ell^*(\mu) = \frac12\|\mu\|^2 + \mu^\top t`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_choice, check_float, check_index_tensor, check_tensor_range
from ..losses import MixupLoss, SquaredError, _SoftmaxFamily, get_loss, mixup_target

__all__ = ["Certificate", "certify", "duality_gap", "feature_error_bound", "SOLVERS"]

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


def _soft_target(loss: MixupLoss, c, c_prime, lam, K: int) -> torch.Tensor:
    if isinstance(loss, _SoftmaxFamily):
        return loss.soft_target(c, c_prime, lam, K, torch.float64)
    if isinstance(loss, SquaredError):
        return mixup_target(c, c_prime, lam, K, torch.float64)
    raise ValueError(
        f"loss {loss.name!r} is not convex in the logits, so it has no convex certificate; "
        "convex losses: 'ce', 'label_smoothing', 'mse'"
    )


def _pair_constant(loss: MixupLoss, c, c_prime, lam) -> torch.Tensor:
    """The constant the pair form of the squared error adds to the soft form."""
    if isinstance(loss, SquaredError) and loss.form == "pair":
        distinct = (c != c_prime).to(torch.float64)
        return 0.5 * lam * (1 - lam) * 2 * distinct
    return torch.zeros_like(lam)


def _prepare(W, c, c_prime, lam, lam_H, loss, bias):
    W = torch.as_tensor(W).detach().to(torch.float64).cpu()
    if W.ndim != 2:
        raise ValueError(f"W must be a (K, d) matrix, got shape {tuple(W.shape)}")
    K = W.shape[0]
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    loss = get_loss(loss)
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
    z = h @ W.T + bias
    ridge = 0.5 * lam_H * (h * h).sum(-1)
    constant = _pair_constant(loss, c, c_prime, lam)
    if isinstance(loss, SquaredError):
        mu = z - target
        primal = 0.5 * (mu * mu).sum(-1)
        conjugate = 0.5 * (mu * mu).sum(-1) + (mu * target).sum(-1)
    else:
        log_p = torch.log_softmax(z, dim=-1)
        p = log_p.exp()
        mu = p - target
        primal = torch.logsumexp(z, -1) - (target * z).sum(-1)
        conjugate = (p * log_p).sum(-1)
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
    z = W @ h + bias
    if isinstance(loss, SquaredError):
        data_term = 0.5 * cp.sum_squares(z - target)
    else:
        data_term = cp.log_sum_exp(z) - target @ z
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
    import cvxpy as cp

    solver = check_choice("solver", str(solver).upper(), SOLVERS)
    tol = check_float("tol", tol, 0.0, 1e-2, low_open=True)
    W_t, c, c_prime, lam, lam_H, loss, bias = _prepare(W, c, c_prime, lam, lam_H, loss, bias)
    K, d = W_t.shape
    target_all = _soft_target(loss, c, c_prime, lam, K)
    problem, h_var, target = _build_problem(W_t.numpy(), bias.numpy(), lam_H, loss)
    if solver == "SCS":
        options = dict(eps_abs=tol, eps_rel=tol, max_iters=500_000, warm_start=False)
    else:
        options = dict(tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, max_iter=500)

    keys = torch.stack([c.to(torch.float64), c_prime.to(torch.float64), lam], dim=1)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), -1, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin", include_self=False)
    solutions = np.zeros((unique.shape[0], d))
    statuses = []
    for row, sample in enumerate(first.tolist()):
        target.value = target_all[sample].numpy()
        try:
            problem.solve(solver=getattr(cp, solver), **options)
        except cp.error.SolverError as error:
            raise RuntimeError(f"{solver} failed on sample {sample}: {error}") from error
        if h_var.value is None:
            raise RuntimeError(f"{solver} returned no solution for sample {sample}: {problem.status}")
        solutions[row] = h_var.value
        statuses.append(problem.status)
    h = solutions[inverse.numpy()]
    primal, dual, gap = duality_gap(W_t, h, c, c_prime, lam, lam_H, loss, bias)
    bound = feature_error_bound(primal, dual, gap, lam_H)
    return Certificate(
        h=h,
        objective=primal,
        dual_objective=dual,
        duality_gap=gap,
        feature_error_bound=bound,
        status=tuple(statuses[i] for i in inverse.tolist()),
        solver=solver,
    )
