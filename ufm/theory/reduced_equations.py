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

**Mixtures of m classes** (:func:`solve_reduced_mixture`). A target with weights
:math:`y_1,\dots,y_m` on :math:`m` distinct classes has :math:`h = \sum_k a_k w_{c_k}` and the
same structure: :math:`t x_k + q(e^{x_k} - 1) = \alpha_k` for each :math:`k`, with
:math:`q = 1/D`, :math:`D = \sum_k e^{x_k} + K - m`, and the consistency condition is again
:math:`t S = K(q - y_o)` with :math:`S = \sum_k x_k`, because
:math:`D = K + \sum_k (e^{x_k} - 1)` does not depend on :math:`m` once written this way (a class of
weight 0 has :math:`x_k = 0` and drops out). For :math:`m = 2` this is the pair system above.
Mixtures of more than two points are the setting of Chaudhry et al., "When does mixup promote
local linearity in learned representations?" (2022).
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


_MAX_PASSES = 60


def _exp_linear_passes(alpha, q, t, x, upper, work) -> tuple[np.ndarray, np.ndarray]:
    r"""Solve :math:`t x + q(e^x - 1) = \alpha` by Newton passes over the whole array at once.

    ``alpha``, the start ``x`` (overwritten), ``upper`` :math:`= \min(\alpha/t, \log(1+\alpha/q))`
    (which lies above the root) and the two scratch arrays ``work`` have shape (m, n), ``q``
    shape (n,). The left-hand side :math:`f` is convex and increasing, so one Newton step
    from anywhere in :math:`[0, \text{upper}]` lands above the root and every later step
    decreases to it, with error :math:`e_{n+1} \le f''e_n^2/(2f') \le e_n^2/2`, hence
    :math:`e_{n+1} \le 2 s_n^2` for the step :math:`s_n`. Passes stop once
    :math:`2 s_n^2 \le \varepsilon x` for every entry: the next step would move no entry by
    more than its last unit of precision. Returns the root and :math:`dx/d\log q =
    -q(e^x-1)/(t+qe^x)` from the last pass (at the root to within the last step).
    """
    np.maximum(x, 0.0, out=x)
    np.minimum(x, upper, out=x)
    q_plus_t = q + t
    f_prime, step = work
    for _ in range(_MAX_PASSES):
        np.expm1(x, out=f_prime)
        f_prime *= q  # q (e^x - 1)
        np.multiply(x, t, out=step)
        step += f_prime
        step -= alpha  # f(x)
        f_prime += q_plus_t  # f'(x) = t + q e^x
        step /= f_prime
        x -= step
        np.minimum(x, upper, out=x)
        if (step * step <= (0.5 * _EPS) * x).all():
            return x, (q_plus_t - f_prime) / f_prime
    raise RuntimeError(  # pragma: no cover - quadratic convergence from above
        "mixture inner solve did not converge; please report this with the inputs"
    )


def _mixture_bracket_and_start(a, a_over_t, y_o, t, K):
    r"""Bracket :math:`[\ell_{lo}, -\log K]` of the root of :math:`H`, and a first iterate.

    At :math:`q_0 = 1/K` the chord of the convex :math:`f` between 0 and
    :math:`x^{up} = \min(\alpha/t, \log(1+\alpha/q_0))` gives
    :math:`x \ge \alpha x^{up}/(f(x^{up})+\alpha)`, so
    :math:`\ell_{lo} = \log(y_o + t\sum_k x_k^{low}/K)` lies below the root. The first iterate
    is one Newton step from :math:`-\log K` on :math:`H` evaluated with the closed-form upper
    bounds :math:`x^{up}` in place of the roots (exact as :math:`t\to 0` and as
    :math:`t\to\infty`), kept inside the bracket.
    """
    hi = np.full(a.shape[1], -np.log(K))
    q0 = 1.0 / K
    log_branch = np.log1p(a * K)
    upper = np.minimum(a_over_t, log_branch)
    f_upper = t * upper + q0 * np.expm1(upper) - a
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(a > 0, a * upper / (f_upper + a), 0.0)
    lo = np.minimum(np.log(y_o + (t / K) * low.sum(axis=0)), hi)
    inner = y_o + (t / K) * upper.sum(axis=0)
    slope = np.where(log_branch < a_over_t, -a / (q0 + a), 0.0)
    H = np.log(inner) - hi
    dH = (t / K) * slope.sum(axis=0) / inner - 1.0
    return lo, hi, np.clip(hi - H / dH, lo, hi)


def solve_reduced_mixture(
    alpha: np.ndarray, y_o: float, t: float, K: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Solve the m-class reduced equations for every mixture at once.

    Unknowns :math:`x_k = g a_k` (and :math:`\ell = \log q`) of

    .. math:: t x_k + q\,(e^{x_k} - 1) = \alpha_k \ (k = 1..m), \qquad
              H(\ell) = \log\bigl(y_o + tS/K\bigr) - \ell = 0,\quad S = \textstyle\sum_k x_k,

    equivalent to docs/theory.md's :math:`\lambda_H a_k = y_k - (e^{ga_k}-1)/D`,
    :math:`D = \sum_j e^{ga_j} + K - m` (Fisher, Meng & Papyan, ICLR 2024, arXiv:2402.06171,
    for :math:`m = 2`). :math:`H` is strictly decreasing (:math:`H' \le -1`), with its root
    inside :math:`[\ell_{lo}, -\log K]` (:math:`D \ge K`; see
    :func:`_mixture_bracket_and_start`). Safeguarded Newton steps on :math:`\ell` (bisection
    when a step leaves the bracket) are taken for all mixtures together, and after each the
    inner roots are refreshed by :func:`_exp_linear_passes` from the tangent prediction
    :math:`x + x'(\ell)\,\delta\ell`. About 11 vectorised passes in all (3 to 14 measured over
    :math:`3\le K\le 1000`, :math:`m\le 8`, :math:`10^{-6}\le\lambda_H\le 10`,
    :math:`0.3\le s\le 4`), whatever the number of mixtures; nothing can overflow
    (:math:`q e^{x_k} \le q + \alpha_k`).

    The consistency condition uses :math:`\sum_k\alpha_k = 1 - Ky_o` exactly, so float
    weights whose sum is off by a rounding error are solved as the simplex point they round
    to. This matters: at small :math:`\lambda_H` the stated equations, taken literally, move
    by :math:`O(10^{-12})` when :math:`\sum_k y_k` moves by :math:`10^{-16}`.

    Parameters
    ----------
    alpha : (..., m) target excess :math:`\alpha_k = y_k - y_o \ge 0` of each mixture, with
        :math:`\sum_k \alpha_k = 1 - K y_o > 0` (zero entries give :math:`x_k = 0`).
    y_o : target weight of every class outside the mixture (label smoothing; 0 for CE).
    t : :math:`\lambda_H / g > 0`.
    K : number of classes, :math:`K \ge m`.

    Returns
    -------
    x, log_q : arrays of shapes (..., m) and (...).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    shape = alpha.shape
    # (m, n) layout: the sums over a mixture's classes become m - 1 contiguous additions.
    a = np.ascontiguousarray(alpha.reshape(-1, shape[-1]).T)
    t, y_o = float(t), float(y_o)
    work = (np.empty_like(a), np.empty_like(a))
    a_over_t = a / t
    lo, hi, ell = _mixture_bracket_and_start(a, a_over_t, y_o, t, K)
    q = np.exp(ell)
    upper = np.minimum(a_over_t, np.log1p(a / q))
    x, slope = _exp_linear_passes(a, q, t, upper.copy(), upper, work)
    for _ in range(_MAX_OUTER):
        inner = y_o + (t / K) * x.sum(axis=0)
        H = np.log(inner) - ell
        dH = (t / K) * slope.sum(axis=0) / inner - 1.0
        lo = np.where(H > 0, ell, lo)
        hi = np.where(H < 0, ell, hi)
        newton = ell - H / dH
        proposal = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        tol = 4 * _EPS * np.maximum(1.0, np.abs(ell))
        done = (H == 0) | (np.abs(proposal - ell) <= tol) | (hi - lo <= tol)
        if done.all():
            return x.T.reshape(shape), ell.reshape(shape[:-1])
        proposal = np.where(done, ell, proposal)
        q = np.exp(proposal)
        np.minimum(a_over_t, np.log1p(a / q), out=upper)
        x, slope = _exp_linear_passes(a, q, t, x + slope * (proposal - ell), upper, work)
        ell = proposal
    raise RuntimeError(  # pragma: no cover - Newton inside a shrinking bracket
        f"mixture reduced-equation solver did not converge for {int((~done).sum())} mixtures; "
        "please report this with the inputs"
    )
