r"""Asymptotic forms of the cross-entropy optimum as :math:`\lambda_H \to 0`, with error estimates.

Notation of :mod:`ufm.theory.reduced_equations`: :math:`g = s^2K/(K-1)`, :math:`t = \lambda_H/g`,
:math:`u = ga`, :math:`v = gb`, :math:`S = u+v`, :math:`\Delta = u - v = z_c - z_{c'}`.

* **Same class** (:math:`t u(e^u + K - 1) = K`): :math:`u \approx W_0(K/t)`, i.e.
  :math:`a \approx W_0(gK/\lambda_H)/g` with :math:`W_0` the principal Lambert-W branch
  (docs/theory.md section 2). Relative error :math:`O(t\,u)`.
* **Different classes, margin**: :math:`\Delta \to \log(\lambda/(1-\lambda))` (the log-odds)
  at distance :math:`O(t S)`: the feature stays at a finite, lam-dependent distance from the
  :math:`c/c'` decision boundary.
* **Different classes, position along the channel**: :math:`S \approx 2W_0\bigl(K\sqrt{\lambda(1-\lambda)}/(2t)\bigr)`,
  which grows without bound: features run out along :math:`w_c + w_{c'}`.

Each function returns an :class:`Asymptotic` holding the asymptotic ``value`` and an
``error`` estimate with its sign (exact :math:`\approx` value + error): the next-order
correction, obtained from one Newton step on the exact equation. The forms are for small
:math:`t`; where the estimate itself breaks down (:math:`tS` of order one) the error is
reported as ``inf``. Fisher, Meng & Papyan,
ICLR 2024 (arXiv:2402.06171) give the leading forms; the error terms are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import lambertw

from .._checks import check_float, check_int
from .optimum import gain

__all__ = ["Asymptotic", "same_class_asymptotic", "margin_asymptotic", "channel_asymptotic"]


@dataclass(frozen=True)
class Asymptotic:
    """An asymptotic value and the estimated error: exact ~ value + error."""

    value: np.ndarray
    error: np.ndarray

    @property
    def corrected(self) -> np.ndarray:
        """value + error: the asymptotic form with its next-order correction."""
        return self.value + self.error


def _setup(K, lam_H, scale):
    K = check_int("K", K, minimum=2)
    lam_H = check_float("lam_H", lam_H, 0.0, None, low_open=True)
    scale = check_float("scale", scale, 0.0, None, low_open=True)
    g = gain(K, scale)
    return K, g, lam_H / g


def _open_lam(lam) -> np.ndarray:
    lam = np.asarray(lam, dtype=np.float64)
    if not np.isfinite(lam).all() or (lam <= 0).any() or (lam >= 1).any():
        raise ValueError(
            "lam must lie in the open interval (0, 1) for the different-class asymptotics "
            f"(the log-odds diverge at 0 and 1); got {lam.ravel()[~((lam > 0) & (lam < 1)).ravel()][:1]}"
        )
    return lam


def same_class_asymptotic(K: int, lam_H: float, scale: float = 1.0) -> Asymptotic:
    r"""Same-class coefficient :math:`a \approx W_0(gK/\lambda_H)/g` and its error.

    The error is one Newton step on :math:`\log(tu) + \log(e^u+K-1) - \log K = 0` from
    :math:`u_0 = W_0(K/t)`; to leading order it is :math:`-(K-1)\,t\,u_0^2/(K(1+u_0))/g`.
    """
    K, g, t = _setup(K, lam_H, scale)
    u0 = float(lambertw(K / t).real)
    # e^{-u0} = t u0 / K exactly on the Lambert branch, which avoids overflow.
    x = (K - 1) * t * u0 / K
    step = -np.log1p(x) / (1.0 / u0 + 1.0 / (1.0 + x))
    return Asymptotic(value=np.asarray(u0 / g), error=np.asarray(step / g))


def _leading_channel(K, t, lam):
    alpha, beta = lam, 1.0 - lam
    delta0 = np.log(alpha) - np.log1p(-alpha)
    S0 = 2.0 * lambertw(K * np.sqrt(alpha * beta) / (2.0 * t)).real
    return alpha, beta, delta0, S0


def margin_asymptotic(K: int, lam, lam_H: float, scale: float = 1.0) -> Asymptotic:
    r"""Logit margin :math:`z_c - z_{c'} = g(a-b) \to \log(\lambda/(1-\lambda))` and its error.

    Exactly, :math:`\Delta = \log\frac{\alpha - tu + q}{\beta - tv + q}` with :math:`q = tS/K`;
    the error estimate evaluates this at the leading-order :math:`u, v, q`. It is
    :math:`O(tS) = O(\lambda_H\log(1/\lambda_H))`.
    """
    K, g, t = _setup(K, lam_H, scale)
    lam = _open_lam(lam)
    alpha, beta, delta0, S0 = _leading_channel(K, t, lam)
    u0, v0, q0 = (S0 + delta0) / 2, (S0 - delta0) / 2, t * S0 / K
    x_u, x_v = (q0 - t * u0) / alpha, (q0 - t * v0) / beta
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.log1p(x_u) - np.log1p(x_v)
    # Outside the small-t regime the leading-order point is meaningless: say so with inf.
    error = np.where((x_u > -1) & (x_v > -1) & np.isfinite(error), error, np.inf)
    return Asymptotic(value=delta0, error=error)


def channel_asymptotic(K: int, lam, lam_H: float, scale: float = 1.0) -> Asymptotic:
    r"""Position along the channel, :math:`g(a+b) = S \approx 2W_0(K\sqrt{\lambda(1-\lambda)}/(2t))`.

    Grows like :math:`2\log(1/\lambda_H)`. The error estimate is one Newton step on the exact
    condition :math:`\log(tS/K) + \log(e^u + e^v + K - 2) = 0` with the corrected margin.
    """
    K, g, t = _setup(K, lam_H, scale)
    lam = _open_lam(lam)
    _, _, _, S0 = _leading_channel(K, t, lam)
    margin = margin_asymptotic(K, lam, lam_H, scale).corrected
    valid = np.isfinite(margin)
    margin = np.where(valid, margin, 0.0)
    u, v = (S0 + margin) / 2, (S0 - margin) / 2
    log_D = np.logaddexp(np.logaddexp(u, v), np.log(K - 2.0) if K > 2 else -np.inf)
    F = np.log(t * S0 / K) + log_D
    dF = 1.0 / S0 + 0.5 * (np.exp(u - log_D) + np.exp(v - log_D))
    error = np.where(valid, -F / dF, np.inf)
    return Asymptotic(value=S0, error=error)
