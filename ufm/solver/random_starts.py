r"""Several random starts of a learned classifier, where its problem can have several minima.

With the features eliminated, the learned problem is a function of the logits and of the
Gram matrix :math:`G = WW^\top` that is convex in both together (the feature penalty is the
matrix-fractional function :math:`z^\top G^{+} z`, docs/theory.md section 13). The feature
dimension d enters only as the bound :math:`\mathrm{rank}\,G \le d`. :func:`rank_bound` is
the rank a minimum of that convex problem can need: K - 1 for a loss that a common logit
shift leaves unchanged (cross-entropy, label smoothing, focal, logit adjustment: taking the
mean row out of W changes no loss and lowers its penalty, so a minimum has
:math:`\mathbf 1^\top W = 0`), K for the others (the squared error, whose W carries a
common row offset). From there up the bound cuts off no minimum, and a local minimum of the
factored problem with rank W < d is a global one (Journee, Bach, Absil & Sepulchre, SIAM J.
Optim. 2010); at d = K - 1 exactly a full-rank stationary point is not ruled out by that,
but none has been seen: the 756 starts of ``scripts/minority_theory_check.py`` at
d >= K - 1 agree to 7.5e-16 in objective. Below the bound the problem is rank-constrained
and has several stationary points: at K = 10, d = 8, lam_W = 1e-2 (21 lams) seed 0 ends at
ETF distance 0.3626, seeds 1 to 3 at 0.3432 with a lower objective (docs/phase_map.md).

:func:`start_count` is the number of starts a solve makes: ``config.starts`` below
:func:`rank_bound` (a learned classifier from a random start), one elsewhere, where more
would repeat the same minimum. Start 0 is the single solve itself (its initial W drawn as
always, from the generator seeded with ``seed`` after the samples), so a solve from several
starts is never worse than the single one; start k >= 1 draws its initial W the same way
(entries of standard deviation ``init_scale``/sqrt(d)) from a generator seeded with
``seed + k``, the samples unchanged. :func:`lowest_start` keeps the start with the lowest
final objective and records what the others reached.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .problem import UFMConfig, _initial_classifier

# Two starts reach the same minimum when their final objectives agree to this relative
# tolerance. Starts that end at one minimum were seen to agree to 1.6e-10 (the quick sweep,
# stopped at gradient 1e-6) and 4e-16 (the full one, 1e-9); distinct stationary points were
# 7.2e-7 (K = 10, d = 8, lam_W = 0.1, ETF distances 0.3382 and 0.3427) to 2e-2 (K = 6,
# d = 4) apart. 1e-8 lies well between the two.
STARTS_RTOL = 1e-8


def rank_bound(config: UFMConfig) -> int:
    """The largest rank of W that a minimum of the learned problem can need (module
    docstring): K - 1 for a loss unchanged by a common logit shift, else K."""
    return config.K - 1 if config.make_loss().shift_invariant else config.K


def start_count(config: UFMConfig) -> int:
    """The starts a solve of ``config`` makes: ``config.starts`` where d is below
    :func:`rank_bound` with a learned classifier, else 1 (module docstring)."""
    if config.starts == 1 or not config.learns_classifier:
        return 1
    return config.starts if config.d < rank_bound(config) else 1


def start_classifier(config: UFMConfig, start: int) -> torch.Tensor:
    """The initial W (K, d) float64 of start ``start`` >= 1: drawn as a random initial W is,
    from a generator seeded with ``seed + start``."""
    if start < 1:
        raise ValueError(f"start must be >= 1 (start 0 is the solve's own), got {start}")
    return _initial_classifier(config, torch.Generator().manual_seed(config.seed + start))


def lowest_start(objectives: list[float | None]) -> dict[str, Any]:
    """Which of the starts' final ``objectives`` is the lowest, and how many reached it.

    Returns ``best_start`` (the index of the lowest finite objective, the first of equal
    ones; 0 when none is finite), ``starts_reached`` (the starts within :data:`STARTS_RTOL`
    relative of it) and ``start_objective_spread`` (the highest finite objective minus the
    lowest, relative to the lowest).
    """
    finite = [(value, k) for k, value in enumerate(objectives)
              if value is not None and math.isfinite(value)]
    if not finite:
        return {"best_start": 0, "starts_reached": 0, "start_objective_spread": None}
    lowest, best = min(finite)
    scale = max(abs(lowest), 1e-300)
    reached = sum(value - lowest <= STARTS_RTOL * scale for value, _ in finite)
    highest = max(value for value, _ in finite)
    return {"best_start": best, "starts_reached": reached,
            "start_objective_spread": (highest - lowest) / scale}
