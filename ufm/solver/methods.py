"""The solver's methods by name: the choices of ``UFMConfig.method`` and what makes each one.

:data:`METHODS` maps a name to the factory of its method object, written ``"module:attribute"``:
a callable that takes the :class:`~ufm.solver.state.RunState` of a solve and returns an object
with the interface of :class:`~ufm.solver.state.Method`, which the driver (:mod:`.run`) runs.
The configuration (:mod:`.problem`) takes its choices from here, and the methods import the
problem (through the run state), so the factories are named rather than imported, and the
driver imports one when a solve starts (:func:`method_factory`), as :mod:`ufm.cli` does with
its commands. Adding a method is one line of :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

METHODS: dict[str, str] = {
    # the default: "newton_gram" (which with a fixed classifier is "newton"), the fastest to
    # convergence on every learned problem docs/performance.md times so (random and all pairs)
    "auto": "ufm.solver.newton_cg:newton_gram_method",
    # exact per-sample Newton on the features, L-BFGS on the learned classifier
    "newton": "ufm.solver.newton:newton_method",
    # the same features, truncated Newton (Newton-CG, exact reduced Hessian products) on the classifier
    "newton_cg": "ufm.solver.newton_cg:newton_cg_method",
    # the same truncated Newton, preconditioned by the curvature of every Gram entry
    "newton_gram": "ufm.solver.newton_cg:newton_gram_method",
    # heavy-ball gradient descent on all variables
    "gd": "ufm.solver.gd:HeavyBall",
}

# the methods whose features are solved per sample by the Newton feature solver (their
# memory: the coordinates X, :mod:`.memory_estimate`), and those that keep a conjugate-
# gradient path of classifier-sized vectors besides the L-BFGS memory
NEWTON_FEATURES = frozenset({"auto", "newton", "newton_cg", "newton_gram"})
CG_PATH = frozenset({"auto", "newton_cg", "newton_gram"})


def method_factory(name: str) -> Callable[[Any], Any]:
    """The factory registered as ``name`` in :data:`METHODS`, imported now."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(map(repr, METHODS))}")
    module, attribute = METHODS[name].split(":")
    return getattr(import_module(module), attribute)
