r"""Solver for the reduced optimality equations of the cross-entropy mixup UFM.

With a simplex-ETF classifier of gain :math:`g` (:math:`WW^\top = g(I - \mathbf 1\mathbf 1^\top/K)`)
and no bias, the optimal feature of a sample with target weights :math:`y_c, y_{c'}` on two
distinct classes and :math:`y_o` on each of the :math:`K-2` others is
:math:`h = a\,w_c + b\,w_{c'}`. In the scaled unknowns :math:`u = g a`, :math:`v = g b`,
:math:`t = \lambda_H / g`, :math:`\alpha = y_c - y_o`, :math:`\beta = y_{c'} - y_o` the
stationarity conditions read (Fisher, Meng & Papyan, ICLR 2024, for :math:`y_o = 0`)

.. math::
   t u = \alpha - \frac{e^u - 1}{D}, \qquad t v = \beta - \frac{e^v - 1}{D},
   \qquad D = e^u + e^v + K - 2 .

Written naively these equations lose half of the digits when :math:`\lambda_H` is small:
the direction :math:`u + v` has curvature :math:`O(t + K/D)`. This module solves them in
an equivalent, well-conditioned form. With :math:`q = 1/D` the two equations become
one-dimensional in each unknown,

.. math::  t x + q\,(e^x - 1) = \alpha \quad (x = u), \qquad \text{same with } \beta \ (x = v),

each convex and strictly increasing in :math:`x` (so Newton's method from above converges
monotonically), and adding them gives the consistency condition, which is equivalent to
:math:`qD = 1`:

.. math::  t\,(u + v) = K\,(q - y_o) \iff
           H(\ell) := \log\bigl(y_o + t\,S(\ell)/K\bigr) - \ell = 0,\quad \ell = \log q,\ S = u + v.

:math:`H` is strictly decreasing with :math:`H'(\ell)\in[-1-2/S, -1]`, bracketed by
:math:`\ell \le -\log K` and :math:`\ell \ge \log(y_o + t\,u(1/K)/K)`; a safeguarded Newton
iteration finds its root. Every quantity is then accurate to a few units in the last place
*relative to itself*, whatever :math:`K`, :math:`t` and :math:`\alpha`, and no exponential
can overflow (:math:`q e^x \le q + \alpha`).
"""

from __future__ import annotations

import numpy as np

_EPS = np.finfo(np.float64).eps
_MAX_INNER = 200
_MAX_OUTER = 200


def solve_exp_linear(alpha: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    r"""Solve :math:`t x + q(e^x - 1) = \alpha` for :math:`x\ge 0`, elementwise.

    Requires :math:`\alpha \ge 0`, :math:`q > 0`, :math:`t > 0`. Newton's method from the upper
    bound :math:`\min(\alpha/t, \log(1+\alpha/q))` decreases monotonically to the root because
    the left-hand side is convex and increasing.
    """
    arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (alpha, q, t)))
    shape = np.broadcast_shapes(*(np.shape(v) for v in (alpha, q, t)))
    alpha, q, t = (np.array(v, dtype=np.float64) for v in arrays)
    x = np.minimum(alpha / t, np.log1p(alpha / q))
    active = x > 0
    for _ in range(_MAX_INNER):
        if not active.any():
            break
        xa, qa, ta = x[active], q[active], t[active]
        residual = ta * xa + qa * np.expm1(xa) - alpha[active]
        step = residual / (ta + qa * np.exp(xa))
        # From above the step is positive; a non-positive step means rounding level.
        moving = step > 4 * _EPS * xa
        update = np.where(step > 0, xa - step, xa)
        x[active] = update
        still = np.zeros_like(active)
        still[active] = moving
        active = still
    else:  # pragma: no cover - the iteration provably converges
        raise RuntimeError("solve_exp_linear did not converge")
    return x.reshape(shape)


def _exp_linear_slope(x: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    r""":math:`dx/d\log q` for the root of :math:`t x + q(e^x-1) = \alpha`."""
    return -q * np.expm1(x) / (t + q * np.exp(x))


def _outer(ell, alpha, beta, y_o, t, K):
    r"""Inner roots :math:`u, v` at :math:`\ell = \log q`, and :math:`H(\ell)`, :math:`H'(\ell)`."""
    q = np.exp(ell)
    u = solve_exp_linear(alpha, q, t)
    v = solve_exp_linear(beta, q, t)
    inner = y_o + t * (u + v) / K
    H = np.log(inner) - ell
    dS = _exp_linear_slope(u, q, t) + _exp_linear_slope(v, q, t)
    dH = (t / K) * dS / inner - 1.0
    return u, v, H, dH


def solve_reduced(
    alpha: np.ndarray,
    beta: np.ndarray,
    y_o: np.ndarray | float,
    t: np.ndarray | float,
    K: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Solve the reduced equations for :math:`(u, v)`, elementwise over broadcast inputs.

    Parameters
    ----------
    alpha, beta : target excess of the two classes, :math:`\alpha \ge 0`, :math:`\beta\ge 0`,
        :math:`\alpha + \beta = 1 - K y_o > 0`.
    y_o : target weight of every other class (0 for plain cross-entropy).
    t : :math:`\lambda_H / g > 0`.
    K : number of classes.

    Returns
    -------
    u, v, log_q : arrays of the broadcast shape, with :math:`\log q = -\log D`.
    """
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (alpha, beta, y_o, t)))
    shape = arrays[0].shape
    alpha, beta, y_o, t = (np.array(x, dtype=np.float64).ravel() for x in arrays)

    # Bracket: H(hi) <= 0 because D >= K; H(lo) >= 0 because S >= u(q = 1/K).
    hi = np.full(alpha.shape, -np.log(K))
    u_top = solve_exp_linear(alpha, np.full(alpha.shape, 1.0 / K), t)
    lo = np.minimum(np.log(y_o + t * u_top / K), hi)

    ell = hi.copy()
    active = np.ones(alpha.shape, dtype=bool)
    for _ in range(_MAX_OUTER):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        e = ell[idx]
        _, _, H, dH = _outer(e, alpha[idx], beta[idx], y_o[idx], t[idx], K)
        lo_i = np.where(H > 0, e, lo[idx])
        hi_i = np.where(H < 0, e, hi[idx])
        newton = e - H / dH
        inside = (newton > lo_i) & (newton < hi_i)
        proposal = np.where(inside, newton, 0.5 * (lo_i + hi_i))
        proposal = np.where(H == 0, e, proposal)
        tol = 2 * _EPS * np.maximum(1.0, np.abs(e))
        done = (np.abs(proposal - e) <= tol) | (hi_i - lo_i <= tol)
        lo[idx], hi[idx], ell[idx] = lo_i, hi_i, proposal
        active[idx[done]] = False
    else:
        raise RuntimeError(
            f"reduced-equation solver did not converge for {int(active.sum())} "
            "parameter values; please report this with the inputs"
        )
    u, v, _, _ = _outer(ell, alpha, beta, y_o, t, K)
    return u.reshape(shape), v.reshape(shape), ell.reshape(shape)
