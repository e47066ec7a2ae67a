"""The UFM solver: free features and a fixed or learned classifier under the mixup loss.

configuration and problem (:mod:`.problem`) -> :func:`solve` (:mod:`.run`, the driver, with
its shared state in :mod:`.state`) -> a :class:`UFMResult` (:mod:`.results`) and its files.
The methods are :mod:`.newton` (the per-sample Newton feature solver :mod:`.feature_newton`
and the classifier's L-BFGS memory :mod:`.lbfgs`) and :mod:`.gd`; the exact theory that
runs are measured against is :mod:`.reference`, and ``checkpoint.pt`` is :mod:`.checkpoint`.
A solve written into its folder (``ufm solve``, the sweep, the reproduction) is
:func:`run_to_folder` (:mod:`.run_folder`), which first checks the folder and the memory the
solve needs (:mod:`.memory_estimate`).
Mixtures of ``mixup_points`` = m > 2 classes draw their samples in :mod:`.mixture_samples`,
take their loss terms from :mod:`.mixture_loss` and their features from
:mod:`.mixture_newton`; pairs (m = 2) keep :mod:`.fused_loss` and :mod:`.feature_newton`.
"""

from .checkpoint import CHECKPOINT
from .memory_estimate import solve_memory
from .problem import Problem, UFMConfig, build_problem
from .results import UFMResult, load_result
from .run import solve
from .run_folder import run_to_folder

__all__ = [
    "CHECKPOINT", "Problem", "UFMConfig", "UFMResult", "build_problem", "load_result",
    "run_to_folder", "solve", "solve_memory",
]
