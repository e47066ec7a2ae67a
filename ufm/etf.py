r"""Simplex equiangular tight frames (ETFs), distances to them, and classifier geometry.

A simplex ETF with row norm :math:`s` is a matrix :math:`W\in\mathbb{R}^{K\times d}` with

.. math::  W W^\top = g\,\bigl(I_K - \tfrac{1}{K}\mathbf 1\mathbf 1^\top\bigr),
           \qquad g = s^2 \tfrac{K}{K-1},

so :math:`\|w_k\|^2 = s^2`, :math:`\langle w_k, w_j\rangle = -s^2/(K-1)` and
:math:`\sum_k w_k = 0`. It needs :math:`d \ge K-1`.

This module builds such frames (:func:`simplex_etf`), measures how far a classifier or a set of
class means is from one (:func:`etf_distance`, :func:`etf_gain`), converts between gain and
row norm (:func:`gain`, :func:`row_norm`), and gives the rank-revealing factorisation of a
classifier that the solver, the network measurements and the figures share
(:func:`truncated_svd`, :func:`row_space`).

References
----------
[1] V. Papyan, X. Y. Han, D. L. Donoho. Prevalence of neural collapse during the terminal
    phase of deep learning training. PNAS 117(40), 2020.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import check_float, check_int


def simplex_etf(
    K: int,
    d: int,
    scale: float = 1.0,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    r"""Return a simplex ETF :math:`W` of shape (K, d) with row norm ``scale``.

    For ``seed=None`` the orientation is canonical: for :math:`d \ge K`,
    :math:`W = s\sqrt{K/(K-1)}\,[\,I_K - \mathbf 1\mathbf 1^\top/K,\ 0\,]`; for
    :math:`d = K-1`, :math:`W = s\sqrt{K/(K-1)}\,Q` with :math:`Q` the Helmert basis of
    :math:`\mathbf 1^\perp`. With an integer seed the canonical frame is rotated by a
    Haar-random orthogonal :math:`R\in O(d)` drawn from that seed on the CPU, so the
    result does not depend on the device.

    Parameters
    ----------
    K : number of classes, ``K >= 2``.
    d : feature dimension, ``d >= K - 1``.
    scale : row norm :math:`s > 0`.
    seed : ``None`` for the canonical orientation, or an integer.
    dtype, device : of the result (it is built in float64 on the CPU, then converted).

    Returns
    -------
    torch.Tensor
        (K, d): rows :math:`w_k` of norm ``scale``, summing to zero, with pairwise cosines
        :math:`-1/(K-1)`.

    Examples
    --------
    >>> import torch, ufm
    >>> W = ufm.simplex_etf(K=3, d=5, seed=0)
    >>> tuple(W.shape), W.dtype
    ((3, 5), torch.float64)
    >>> [round(x, 6) for x in W.norm(dim=1).tolist()]
    [1.0, 1.0, 1.0]
    >>> bool(ufm.etf_distance(W) < 1e-12)
    True
    """
    K = check_int("K", K, minimum=2)
    d = check_int("d", d, minimum=1)
    if d < K - 1:
        raise ValueError(f"a simplex ETF with K={K} classes needs d >= K-1 = {K - 1}, got d={d}")
    scale = check_float("scale", scale, 0.0, None, low_open=True)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)

    factor = scale * math.sqrt(K / (K - 1))
    frame = torch.zeros(K, d, dtype=torch.float64)
    if d >= K:
        frame[:, :K] = torch.eye(K, dtype=torch.float64) - 1.0 / K
    else:
        frame[:, : K - 1] = helmert_basis(K)
    W = factor * frame
    if seed is not None:
        W = W @ haar_orthogonal(d, seed).T
    return W.to(dtype=dtype, device=device)


def helmert_basis(K: int) -> torch.Tensor:
    r"""Orthonormal basis of :math:`\mathbf 1^\perp\subset\mathbb{R}^K`, shape (K, K-1).

    Column :math:`j` is :math:`(1,\dots,1,-j,0,\dots,0)/\sqrt{j(j+1)}` with :math:`j` ones.
    """
    K = check_int("K", K, minimum=2)
    Q = torch.zeros(K, K - 1, dtype=torch.float64)
    for j in range(1, K):
        Q[:j, j - 1] = 1.0
        Q[j, j - 1] = -float(j)
        Q[:, j - 1] /= math.sqrt(j * (j + 1))
    return Q


def haar_orthogonal(d: int, seed: int) -> torch.Tensor:
    """Haar-distributed orthogonal matrix (d, d) from ``seed`` (QR with sign correction)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    A = torch.randn(d, d, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return Q * signs


def centering_matrix(K: int, dtype=torch.float64, device=None) -> torch.Tensor:
    r""":math:`P = I_K - \mathbf 1\mathbf 1^\top / K`."""
    return torch.eye(K, dtype=dtype, device=device) - 1.0 / K


def gram_etf_distance(G: torch.Tensor) -> float:
    r"""ETF distance of a Gram matrix: :math:`\|G/\|G\|_F - P/\sqrt{K-1}\|_F`.

    It is 0 exactly when :math:`G = cP` for some :math:`c > 0`, i.e. when :math:`G` is the
    Gram matrix of a simplex ETF. Scale-invariant; lies in [0, 2].
    """
    K = G.shape[-1]
    if G.shape != (K, K):
        raise ValueError(f"G must be a square (K, K) matrix, got shape {tuple(G.shape)}")
    G = G.to(torch.float64)
    norm = torch.linalg.matrix_norm(G)
    if norm == 0:
        return math.sqrt(2.0)
    P = centering_matrix(K, device=G.device) / math.sqrt(K - 1)
    return float(torch.linalg.matrix_norm(G / norm - P))


def etf_distance(W: torch.Tensor, center: bool = False) -> float:
    r"""NC2 distance of the rows of ``W`` (K, d) from a simplex ETF.

    .. math:: \Bigl\| \frac{G}{\|G\|_F} - \frac{I_K - \mathbf 1\mathbf 1^\top/K}{\sqrt{K-1}} \Bigr\|_F,
              \qquad G = \tilde W \tilde W^\top,

    with :math:`\tilde W = W` (``center=False``, the default: a classifier is compared as it
    is) or :math:`\tilde W = W - \mathbf 1 \bar w^\top` (``center=True``, as for class means
    :math:`M`). Zero exactly for a simplex ETF (with ``center=False`` this includes
    :math:`\sum_k w_k = 0`). Papyan et al. (2020), NC2.

    Parameters
    ----------
    W : (K, d) rows to compare (classifier rows or class means), any dtype and device; the
        distance is computed in float64.
    center : subtract the mean row first (for class means, whose centre is arbitrary).

    Returns
    -------
    float
        The distance above, in [0, 2]; it does not depend on the scale of ``W``.

    Examples
    --------
    >>> import torch, ufm
    >>> d = ufm.etf_distance(ufm.simplex_etf(K=4, d=6, seed=1))
    >>> bool(d < 1e-12)
    True

    Orthonormal rows are not an ETF as they are, but are one once centred:

    >>> round(ufm.etf_distance(torch.eye(3)), 4)
    0.6058
    >>> bool(ufm.etf_distance(torch.eye(3), center=True) < 1e-12)
    True
    """
    if W.ndim != 2:
        raise ValueError(f"W must be a (K, d) matrix, got shape {tuple(W.shape)}")
    W = W.to(torch.float64)
    if center:
        W = W - W.mean(dim=0, keepdim=True)
    return gram_etf_distance(W @ W.T)


def gain(K: int, scale: float) -> float:
    r"""ETF gain :math:`g = s^2 K/(K-1)` of row norm :math:`s`.

    With it :math:`WW^\top = g(I - \mathbf 1\mathbf 1^\top/K)` for a simplex ETF :math:`W`.
    """
    return scale * scale * K / (K - 1)


def row_norm(K: int, g: float) -> float:
    r"""Row norm :math:`s = \sqrt{g(K-1)/K}` of the simplex ETF of gain :math:`g` (see :func:`gain`)."""
    return math.sqrt(g * (K - 1) / K)


def etf_gain(W: torch.Tensor) -> float:
    r"""The gain :math:`g` in :math:`WW^\top = g(I - \mathbf 1\mathbf 1^\top/K)`.

    Estimated as :math:`\operatorname{tr}(WW^\top)/(K-1)`; equals :math:`s^2K/(K-1)` for an
    ETF with row norm :math:`s`.
    """
    K = W.shape[0]
    return float((W.to(torch.float64) ** 2).sum() / (K - 1))


def check_simplex_etf(W: torch.Tensor, tol: float = 1e-6) -> float:
    """Raise ``ValueError`` unless ``W`` (K, d) is a simplex ETF; return its gain g.

    The test is ``etf_distance(W) <= tol`` (``center=False``), so the rows must also sum
    to zero.
    """
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"W must be a torch.Tensor of shape (K, d), got {type(W).__name__}")
    if W.ndim != 2 or W.shape[0] < 2:
        raise ValueError(f"W must have shape (K, d) with K >= 2, got {tuple(W.shape)}")
    K, d = W.shape
    if d < K - 1:
        raise ValueError(f"W has d={d} < K-1={K - 1}: it cannot be a simplex ETF")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W contains non-finite entries")
    distance = etf_distance(W)
    if not distance <= tol:
        raise ValueError(
            f"W is not a simplex ETF: etf_distance(W) = {distance:.3e} exceeds the tolerance "
            f"{tol:.1e} (allowed: <= tol; the exact theory holds for a simplex-ETF classifier only)"
        )
    return etf_gain(W)


def truncated_svd(matrix):
    r"""Thin SVD of ``matrix`` (m, d) cut at its numerical rank :math:`r`: ``(U, S, V)``.

    With :math:`A = U\operatorname{diag}(S)V^\top` the thin SVD (``torch.linalg.svd`` for a
    tensor, ``numpy.linalg.svd`` for an array, ``full_matrices=False`` in both), the
    singular values kept are

    .. math:: \sigma_j > \max(m, d)\,\varepsilon\,\sigma_{\max},

    the rank rule of ``numpy.linalg.matrix_rank``, with :math:`\varepsilon` the machine
    epsilon of the tensor's dtype, or of float64 for a NumPy array. A simplex ETF of
    :math:`K` rows has rank :math:`K-1`, which a plain QR factorisation would not reveal.

    Parameters
    ----------
    matrix : torch.Tensor or numpy.ndarray, shape (m, d), not all zero.

    Returns
    -------
    U : (m, r) left singular vectors.
    S : (r,) singular values, largest first.
    V : (d, r) right singular vectors: an orthonormal basis of the row space of ``matrix``.
        All three are of the input's kind (tensor or array), with the signs the SVD
        routine gives.
    """
    if isinstance(matrix, torch.Tensor):
        U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    else:
        U, S, Vh = np.linalg.svd(matrix, full_matrices=False)
    keep = S > rank_cutoff(matrix, S.max())
    return U[:, keep], S[keep], Vh[keep].T


def rank_cutoff(matrix, largest):
    r"""The singular value at or below which :func:`truncated_svd` drops a direction of
    ``matrix`` (m, d) whose largest singular value is ``largest``:
    :math:`\sigma_{\max}\max(m, d)\,\varepsilon`, :math:`\varepsilon` the machine epsilon of
    the tensor's dtype, or of float64 for a NumPy array.

    Examples
    --------
    >>> import torch
    >>> float(rank_cutoff(torch.zeros(3, 5, dtype=torch.float64), 2.0)) == 2.0 * 5 * 2.0**-52
    True
    """
    if isinstance(matrix, torch.Tensor):
        eps = torch.finfo(matrix.dtype).eps
    else:
        eps = np.finfo(np.float64).eps
    return largest * max(matrix.shape) * eps


def row_space(matrix):
    r"""Orthonormal basis (d, r) of the row space of ``matrix`` (m, d), :math:`r` its numerical rank.

    The ``V`` of :func:`truncated_svd`, of the input's kind (tensor or array).
    """
    return truncated_svd(matrix)[2]
