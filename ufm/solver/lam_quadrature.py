r"""A few lam values stand for the whole grid: a quadrature rule for sums over the lam grid.

Pairs on a grid of mixing weights :math:`g_0 < \dots < g_{N-1}` repeat every grid value for
every pair of classes, so a sum over the samples is, pair by pair, a sum over the grid,
:math:`\sum_j f(g_j)`. This module picks m of the grid values and positive weights
:math:`w_k` with

.. math:: \sum_{k=1}^m w_k\,f(g_{j_k}) = \sum_{j=0}^{N-1} f(g_j)
          \quad\text{for every polynomial } f \text{ of degree} < m,

a discrete analogue of Gauss-Lobatto quadrature: the nodes are the grid values nearest the
Chebyshev-Lobatto points of the grid's range (which crowd towards 0 and 1), and the weights
match the grid's first m discrete moments (in the Legendre basis of that range, which keeps
the small linear system well conditioned). For a function smooth in lam the rule's error
falls fast with m.

Where it is used: the reduced Hessian of a learned classifier is such a sum, over samples,
of terms that depend smoothly on each sample's lam (:meth:`~.feature_newton.FeatureSolver.
reduced_hessian_vector`), so Newton-CG (:mod:`.newton_cg`) runs its Hessian products on the
samples at the rule's lam values alone, each weighted by its node's weight: 11 of the 21
values of the default grid, the pure classes at 0 and 1 included.

Why: every 4th sample as stored, the subsample the method otherwise takes, has an error that
made later Newton steps fail, so it serves the first steps only; the rule's error is that of
a smooth function's quadrature, orders of magnitude smaller at about twice the rows
(``scripts/quadrature_error.py`` measures both at a learned optimum, in random directions
and in soft ones; ``docs/performance.md`` has the numbers). The 11-node rule keeps 9 of the
19 mixed values of every pair of the default grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# lam values of the grid that Newton-CG's Hessian products keep (an odd number: the rule is
# then symmetric on a symmetric grid)
QUADRATURE_NODES = 11


def grid_quadrature(grid: torch.Tensor, nodes: int = QUADRATURE_NODES) -> torch.Tensor | None:
    r"""(N,) float64 weights over the values of ``grid``, positive on ``nodes`` of them and 0
    elsewhere, whose weighted sum of any polynomial of degree below ``nodes`` equals its plain
    sum over the grid (module docstring); None where the rule would not about halve the work
    (a grid of fewer than ``2 nodes - 1`` values), where the grid repeats a value (a pair then
    holds one target twice, which the rule's nodes cannot tell apart), or where a weight
    comes out non-positive or the weights miss the grid's moments (an unevenly spaced grid
    can do either).

    >>> weights = grid_quadrature(torch.linspace(0.0, 1.0, 21, dtype=torch.float64))
    >>> torch.nonzero(weights).squeeze(1).tolist()
    [0, 1, 2, 4, 7, 10, 13, 16, 18, 19, 20]
    >>> round(float(weights.sum()), 12)
    21.0
    >>> grid_quadrature(torch.linspace(0.0, 1.0, 5, dtype=torch.float64)) is None
    True
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    values = grid.detach().to(device="cpu", dtype=torch.float64).numpy()
    N = values.size
    if N < max(2 * nodes - 1, 2) or np.unique(values).size != N:
        return None
    low, high = float(values.min()), float(values.max())
    chosen = _nodes(values, low, high, nodes)
    # Legendre moments of the grid on [low, high] mapped to [-1, 1]
    scaled = 2.0 * (values - low) / (high - low) - 1.0
    basis = np.polynomial.legendre.legvander(scaled, nodes - 1)  # (N, nodes)
    moments = basis.sum(0)
    node_weights = np.linalg.solve(basis[chosen].T, moments)
    missed = np.abs(basis[chosen].T @ node_weights - moments).max()
    if not np.all(node_weights > 0) or not missed <= 1e-10 * N:
        return None
    weights = torch.zeros(N, dtype=torch.float64)
    weights[torch.as_tensor(chosen)] = torch.as_tensor(node_weights)
    return weights


def _nodes(values: np.ndarray, low: float, high: float, nodes: int) -> list[int]:
    """The positions of the grid values nearest the Chebyshev-Lobatto points of [low, high],
    taken from both ends inwards, each the nearest value not yet taken."""
    if nodes == 1:
        targets = [0.5 * (low + high)]
        order = [0]
    else:
        targets = [low + 0.5 * (high - low) * (1.0 - math.cos(math.pi * k / (nodes - 1)))
                   for k in range(nodes)]
        order = [k for pair in zip(range(nodes), range(nodes - 1, -1, -1)) for k in pair]
        order = list(dict.fromkeys(order))[:nodes]
    taken: set[int] = set()
    chosen = [0] * nodes
    for k in order:
        distance = np.abs(values - targets[k])
        for j in np.argsort(distance, kind="stable"):
            if int(j) not in taken:
                taken.add(int(j))
                chosen[k] = int(j)
                break
    return chosen


def sample_quadrature(lam_index: torch.Tensor, grid: torch.Tensor,
                      nodes: int = QUADRATURE_NODES) -> torch.Tensor | None:
    """(n,) float64 weight of every sample under the rule of :func:`grid_quadrature`: its
    grid value's weight, 0 for the values left out; ``lam_index`` (n,) is the position of
    each sample's lam in ``grid``. None where the grid has no rule.

    >>> grid = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    >>> weights = sample_quadrature(torch.arange(21).repeat(3), grid)
    >>> int((weights > 0).sum()), round(float(weights.sum()), 12)
    (33, 63.0)
    """
    rule = grid_quadrature(grid, nodes)
    return None if rule is None else rule.to(lam_index.device)[lam_index]
