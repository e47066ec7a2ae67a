r"""The first features of a Newton solve: each sample starts at the mixture of its class anchors.

A sample of classes :math:`c_1,\dots,c_m` with weights :math:`y_1,\dots,y_m` (a pair:
:math:`c, c'` with :math:`\lambda, 1-\lambda`) starts at :math:`x_s = \sum_k y_k\,a_{c_k}`,
where the anchor :math:`a_c` is the exact optimum of the pure-target problem of class c,
:math:`\min_h \ell(Wh + b; e_c) + \frac{\lambda_H}{2}\|h\|^2` (K small problems, solved
first). For a simplex-ETF classifier the optimal features of a mixture lie in the span of
its classes' classifier rows (Fisher, Meng & Papyan, ICLR 2024, docs/theory.md section 2), as do
these starts; their scale comes from the anchors, where a start at zero has to be found by
damped Newton steps. Measured on the medium learned problem (K = 100, d = 128,
210,000 samples): 9 Newton passes to 1e-3 at the random initial classifier instead of 13,
and 6 instead of 9 near the optimum. The starts are coordinates of the solver's own frame
(any frame linear in h), formed chunk by chunk. Only losses convex in the logits start
here (:mod:`.newton`); the focal loss starts at zero.
"""

from __future__ import annotations

import torch

from .feature_newton import FeatureSolver


def anchor_coordinates(solver: FeatureSolver) -> torch.Tensor:
    """(K, r): the pure-target optimum of every class, in the coordinates of ``solver``."""
    W, b = solver.W, solver.b
    K = W.shape[0]
    classes = torch.arange(K, device=W.device)
    anchors = FeatureSolver.pairs(classes, classes, torch.ones(K, dtype=W.dtype, device=W.device),
                                  solver.loss, solver.lam_H, K, "kernels")
    anchors.set_classifier(W, b)
    anchors.solve(tol=0.0)  # each anchor stops at the rounding level of the dtype
    return anchors.features() @ solver.V


def start_at_anchors(solver: FeatureSolver) -> None:
    """Set ``solver.X`` to the anchor mixture of every sample (the classifier must be set).

    The blocks of rows are filled on the solver's chunk threads, so this start meets no
    per-operation barrier beside a busy process (:mod:`.chunk_threads`).
    """
    anchors = anchor_coordinates(solver)
    X = solver.X
    pairs = solver.pair_columns

    def fill(rows: slice) -> None:
        if pairs is not None:  # 1 - lam as the pair fast path forms it
            lam = pairs.lam[rows, None]
            x = lam * anchors[pairs.c[rows]] + (1 - lam) * anchors[pairs.c_prime[rows]]
        else:
            classes, weights = solver.classes[rows], solver.weights[rows]
            x = weights[:, 0, None] * anchors[classes[:, 0]]
            for k in range(1, classes.shape[1]):
                x += weights[:, k, None] * anchors[classes[:, k]]
        X[rows] = x

    solver.threads.map(fill, solver.row_blocks())
