r"""How much memory a solve of a :class:`~.problem.UFMConfig` needs, before it allocates any.

:func:`solve_memory` counts the large arrays of a solve from the configuration alone (nothing
is drawn or allocated), in the dtype of the solve, for n samples (:func:`sample_count`), K
classes, d feature dimensions and r = min(K, d) coordinates (K for a fixed simplex ETF in
logit coordinates, :mod:`.frames`):

* the samples of :class:`~.problem.Problem` (classes and weights, m of each per sample; pairs,
  m = 2, also as contiguous c, c', lam, in the problem and in the feature solver), the per-sample weights under class
  imbalance, and what drawing them takes on the way (all K^2 ordered pairs are enumerated);
* the features: H (n x d) of the result; the Newton method's coordinates X (n x r), three
  copies for a learned classifier (the current ones, the warm start of the next classifier,
  the line search's snapshot) and a float32 copy in mixed precision (counted for every
  sample: the Newton methods hold one row per group of samples with one soft target,
  :mod:`.sample_groups`, which the configuration alone does not tell, so the estimate is
  high by up to that factor where targets repeat); gradient descent's
  momentum, gradient and step temporaries of H (three more n x d);
* the chunk temporaries: logits and Newton vectors, (K + r) values per row, for a chunk of
  :attr:`~.problem.UFMConfig.chunk_rows` rows on each thread at once;
* the classifier: W and its copies (L-BFGS keeps 2 x 20 for a learned one) and the Haar
  rotation of a seeded simplex ETF (three d x d float64 matrices);
* with several random starts (:mod:`.random_starts`), the H and W of the lowest start so far,
  kept while the next one runs.

Small things (the history, the classifier's SVD for small K, d, Python objects) are left out,
so the estimate is the size the run reaches, not a bound on it (``tests/test_run_folder.py``
holds it against the arrays of a real solve). Everything is counted against the memory of
the device that solves (:func:`ufm.memory.check_memory`).
"""

from __future__ import annotations

import math

import torch

from ..devices import resolve_device, resolve_dtype
from ..memory import MemoryEstimate, check_memory
from .methods import NEWTON_FEATURES, keeps_cg_path
from .mixture_samples import lattice_size
from .newton import _LBFGS_MEMORY
from .problem import UFMConfig
from .random_starts import start_count

INDEX_BYTES = 8  # int64 class indices
TEMPORARIES_PER_ROW = 8  # logits, probabilities, gradients and Newton vectors of a chunk row
# conjugate-gradient steps per Newton-CG iteration assumed by the estimate (measured: 2 to
# 28 at K = d = 50 and 100 on random pairs with method "newton_gram", scripts/bench_outer.py)
CG_STEPS = 30
WHAT_TO_LOWER = "lower K, d or the samples (pairs, num_lams, samples_per_pair)"


def sample_count(config: UFMConfig) -> int:
    """n, the samples of the problem that :func:`~.problem.build_problem` would draw."""
    K, m = config.K, config.mixup_points
    if m == 2:
        groups = {"all": K * K, "same": K, "different": K * (K - 1)}.get(
            config.pairs, config.num_pairs)
        grid = len(config.lams) if config.lams is not None else config.num_lams
    else:
        groups = math.comb(K, m) if config.pairs == "all" else config.num_pairs
        grid = lattice_size(m, config.num_lams)
    per_group = config.samples_per_pair if config.alpha is not None else config.samples_per_pair * grid
    return groups * per_group


def coordinate_width(config: UFMConfig) -> int:
    """r, the width of the Newton method's feature coordinates X (n x r)."""
    if config.classifier == "fixed_etf" and config.coordinates == "auto":
        return config.K  # logit coordinates of a tight frame
    return min(config.K, config.d)


def solve_memory(config: UFMConfig, threads: int | None = None) -> MemoryEstimate:
    """Bytes of the large arrays of a solve of ``config`` (module docstring), by part.

    ``threads``: the torch threads that each hold a chunk at once (default: torch's number
    of threads when chunks run in parallel on the CPU, else 1).
    """
    K, d, m = config.K, config.d, config.mixup_points
    n = sample_count(config)
    size = torch.empty((), dtype=resolve_dtype(config.dtype)).element_size()
    r = coordinate_width(config)
    learned = config.learns_classifier
    parts: dict[str, int] = {}
    parts["samples (classes, weights)"] = n * m * (INDEX_BYTES + size)
    if m == 2:  # pairs also read as contiguous c, c', lam: the problem's and the feature solver's
        parts["samples (classes, weights)"] += n * (2 * INDEX_BYTES + size)
        if config.method in NEWTON_FEATURES:
            parts["pair columns of the feature solver"] = n * (2 * INDEX_BYTES + size + 1)
    if config.imbalance_ratio != 1.0 and config.minority_classes > 0:
        parts["sample weights"] = n * size
    parts["drawing the samples"] = _drawing_bytes(config)
    parts["features H (n x d)"] = n * d * size
    if config.method in NEWTON_FEATURES:
        copies = 3 if learned else 1
        # the float32 phase's features, or newton_gram's float32 copy for its Hessian products
        float32_copy = 4 if learned and config.mixed_precision and size == 8 else 0
        parts["feature coordinates (n x r)"] = n * r * (copies * size + float32_copy)
    else:
        parts["momentum, gradient and step of H (3 n x d)"] = 3 * n * d * size
    parts["chunk temporaries"] = _chunk_bytes(config, n, r, size, threads)
    W_copies = 2 * _LBFGS_MEMORY + 8 if learned and config.method in NEWTON_FEATURES else 4
    parts["classifier W and its copies"] = W_copies * K * d * size
    if learned and keeps_cg_path(config.method, K):  # six vectors per step, counted at CG_STEPS steps
        parts["conjugate-gradient path of the classifier"] = 6 * CG_STEPS * K * d * size
    if config.etf_seed is not None and (config.classifier == "fixed_etf" or config.init == "etf"):
        parts["rotation of the simplex ETF (3 d x d)"] = 3 * d * d * 8
    if start_count(config) > 1:  # several random starts keep the lowest so far beside the next
        parts["H and W of the lowest start so far"] = (n + K) * d * size
    return MemoryEstimate(parts)


def _drawing_bytes(config: UFMConfig) -> int:
    """What drawing the samples takes besides the samples: the enumerated pairs or tuples."""
    K, m = config.K, config.mixup_points
    if m == 2:
        enumerated = K * K * (2 * INDEX_BYTES + 1)  # c, c' and the mask of the kept pairs
        return enumerated + (K * K * INDEX_BYTES if config.pairs == "random" else 0)
    if config.pairs == "all":
        return math.comb(K, m) * (100 + m * INDEX_BYTES)  # a list of tuples, then a tensor
    keys = min(config.num_pairs, 1 << 16) * K * 8  # random keys of one drawing chunk
    return keys + config.num_pairs * m * INDEX_BYTES


def _chunk_bytes(config: UFMConfig, n: int, r: int, size: int, threads: int | None) -> int:
    rows = min(config.chunk_rows, n)
    if threads is None:
        on_cpu = resolve_device(config.device).type == "cpu"
        threads = torch.get_num_threads() if on_cpu and config.parallel == "chunks" else 1
    at_once = min(threads, math.ceil(n / rows))
    return at_once * rows * (config.K + r) * size * TEMPORARIES_PER_ROW


def check_solve_memory(config: UFMConfig) -> None:
    """Refuse a solve of ``config`` that would not fit in the memory of its device."""
    check_memory(solve_memory(config), resolve_device(config.device), "the solve", WHAT_TO_LOWER)
