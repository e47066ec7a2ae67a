r"""The mixup-UFM problem: its configuration and the samples it is built from.

:class:`UFMConfig` (validated on construction, loadable from TOML) ->
:func:`build_problem` -> :class:`Problem` (tensors on the configured device). The objective
(docs/theory.md section 1, Fisher, Meng & Papyan, ICLR 2024) is

.. math:: L(H, W, b) = \frac1n\sum_s \ell(Wh_s + b; c_s, c'_s, \lambda_s)
          + \frac{\lambda_H}{2}\frac1n\sum_s\|h_s\|^2 + \frac{\lambda_W}{2}\|W\|_F^2
          + \frac{\lambda_b}{2}\|b\|^2 .

Every sample mixes the classes :math:`c_{s,1..m}` with weights :math:`y_{s,1..m}` on the
simplex and :math:`\ell` takes the soft target :math:`\sum_k y_{s,k} e_{c_{s,k}}`: mixup pairs
are ``mixup_points`` = m = 2 (classes :math:`c, c'`, weights :math:`\lambda, 1-\lambda`,
drawn by :mod:`.pair_samples`), m > 2 the mixtures of Chaudhry et al. (2022), drawn by
:mod:`.mixture_samples`. The problem holds ``classes`` and ``weights`` (n, m) either way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .._checks import check_choice, check_float, check_int
from ..devices import DEVICE_CHOICES, DTYPES, resolve_device, resolve_dtype
from ..etf import simplex_etf
from ..imbalance import PAIRINGS, check_imbalance, class_sizes, is_balanced, pair_weight
from ..losses import LossNames, MixupLoss, get_loss
from .chunk_threads import PARALLEL
from .methods import METHODS
from .mixture_samples import check_mixture_fields, check_mixup_points, sample_mixtures
from .pair_samples import beta_sample, sample_pairs
from .frames import COORDINATES

PAIRS = ("all", "same", "different", "random")
CLASSIFIERS = ("fixed_etf", "fixed", "learned")
INITS = ("random", "etf")


@dataclass
class UFMConfig:
    """Configuration of a mixup-UFM solve. Every field is validated on construction.

    Samples: the chosen ordered class ``pairs`` ("all" K^2 pairs including same-class,
    "same", "different", or "random": ``num_pairs`` drawn without replacement), each with
    ``samples_per_pair`` samples for every value of the lam grid (``lams``, or ``num_lams``
    equally spaced values in [0, 1]) or, when ``alpha`` is set, ``samples_per_pair`` draws of
    lam ~ Beta(alpha, alpha).

    Mixtures of ``mixup_points`` = m classes, 2 <= m <= K (default 2: the pairs above). For
    m > 2 (:mod:`.mixture_samples`): ``pairs`` is "all" (every set of m distinct classes,
    C(K, m) tuples) or "random" (``num_pairs`` tuples of m distinct classes drawn uniformly
    and independently, 1 <= num_pairs <= 10^7); the weights of each tuple are
    ``samples_per_pair`` draws from Dirichlet(alpha 1_m) when ``alpha`` is set, else the
    simplex lattice with ``num_lams`` >= 2 points per edge (all (i_1..i_m)/(num_lams - 1)
    with integer i_k >= 0 summing to num_lams - 1), each point ``samples_per_pair`` times;
    ``lams`` is refused. Every loss takes the target sum_k y_k e_{c_k}: cross-entropy and
    label smoothing against it, the squared error in the form the loss names (soft
    1/2|z - y|^2, or pair sum_k y_k 1/2|z - e_{c_k}|^2, equal up to a constant), focal in pair
    form sum_k y_k FL(z, c_k).

    Classifier: "fixed_etf" (a simplex ETF with row norm ``etf_scale`` and orientation
    ``etf_seed``, never updated), "fixed" (the initial W held fixed: random, or given to
    :func:`ufm.solve`), or "learned" (from ``init`` = "random" with entries of standard
    deviation ``init_scale``/sqrt(d), or "etf"). ``bias`` adds a learned bias.

    Class imbalance: the last ``minority_classes`` = k classes have 1/``imbalance_ratio`` of
    the samples of the others (:mod:`ufm.imbalance`). With ``pairing`` = "sample" (default)
    both partners of a mixture come from the imbalanced training set, so a sample of classes
    (c, c') carries weight n_c n_c' (the product over all m classes of a mixture) in the loss
    and in the feature penalty alike: the expected mixup objective. With "class" only the
    first partner c (the one weighted by lam) comes from it and its partner class is drawn
    uniformly, giving weight n_c (pairs only). The weights have mean 1, so ratio 1 is the
    balanced problem.

    Method: "auto" (default: "newton_gram" for a learned classifier of up to 1000 classes,
    else "newton"), "newton" (exact per-sample Newton for the
    features, L-BFGS on the classifier with the features eliminated), "newton_cg" and
    "newton_gram" (the same features, truncated Newton on the classifier; "newton_gram"
    preconditioned by the curvature of every Gram entry, :mod:`.newton_cg`), or "gd"
    (gradient descent with momentum on all variables, features scaled per sample). With a
    fixed classifier the four Newton methods are one: Newton steps on the features. Stops at
    gradient norm <= ``tol``, ``max_iters`` iterations or ``time_limit`` seconds, whichever
    comes first. The Newton
    feature solves go over the samples in chunks of ``chunk_size`` (default:
    :attr:`chunk_rows`); on a CPU ``parallel`` = "chunks" (default) gives each of torch's
    threads whole chunks in turn, "kernels" lets torch spread every operation over its
    threads (:mod:`.chunk_threads`). With a fixed classifier that is a tight frame (a simplex
    ETF, say) ``coordinates`` = "auto" solves in logit coordinates, O(K) per sample instead
    of O(Kd) (:mod:`.frames`); "row_space" keeps the SVD frame of any classifier. A learned
    classifier in float64 solves its features in float32 until the gradient norm is a
    thousandth of its first value, then in float64 (``mixed_precision``, :mod:`.newton`).

    Parameters
    ----------
    K : int, default 10
        Number of classes, >= 2.
    d : int, default 32
        Feature dimension, >= 1; >= K - 1 when the classifier is a simplex ETF
        (``classifier = "fixed_etf"``, or ``init = "etf"`` with a learned classifier).
    mixup_points : int, default 2
        Classes m per mixed sample, in [2, K]: 2 for mixup pairs, more for m-class mixtures.
    pairs : {"all", "same", "different", "random"}, default "all"
        The ordered class pairs sampled; for m > 2 only "all" (at most 10^7 class tuples)
        or "random".
    num_pairs : int or None, default None
        Pairs (m > 2: class tuples) drawn when ``pairs = "random"``, required there and
        refused otherwise; in [1, K^2] for pairs, [1, 10^7] for m > 2.
    samples_per_pair : int, default 1
        Samples per pair and lam grid value, or draws per pair when ``alpha`` is set; >= 1.
    lams : tuple of float or None, default None
        The lam grid, non-empty, every value in [0, 1]; None: ``num_lams`` equally spaced
        values. Refused with ``alpha`` and for m > 2.
    num_lams : int, default 21
        Points of the equally spaced lam grid in [0, 1], >= 1; for m > 2 points per edge of
        the simplex lattice, >= 2 (at most 10^6 lattice points).
    alpha : float or None, default None
        Beta(alpha, alpha) draws of lam (m > 2: Dirichlet(alpha 1_m) weights) instead of the
        grid, > 0; None: the grid.
    imbalance_ratio : float, default 1.0
        Samples of a majority class per sample of a minority class, >= 1 (1: balanced).
    minority_classes : int, default 0
        Number k of minority classes (the last k), in [0, K - 1].
    pairing : {"sample", "class"}, default "sample"
        Whether both partners of a mixture come from the imbalanced set ("sample") or only
        the first ("class", pairs only).
    loss : {"ce", "mse", "label_smoothing", "focal", "logit_adjusted"}, default "ce"
        The loss, a name of :data:`ufm.LOSSES`; for m > 2 one with an m-class form.
    loss_params : dict, default {}
        Keyword parameters of the loss (``ufm.get_loss(loss, **loss_params)``), checked by it.
    lam_H : float, default 5e-3
        Feature penalty lambda_H, > 0.
    lam_W : float, default 5e-3
        Classifier penalty lambda_W, >= 0 (> 0 for a learned classifier).
    lam_b : float, default 0.0
        Bias penalty lambda_b, >= 0.
    classifier : {"fixed_etf", "fixed", "learned"}, default "fixed_etf"
        A fixed simplex ETF, the initial W held fixed, or a learned W.
    etf_scale : float, default 1.0
        Row norm of the simplex-ETF classifier, > 0.
    etf_seed : int or None, default 0
        Seed of the simplex ETF's orientation, >= 0; None: the canonical orientation.
    init : {"random", "etf"}, default "random"
        Initial W of a learned classifier: random or a simplex ETF.
    init_scale : float, default 1.0
        Random initial W has entries of standard deviation ``init_scale``/sqrt(d); > 0.
    bias : bool, default False
        Whether a bias b is learned.
    method : {"auto", "newton", "newton_cg", "newton_gram", "gd"}, default "auto"
        The solver method (:data:`ufm.solver.methods.METHODS`): per-sample Newton on the
        features with L-BFGS ("newton") or truncated Newton ("newton_cg"; "newton_gram"
        preconditioned by the curvature of every Gram entry) on the classifier, or gradient
        descent with momentum on all variables ("gd"). "auto" takes the one measured faster
        at the problem's size: "newton_gram" up to K = 1000, "newton" above
        (:func:`ufm.solver.newton_cg.auto_method`, docs/performance.md).
    lr : float or None, default None
        Step size of "gd" relative to its curvature bounds, > 0; None: 1.
    momentum : float, default 0.9
        Heavy-ball momentum of "gd", in [0, 1).
    dtype : {"float32", "float64"}, default "float64"
        Floating-point type of the solve.
    device : {"auto", "cpu", "cuda", "mps"}, default "auto"
        Where to solve, optionally with an index ("cuda:1"); "auto": CUDA, then MPS, then CPU.
    seed : int, default 0
        Seed of the samples and the random initial classifier, >= 0.
    starts : int, default 1
        Random starts of a learned classifier (``init = "random"``; > 1 is refused
        otherwise), >= 1: where d is below the rank a minimum can need (K - 1 for a loss
        unchanged by a common logit shift, K otherwise) the problem has several stationary
        points, and the solve keeps the start with the lowest objective; elsewhere it makes
        one (:mod:`.random_starts`).
    tol : float, default 1e-10
        Stop at gradient norm <= ``tol``; > 0.
    max_iters : int, default 1000
        Stop after this many iterations, >= 1.
    time_limit : float or None, default None
        Stop after this many seconds, > 0; None: no limit.
    chunk_size : int or None, default None
        Samples per chunk of the Newton feature solves, >= 1; None: :attr:`chunk_rows`.
    parallel : {"chunks", "kernels"}, default "chunks"
        On a CPU, threads take whole chunks ("chunks") or torch spreads every operation
        ("kernels").
    coordinates : {"auto", "row_space"}, default "auto"
        "auto": logit coordinates for a fixed tight-frame classifier; "row_space": always the
        SVD frame of the classifier.
    mixed_precision : bool, default True
        Whether a learned classifier in float64 solves its features in float32 first;
        ``"newton_gram"``'s Hessian products also run in float32, unless one of them,
        checked at the first trust-region step and after a rejected point, is off from
        float64's by more than a tenth.

    Examples
    --------
    The problem of the paper's theory figures, small: three classes in three dimensions,
    every ordered class pair at lam = 0, 1/2 and 1, a fixed simplex-ETF classifier:

    >>> import ufm
    >>> config = ufm.UFMConfig(K=3, d=3, num_lams=3)
    >>> config.pairs, config.classifier, config.loss, config.lam_H
    ('all', 'fixed_etf', 'ce', 0.005)
    >>> ufm.UFMConfig(K=3, d=1)
    Traceback (most recent call last):
        ...
    ValueError: d must be >= K-1 = 2 for a simplex-ETF classifier, got d=1

    :func:`ufm.solve` solves it.
    """

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "pairs": PAIRS, "loss": LossNames(), "classifier": CLASSIFIERS, "init": INITS,
        "method": tuple(METHODS), "dtype": tuple(DTYPES), "device": DEVICE_CHOICES, "parallel": PARALLEL,
        "pairing": PAIRINGS, "coordinates": COORDINATES,
    }

    K: int = 10
    d: int = 32
    mixup_points: int = 2
    pairs: str = "all"
    num_pairs: int | None = None
    samples_per_pair: int = 1
    lams: tuple[float, ...] | None = None
    num_lams: int = 21
    alpha: float | None = None
    imbalance_ratio: float = 1.0
    minority_classes: int = 0
    pairing: str = "sample"
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    lam_H: float = 5e-3
    lam_W: float = 5e-3
    lam_b: float = 0.0
    classifier: str = "fixed_etf"
    etf_scale: float = 1.0
    etf_seed: int | None = 0
    init: str = "random"
    init_scale: float = 1.0
    bias: bool = False
    method: str = "auto"
    lr: float | None = None
    momentum: float = 0.9
    dtype: str = "float64"
    device: str = "auto"
    seed: int = 0
    starts: int = 1
    tol: float = 1e-10
    max_iters: int = 1000
    time_limit: float | None = None
    chunk_size: int | None = None
    parallel: str = "chunks"
    coordinates: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        self.K = check_int("K", self.K, minimum=2)
        self.d = check_int("d", self.d, minimum=1)
        self.mixup_points = check_mixup_points(self.mixup_points, self.K)
        self.pairs = check_choice("pairs", self.pairs, PAIRS)
        if self.mixup_points == 2:
            if self.pairs == "random":
                if self.num_pairs is None:
                    raise ValueError("num_pairs must be given when pairs = 'random'")
                self.num_pairs = check_int("num_pairs", self.num_pairs, 1, self.K * self.K)
            elif self.num_pairs is not None:
                raise ValueError(f"num_pairs is only used with pairs = 'random', got pairs = {self.pairs!r}")
        self.samples_per_pair = check_int("samples_per_pair", self.samples_per_pair, minimum=1)
        if self.alpha is not None:
            self.alpha = check_float("alpha", self.alpha, 0.0, None, low_open=True)
            if self.lams is not None:
                raise ValueError("give either lams (a grid) or alpha (Beta draws), not both")
        if self.lams is not None:
            self.lams = tuple(check_float("lams", v, 0.0, 1.0) for v in self.lams)
            if not self.lams:
                raise ValueError("lams must not be empty")
        self.num_lams = check_int("num_lams", self.num_lams, minimum=1)
        self.imbalance_ratio, self.minority_classes = check_imbalance(
            self.imbalance_ratio, self.minority_classes, self.K)
        self.pairing = check_choice("pairing", self.pairing, PAIRINGS)
        if self.pairing == "class" and self.mixup_points > 2:
            raise ValueError(
                f"pairing = 'class' weights the first partner of a pair; with mixup_points = "
                f"{self.mixup_points} > 2 use pairing = 'sample'")
        loss = self.make_loss()  # validates the name and the parameters
        if self.mixup_points > 2:
            check_mixture_fields(self)
            if not loss.mixture_form:
                raise ValueError(
                    f"loss {loss.name!r} has no m-class form; with mixup_points = "
                    f"{self.mixup_points} > 2 the loss must be one of "
                    f"{', '.join(repr(name) for name in mixture_losses())}"
                )
        self.lam_H = check_float("lam_H", self.lam_H, 0.0, None, low_open=True)
        self.lam_W = check_float("lam_W", self.lam_W, 0.0, None)
        self.lam_b = check_float("lam_b", self.lam_b, 0.0, None)
        self.classifier = check_choice("classifier", self.classifier, CLASSIFIERS)
        if self.classifier == "learned" and self.lam_W <= 0:
            raise ValueError("lam_W must be > 0 for a learned classifier (otherwise W grows without bound)")
        self.etf_scale = check_float("etf_scale", self.etf_scale, 0.0, None, low_open=True)
        if self.etf_seed is not None:
            self.etf_seed = check_int("etf_seed", self.etf_seed, minimum=0)
        self.init = check_choice("init", self.init, INITS)
        needs_etf = self.classifier == "fixed_etf" or (self.init == "etf" and self.classifier != "fixed")
        if needs_etf and self.d < self.K - 1:
            raise ValueError(
                f"d must be >= K-1 = {self.K - 1} for a simplex-ETF classifier, got d={self.d}"
            )
        self.init_scale = check_float("init_scale", self.init_scale, 0.0, None, low_open=True)
        self.method = check_choice("method", self.method, METHODS)
        if self.lr is not None:
            self.lr = check_float("lr", self.lr, 0.0, None, low_open=True)
        self.momentum = check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        resolve_dtype(self.dtype)
        check_choice("device", str(self.device).split(":")[0], DEVICE_CHOICES)
        self.seed = check_int("seed", self.seed, minimum=0)
        self.starts = check_int("starts", self.starts, minimum=1)
        if self.starts > 1 and (self.classifier != "learned" or self.init != "random"):
            raise ValueError(
                f"starts = {self.starts} > 1 needs a learned classifier with init = 'random' "
                f"(got classifier = {self.classifier!r}, init = {self.init!r}): every start "
                "would be the same")
        self.tol = check_float("tol", self.tol, 0.0, None, low_open=True)
        self.max_iters = check_int("max_iters", self.max_iters, minimum=1)
        if self.time_limit is not None:
            self.time_limit = check_float("time_limit", self.time_limit, 0.0, None, low_open=True)
        if self.chunk_size is not None:
            self.chunk_size = check_int("chunk_size", self.chunk_size, minimum=1)
        self.parallel = check_choice("parallel", self.parallel, PARALLEL)
        self.coordinates = check_choice("coordinates", self.coordinates, COORDINATES)
        if not isinstance(self.mixed_precision, bool):
            raise ValueError(f"mixed_precision must be true or false, got {self.mixed_precision!r}")

    def make_loss(self) -> MixupLoss:
        """The configured loss, bound to the class sizes of the problem (a loss that uses
        the class frequencies, such as logit adjustment, takes them from there)."""
        sizes = class_sizes(self.K, self.imbalance_ratio, self.minority_classes)
        return get_loss(self.loss, **self.loss_params).for_classes(sizes)

    def lam_grid(self) -> torch.Tensor:
        if self.lams is not None:
            return torch.tensor(self.lams, dtype=torch.float64)
        return torch.linspace(0.0, 1.0, self.num_lams, dtype=torch.float64)

    @property
    def chunk_rows(self) -> int:
        """Samples per chunk: ``chunk_size``, or by default 4096 up to K = 256 and about 2^20
        logits per chunk beyond (1048 samples at K = 1000), which keeps a chunk's temporaries
        a few megabytes each."""
        if self.chunk_size is not None:
            return self.chunk_size
        return max(256, min(4096, 2**20 // self.K))

    @property
    def learns_classifier(self) -> bool:
        return self.classifier == "learned"

    @property
    def mixes_pairs(self) -> bool:
        """Whether samples are pairs (``mixup_points`` = 2: c, c', lam) rather than m-class mixtures."""
        return self.mixup_points == 2


def etf_impossible_message(config: UFMConfig) -> str | None:
    """Why the classifier of ``config`` cannot become a simplex ETF, or None if it can.

    A simplex ETF of K classes spans K - 1 dimensions; with ``d < K - 1`` a learned classifier
    (or a fixed random one) can never be one, so its ETF distance stays away from 0.
    """
    if config.d >= config.K - 1 or config.classifier == "fixed_etf":
        return None
    return (
        f"d = {config.d} < K - 1 = {config.K - 1}: a simplex ETF of {config.K} classes needs "
        f"K - 1 dimensions, so the {config.classifier} classifier cannot become one "
        f"(etf_distance_W stays away from 0)"
    )


@dataclass
class Problem:
    """Samples and initial variables of a solve, on ``device`` in ``dtype``.

    Every sample is a row of ``classes`` (n, m) int64 and ``weights`` (n, m) in ``dtype``;
    pairs (m = 2) also read as ``c``, ``c_prime`` and ``lam`` (the first weight).
    ``sample_weight`` (n,) in ``dtype``, mean 1, weighs each sample's loss and feature penalty
    under class imbalance (None when balanced: every weight 1). ``lam_index`` (n,) int64 is,
    for pairs on a lam grid, the position of each sample's lam in ``config.lam_grid()`` (every
    pair holds every grid value, :mod:`.lam_quadrature`); None for Beta draws and m-class
    mixtures.
    """

    config: UFMConfig
    loss: MixupLoss
    classes: torch.Tensor
    weights: torch.Tensor
    W0: torch.Tensor
    b0: torch.Tensor | None
    device: torch.device
    dtype: torch.dtype
    sample_weight: torch.Tensor | None = None
    lam_index: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.classes.shape[0])

    @property
    def K(self) -> int:
        return self.config.K

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def mixes_pairs(self) -> bool:
        """Whether the samples are pairs (m = 2)."""
        return self.classes.shape[1] == 2

    def _pair_column(self, name: str, column: int, of: torch.Tensor) -> torch.Tensor:
        if not self.mixes_pairs:
            raise ValueError(f"{name} exists for pairs only; this problem mixes "
                             f"m = {self.classes.shape[1]} classes (read classes and weights)")
        return of[:, column].contiguous()

    @functools.cached_property
    def c(self) -> torch.Tensor:
        """(n,) the first class of each pair (a contiguous copy, made once)."""
        return self._pair_column("c", 0, self.classes)

    @functools.cached_property
    def c_prime(self) -> torch.Tensor:
        """(n,) the second class of each pair."""
        return self._pair_column("c_prime", 1, self.classes)

    @functools.cached_property
    def lam(self) -> torch.Tensor:
        """(n,) the weight of the first class of each pair."""
        return self._pair_column("lam", 0, self.weights)


def build_problem(config: UFMConfig, W_init: torch.Tensor | None = None,
                  b_init: torch.Tensor | None = None) -> Problem:
    """Draw the samples and the initial classifier for ``config`` (deterministic in its seed).

    ``W_init`` (K, d) replaces the configured initial classifier (it is the fixed W for
    ``classifier = "fixed"``). ``b_init`` (K,) is the initial bias when ``bias`` is set,
    and otherwise a fixed bias that is never updated (a network's own offset, say).
    Random draws happen on the CPU, so they do not depend on the device.
    """
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype)
    generator = torch.Generator().manual_seed(config.seed)
    if not config.mixes_pairs:
        return _mixture_problem(config, W_init, b_init, generator, device, dtype)
    pair_c, pair_cp = sample_pairs(config, generator)
    lam_index = None
    if config.alpha is None:
        grid = config.lam_grid()
        per_pair = grid.repeat_interleave(config.samples_per_pair)
        c = pair_c.repeat_interleave(per_pair.numel())
        c_prime = pair_cp.repeat_interleave(per_pair.numel())
        lam = per_pair.repeat(pair_c.numel())
        lam_index = torch.arange(grid.numel()).repeat_interleave(config.samples_per_pair).repeat(
            pair_c.numel()).to(device)
    else:
        c = pair_c.repeat_interleave(config.samples_per_pair)
        c_prime = pair_cp.repeat_interleave(config.samples_per_pair)
        beta = torch.distributions.Beta(
            torch.tensor(config.alpha, dtype=torch.float64),
            torch.tensor(config.alpha, dtype=torch.float64),
        )
        lam = beta_sample(beta, c.numel(), generator)

    W0 = _initial_classifier(config, generator) if W_init is None else _checked_W(W_init, config)
    b0 = _initial_bias(config, b_init)
    lam = lam.to(dtype)
    return Problem(
        config=config,
        loss=config.make_loss(),
        classes=torch.stack([c, c_prime], 1).to(device),
        weights=torch.stack([lam, 1 - lam], 1).to(device),
        W0=W0.to(device=device, dtype=dtype),
        b0=None if b0 is None else b0.to(device=device, dtype=dtype),
        device=device,
        dtype=dtype,
        sample_weight=_sample_weight(config, device, dtype, c, c_prime),
        lam_index=lam_index,
    )


def _mixture_problem(config: UFMConfig, W_init, b_init, generator, device, dtype) -> Problem:
    """The problem of m-class mixtures (m > 2): samples first, then W, as for pairs."""
    classes, weights = sample_mixtures(config, generator)
    W0 = _initial_classifier(config, generator) if W_init is None else _checked_W(W_init, config)
    b0 = _initial_bias(config, b_init)
    return Problem(
        config=config,
        loss=config.make_loss(),
        classes=classes.to(device),
        weights=weights.to(device=device, dtype=dtype),
        W0=W0.to(device=device, dtype=dtype),
        b0=None if b0 is None else b0.to(device=device, dtype=dtype),
        device=device,
        dtype=dtype,
        sample_weight=_sample_weight(config, device, dtype, classes),
    )


def _sample_weight(config: UFMConfig, device, dtype, classes, partners=None) -> torch.Tensor | None:
    """The imbalance weight of each sample (:func:`ufm.imbalance.pair_weight`), None if balanced.

    ``classes`` are (n,) or (n, m); ``partners`` (n,) the c' of pairs, which weigh in with
    ``pairing = "sample"`` only.
    """
    if is_balanced(config.imbalance_ratio, config.minority_classes):
        return None
    if partners is not None and config.pairing == "sample":
        classes = torch.stack([classes, partners], dim=1)
    sizes = class_sizes(config.K, config.imbalance_ratio, config.minority_classes)
    return pair_weight(sizes, classes).to(device=device, dtype=dtype)


def _initial_classifier(config: UFMConfig, generator: torch.Generator) -> torch.Tensor:
    if config.classifier == "fixed_etf" or config.init == "etf":
        return simplex_etf(config.K, config.d, config.etf_scale, config.etf_seed)
    std = config.init_scale / math.sqrt(config.d)
    return std * torch.randn(config.K, config.d, generator=generator, dtype=torch.float64)


def _initial_bias(config: UFMConfig, b_init) -> torch.Tensor | None:
    """``b_init`` checked (K,) and finite, else zeros for a learned bias, else None."""
    if b_init is None:
        return torch.zeros(config.K, dtype=torch.float64) if config.bias else None
    b = torch.as_tensor(b_init).detach().to(torch.float64).cpu()
    if b.shape != (config.K,):
        raise ValueError(f"b_init must have shape (K,) = ({config.K},), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b_init contains non-finite entries")
    return b.clone()


def _checked_W(W: torch.Tensor, config: UFMConfig) -> torch.Tensor:
    W = torch.as_tensor(W).detach().to(torch.float64).cpu()
    if W.shape != (config.K, config.d):
        raise ValueError(f"W_init must have shape (K, d) = {(config.K, config.d)}, got {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W_init contains non-finite entries")
    return W.clone()


def mixture_losses() -> list[str]:
    """The registered losses that have an m-class form."""
    from ..losses import LOSSES

    return [name for name, cls in sorted(LOSSES.items()) if cls.mixture_form]
