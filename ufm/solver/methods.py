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
    # the default: for a learned classifier "newton_gram" up to K = 1000 classes (the faster
    # there), "newton" above (not measured there); a fixed classifier's Newton steps
    "auto": "ufm.solver.newton_cg:auto_method",
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
CG_PATH = frozenset({"newton_cg", "newton_gram"})
# method "auto" takes newton_gram for a learned classifier of up to this many classes, L-BFGS
# ("newton") above (:func:`ufm.solver.newton_cg.auto_method`): the largest size at which the two
# were compared in one run
AUTO_GRAM_MAX_K = 1000


def auto_choice(K: int) -> str:
    """The method ``"auto"`` stands for at K classes: ``"newton_gram"`` up to
    :data:`AUTO_GRAM_MAX_K`, ``"newton"`` above (with a fixed classifier both take the same
    Newton steps on the features)."""
    return "newton_gram" if K <= AUTO_GRAM_MAX_K else "newton"


def keeps_cg_path(method: str, K: int) -> bool:
    """Whether ``method`` at K classes keeps a conjugate-gradient path (a learned classifier)."""
    return (auto_choice(K) if method == "auto" else method) in CG_PATH


def method_factory(name: str) -> Callable[[Any], Any]:
    """The factory registered as ``name`` in :data:`METHODS`, imported now."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(map(repr, METHODS))}")
    module, attribute = METHODS[name].split(":")
    return getattr(import_module(module), attribute)
