r"""The exact theory a solve is measured against: distances of the solved features to it.

For a fixed simplex-ETF classifier without bias, and a loss with an exact optimum
(:func:`ufm.theory.has_exact_theory`), the optimal features are known in closed form
(docs/theory.md sections 2-3, Fisher, Meng & Papyan, ICLR 2024): sample :math:`s` with classes
:math:`(c_s, c'_s)` and mixing weight :math:`\lambda_s` sits at
:math:`h^*_s = a(\lambda_s)\,w_{c_s} + b(\lambda_s)\,w_{c'_s}`. :class:`TheoryReference`
holds the coefficients :math:`a, b` of every sample and gives the relative distance
:math:`\|H - H^*\|_F / \|H^*\|_F`, overall (a column of the history) and per value of
lam (in the summary). :func:`learned_etf_comparison` does the same for a learned classifier
that has converged to a simplex ETF (docs/theory.md section 4), against the exact optimum for
that W. Nothing here steers the iteration: the distances are reported, not stopped on.

Mixtures of m > 2 classes (Chaudhry et al., 2022) are measured by the same reference
against :func:`ufm.theory.mixture_features`: sample :math:`s` with classes
:math:`c_{s,1..m}` and weights :math:`y_{s,1..m}` sits at
:math:`h^*_s = \sum_k a_k(y_s)\,w_{c_{s,k}}` (docs/theory.md section 3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..etf import etf_distance, etf_gain, row_norm
from ..theory import (
    has_exact_theory,
    mixture_coefficients,
    mixture_features,
    optimal_coefficients,
    optimal_features,
)
from .chunk_threads import ChunkThreads, row_blocks
from .problem import Problem


class _ChunkedReference:
    """The distances to the exact features, from the per-sample squares of a subclass's
    ``_squares(features, frame, idx, rows)``, summed chunk by chunk on the chunk threads; each
    chunk's sums are added in chunk order, whatever thread ran it (kept on one CPU each when
    ``pin_cpus``)."""

    def __init__(self, problem: Problem, pin_cpus: bool = False):
        self.problem = problem
        self.threads = ChunkThreads(problem.device, problem.config.parallel, pin_cpus)

    def _chunks(self, device) -> list[torch.Tensor]:
        return [torch.arange(rows.start, rows.stop, device=device)
                for rows in row_blocks(self.problem.n, self.problem.config.chunk_rows)]

    def distance(self, features, frame, rows=None) -> float:
        """|H - H*|_F / |H*|_F over all samples; ``rows`` (n,), where given, names the row of
        ``features`` that holds each sample's (a group's, :mod:`.sample_groups`)."""
        def sums(idx):
            num, den = self._squares(features, frame, idx, rows)
            return float(num.sum()), float(den.sum())

        sums = self.threads.map(sums, self._chunks(features.device))
        return _relative(sum(a for a, _ in sums), sum(b for _, b in sums))

    def _group_sums(self, features, frame, group, groups,
                    rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 sums of |f - f*|^2 and |f*|^2 per group (``group`` numbers each sample's)."""
        def sums(idx):
            out = torch.zeros(2, groups, dtype=torch.float64, device=features.device)
            for row, values in zip(out, self._squares(features, frame, idx, rows)):
                row.index_add_(0, group[idx], values.to(torch.float64))
            return out

        total = sum(self.threads.map(sums, self._chunks(features.device)))
        return total[0], total[1]


class TheoryReference(_ChunkedReference):
    r"""Exact optimal features for a fixed simplex-ETF classifier, as per-sample coefficients.

    One reference for every sample layout: sample :math:`s` with classes :math:`c_{s,1..m}`
    (pairs: m = 2) sits at :math:`h^*_s = \sum_k a_{s,k}\,w_{c_{s,k}}`, with ``a`` (n, m)
    from :func:`ufm.theory.optimal_coefficients` for pairs (:math:`a(\lambda), b(\lambda)`;
    a same-class pair :math:`a_\text{same}, 0`) and from
    :func:`ufm.theory.mixture_coefficients` for mixtures, one solve per distinct weight
    vector. ``group`` (n,) numbers each sample's distinct weight vector (for pairs on a lam
    grid: its lam, ``lam_values``); it gives the distances per lam and the worst group.

    Built by :meth:`build`, which returns None when the problem has no exact theory. The
    distances take the features in one of three frames: ``(H, W)``, the coordinates ``X``
    and ``A`` of :class:`~ufm.solver.feature_newton.FeatureSolver` (``W = A V^T``,
    ``H = X V^T``, so the distances agree and no H is formed), or, for pairs, the logit
    coordinates of a tight frame with their :class:`~ufm.solver.frames.CentredFrame`.
    """

    def __init__(self, problem: Problem, a: torch.Tensor, group: torch.Tensor | None = None,
                 groups: int = 0, lam_values: list[float] | None = None,
                 pin_cpus: bool = False):
        super().__init__(problem, pin_cpus)
        self.a, self.group, self.groups, self.lam_values = a, group, groups, lam_values

    @classmethod
    def build(cls, problem: Problem, pin_cpus: bool = False) -> TheoryReference | None:
        """The reference of ``problem``, or None without an exact optimum to compare with;
        ``pin_cpus`` as for :class:`~ufm.solver.chunk_threads.ChunkThreads`."""
        config = problem.config
        no_theory = problem.b0 is not None or not has_exact_theory(problem.loss)
        if config.classifier != "fixed_etf" or no_theory:
            return None
        W = problem.W0
        K = W.shape[0]
        scale = row_norm(K, etf_gain(W))
        if problem.mixes_pairs:
            lam = problem.lam.detach().cpu().to(torch.float64)
            unique, inverse = torch.unique(lam, return_inverse=True)
            a_u, b_u = optimal_coefficients(K, unique.numpy(), config.lam_H, scale, problem.loss)
            (a_same,), _ = optimal_coefficients(K, [1.0], config.lam_H, scale, problem.loss,
                                                same_class=True)
            same = (problem.c == problem.c_prime).cpu()
            a = torch.stack([torch.where(same, a_same, torch.from_numpy(a_u)[inverse]),
                             torch.where(same, 0.0, torch.from_numpy(b_u)[inverse])], 1)
            # lam drawn from a Beta law: no grid to report on
            values = unique.tolist() if config.alpha is None else None
        else:
            weights = _float64_weights(problem).cpu()
            unique, inverse = torch.unique(weights, dim=0, return_inverse=True)
            a = torch.from_numpy(mixture_coefficients(K, unique.numpy(), config.lam_H, scale,
                                                      problem.loss))[inverse]
            values = None
        return cls(problem, a.to(problem.device, W.dtype), inverse.to(problem.device),
                   unique.shape[0], values, pin_cpus)

    def _squares(self, features, frame, idx, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample of ``idx``: |f - f*|^2 and |f*|^2, f* = sum_k a_k frame[c_k], f its row
        of ``features`` (``rows[idx]`` where ``rows`` is given)."""
        a = self.a[idx]
        f = features[idx if rows is None else rows[idx]]
        if self.problem.mixes_pairs:  # two gathered rows, or the logit frame's scatter
            c, cp = self.problem.c[idx], self.problem.c_prime[idx]
            if hasattr(frame, "pair_squares"):  # the logit frame of a tight frame (.frames)
                return frame.pair_squares(f, c, cp, a[:, 0], a[:, 1])
            exact = a[:, 0, None] * frame[c] + a[:, 1, None] * frame[cp]
        else:
            exact = F.embedding_bag(self.problem.classes[idx], frame, per_sample_weights=a,
                                    mode="sum")
        return ((f - exact) ** 2).sum(-1), (exact**2).sum(-1)

    def distance_per_lam(self, features, frame, rows=None) -> dict[str, float] | None:
        """Relative distance per distinct lam, keyed by lam to 6 digits (pairs on a lam grid
        only; None otherwise: m-class samples have no single lam, see
        :meth:`worst_weights_distance`).

        One pass over the chunks on the chunk threads; each chunk's sums per lam are added
        in chunk order, so the result does not depend on the threads.
        """
        if self.lam_values is None:
            return None
        num, den = self._group_sums(features, frame, self.group, self.groups, rows)
        return {f"{value:.6g}": _relative(a, b)
                for value, a, b in zip(self.lam_values, num.tolist(), den.tolist())}

    def worst_weights_distance(self, features, frame, rows=None) -> float:
        """The largest relative distance over the groups of samples sharing a weight vector.

        Absolute where a group's exact features are all zero (equal weights with m = K).
        """
        num, den = self._group_sums(features, frame, self.group, self.groups, rows)
        relative = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), num).sqrt()
        return float(relative.max())


def learned_etf_comparison(problem: Problem, H, W, b) -> dict[str, Any]:
    """Summary entries for a learned W: the distance of H to the exact theory for that W.

    Empty unless the classifier is learned, without bias, with a loss that has an exact
    optimum; ``theory_distance_learned_W`` is None when W is not within 1e-3 of a simplex
    ETF, else it comes with ``learned_W_gain`` (:func:`ufm.etf.etf_gain`).
    """
    config = problem.config
    if config.classifier != "learned" or b is not None or not has_exact_theory(problem.loss):
        return {}
    distance = etf_distance(W)
    if distance > 1e-3:
        return {"theory_distance_learned_W": None}
    if not problem.mixes_pairs:
        exact = mixture_features(W, problem.classes, _float64_weights(problem),
                                 config.lam_H, loss=problem.loss, etf_tol=1e-3).to(H.dtype)
    else:
        exact = optimal_features(W, problem.c, problem.c_prime, problem.lam, config.lam_H,
                                 loss=problem.loss, etf_tol=1e-3)
    value = float((H - exact).norm() / exact.norm())
    return {"theory_distance_learned_W": value, "learned_W_gain": etf_gain(W)}


def _float64_weights(problem: Problem) -> torch.Tensor:
    """The mixture weights in float64, divided by their sums (float32 rounding is undone)."""
    weights = problem.weights.detach().to(torch.float64)
    return weights / weights.sum(-1, keepdim=True)


def _relative(num: float, den: float) -> float:
    """sqrt(num / den), or the absolute sqrt(num) when the reference is zero."""
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)
