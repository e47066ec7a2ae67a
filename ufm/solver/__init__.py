"""The UFM solver: free features and a fixed or learned classifier under the mixup loss.

configuration and problem (:mod:`.problem`) -> :func:`solve` (:mod:`.run`, the driver, with
its shared state in :mod:`.state`) -> a :class:`UFMResult` (:mod:`.results`) and its files.
The methods, registered by name in :mod:`.methods`, are :mod:`.newton` (the per-sample Newton
feature solver :mod:`.feature_newton` and the classifier's L-BFGS memory :mod:`.lbfgs`) and
:mod:`.gd`; the exact theory that runs are measured against is :mod:`.reference`, and
``checkpoint.pt`` is :mod:`.checkpoint`. What a solve may change in its process (allocator,
CPU pinning; off unless asked) is :mod:`.execution`. A solve written into its folder
(``ufm solve``, the sweep, the reproduction) is :func:`run_to_folder` (:mod:`.run_folder`),
which first checks the folder and the memory the solve needs (:mod:`.memory_estimate`).
Samples are classes and weights (n, m), pairs being m = 2 (:mod:`.pair_samples`) and
mixtures of ``mixup_points`` = m > 2 classes drawn in :mod:`.mixture_samples`; one feature
solver serves both, in the coordinate frame of :mod:`.frames`. What the solver needs of a
loss (its terms, Hessian structure and curvature) the loss declares (:mod:`ufm.losses.base`).
"""

from .checkpoint import CHECKPOINT
from .execution import CLI_EXECUTION, ExecutionSettings
from .memory_estimate import solve_memory
from .problem import Problem, UFMConfig, build_problem
from .results import UFMResult, load_result
from .run import solve
from .run_folder import run_to_folder

__all__ = [
    "CHECKPOINT", "CLI_EXECUTION", "ExecutionSettings", "Problem", "UFMConfig", "UFMResult",
    "build_problem", "load_result", "run_to_folder", "solve", "solve_memory",
]
