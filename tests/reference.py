"""Independent high-precision references for the tests.

Kept apart from ``ufm`` on purpose: these solve the *original* reduced equations of
docs/theory.md section 2 (not the log-q form ``ufm.theory.reduced_equations`` uses) with mpmath
at 40+ digits,
and solve the full per-sample problems with generic optimisers.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import torch
from scipy.optimize import minimize


def mp_coefficients(K, lam, lam_H, scale, start, dps=60, smoothing=0.0):
    """(a, b) solving the reduced CE equations to ``dps`` digits by Newton's method.

    Equations (docs/theory.md section 2, generalised to label smoothing eps with y_o = eps/K):
        lam_H a = (1-eps) lam     - (e^{g a} - 1)/D
        lam_H b = (1-eps) (1-lam) - (e^{g b} - 1)/D,   D = e^{ga} + e^{gb} + K - 2.
    ``start`` is an initial guess (a0, b0); Newton's method runs until the step is below
    10^-(dps-20) relative (the Jacobian's condition number reaches 1e10 when lam_H is tiny, so
    20 digits are kept in reserve), so the result does not depend on the guess beyond lying
    in the basin of the unique root. With the default 60 digits the result is good to 40.
    """
    with mp.workdps(dps):
        K_ = mp.mpf(K)
        g = mp.mpf(scale) ** 2 * K_ / (K_ - 1)
        lamH = mp.mpf(lam_H)
        lam_ = mp.mpf(lam)
        eps = mp.mpf(smoothing)
        alpha, beta = (1 - eps) * lam_, (1 - eps) * (1 - lam_)
        a, b = mp.mpf(start[0]), mp.mpf(start[1])
        for _ in range(200):
            ea, eb = mp.exp(g * a), mp.exp(g * b)
            D = ea + eb + K_ - 2
            f1 = lamH * a - alpha + (ea - 1) / D
            f2 = lamH * b - beta + (eb - 1) / D
            # Jacobian of f w.r.t. (a, b)
            dD_da, dD_db = g * ea, g * eb
            j11 = lamH + g * ea / D - (ea - 1) * dD_da / D**2
            j12 = -(ea - 1) * dD_db / D**2
            j21 = -(eb - 1) * dD_da / D**2
            j22 = lamH + g * eb / D - (eb - 1) * dD_db / D**2
            det = j11 * j22 - j12 * j21
            da = (j22 * f1 - j12 * f2) / det
            db = (-j21 * f1 + j11 * f2) / det
            a, b = a - da, b - db
            if abs(da) + abs(db) <= mp.mpf(10) ** (-(dps - 20)) * (abs(a) + abs(b)):
                break
        else:
            raise RuntimeError("mpmath Newton did not converge")
        return a, b


def mp_same_class(K, lam_H, scale, start, dps=60):
    """Same-class coefficient: lam_H a (e^{g a} + K - 1) = K, to ``dps`` digits."""
    with mp.workdps(dps):
        K_ = mp.mpf(K)
        g = mp.mpf(scale) ** 2 * K_ / (K_ - 1)
        lamH = mp.mpf(lam_H)
        f = lambda a: mp.log(lamH * a) + mp.log(mp.exp(g * a) + K_ - 1) - mp.log(K_)  # noqa: E731
        return mp.findroot(f, mp.mpf(start), tol=mp.mpf(10) ** (-2 * dps + 10))


def feature_error(K, scale, da, db):
    """|da w_c + db w_c'| for an ETF with row norm ``scale`` (Gram form)."""
    sq = da * da + db * db - 2 * da * db / (K - 1)
    return float(scale * mp.sqrt(max(sq, 0)))


def direct_minimize(W, y, lam_H, x0=None):
    """Minimise CE(Wh, y) + lam_H/2 |h|^2 over h in R^d (float64), with no symmetry assumed.

    scipy's exact-Hessian trust-region method (Hessian W^T (diag p - p p^T) W + lam_H I);
    it converges quadratically, to the rounding level of the gradient.
    """
    W = np.asarray(W, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)

    def probabilities(h):
        z = W @ h
        m = z.max()
        lse = m + np.log(np.exp(z - m).sum())
        return z, lse, np.exp(z - lse)

    def fun(h):
        z, lse, _ = probabilities(h)
        return lse - y @ z + 0.5 * lam_H * h @ h

    def jac(h):
        _, _, p = probabilities(h)
        return W.T @ (p - y) + lam_H * h

    def hess(h):
        _, _, p = probabilities(h)
        WtP = W.T * p
        return WtP @ W - np.outer(W.T @ p, W.T @ p) + lam_H * np.eye(W.shape[1])

    x0 = np.zeros(W.shape[1]) if x0 is None else x0
    result = minimize(fun, x0, jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-13})
    # trust-exact compares function values, which stall at rounding level; finish with plain
    # Newton steps on the gradient, kept while they reduce it.
    h = result.x
    for _ in range(20):
        gradient = jac(h)
        candidate = h - np.linalg.solve(hess(h), gradient)
        if np.linalg.norm(jac(candidate)) >= np.linalg.norm(gradient):
            break
        h = candidate
    return h


def stationarity_residual(W: torch.Tensor, h: torch.Tensor, y: torch.Tensor, lam_H: float):
    """|lam_H h - W^T (y - softmax(W h))| per sample."""
    p = torch.softmax(h @ W.T, dim=-1)
    return torch.linalg.vector_norm(lam_H * h - (y - p) @ W, dim=-1)


def mp_mixture_coefficients(K, weights, lam_H, scale, start, dps=60, smoothing=0.0):
    """a_1..a_m solving the m-class reduced CE equations to ``dps`` digits (Newton, mpmath).

    Equations (docs/theory.md section 3, label smoothing eps):
        lam_H a_k = (1-eps) y_k - (e^{g a_k} - 1)/D,   D = sum_j e^{g a_j} + K - m,
    written in the original unknowns a_k (not the log-q form of ``ufm``). The float weights
    are divided by their sum in mpmath, so that sum_k y_k = 1 holds exactly: at small lam_H
    the solution is very sensitive to that sum (a deviation of 1e-16 moves it by ~1e-12),
    while a change that keeps the sum moves it by rounding only. The Jacobian
    J_kj = (lam_H + g e^{g a_k}/D) delta_kj - g (e^{g a_k} - 1) e^{g a_j}/D^2 is solved with
    mpmath's LU; iterations stop when the step is below 10^-(dps-20) of |a| (20 digits are
    kept in reserve for the conditioning at small lam_H). Returns a list of mpf.
    """
    with mp.workdps(dps):
        K_ = mp.mpf(K)
        g = mp.mpf(scale) ** 2 * K_ / (K_ - 1)
        lamH = mp.mpf(lam_H)
        eps = mp.mpf(smoothing)
        raw = [mp.mpf(float(w)) for w in weights]
        total = mp.fsum(raw)
        y = [(1 - eps) * w / total for w in raw]
        m = len(y)
        a = [mp.mpf(float(x)) for x in start]
        for _ in range(200):
            e = [mp.exp(g * x) for x in a]
            D = mp.fsum(e) + K_ - m
            F = mp.matrix([lamH * a[k] - y[k] + (e[k] - 1) / D for k in range(m)])
            J = mp.matrix(m, m)
            for k in range(m):
                for j in range(m):
                    J[k, j] = -g * (e[k] - 1) * e[j] / D**2
                J[k, k] += lamH + g * e[k] / D
            step = mp.lu_solve(J, F)
            a = [a[k] - step[k] for k in range(m)]
            size = mp.fsum(abs(x) for x in a)
            if mp.fsum(abs(s) for s in step) <= mp.mpf(10) ** (-(dps - 20)) * size:
                return a
        raise RuntimeError("mpmath Newton (mixture) did not converge")


def mixture_feature_error(K, scale, delta):
    """|sum_k delta_k w_{c_k}| for distinct classes of an ETF with row norm ``scale`` (Gram form).

    |h|^2 = g (sum_k delta_k^2 - (sum_k delta_k)^2 / K), g = s^2 K/(K-1).
    """
    with mp.workdps(40):
        g = mp.mpf(scale) ** 2 * K / (K - 1)
        total = mp.fsum(delta)
        sq = g * (mp.fsum(x * x for x in delta) - total * total / K)
        return float(mp.sqrt(max(sq, 0)))
