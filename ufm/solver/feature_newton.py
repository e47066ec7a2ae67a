r"""Exact per-sample feature solves for a fixed classifier: damped Newton with structured PCG.

One solver for every sample layout: a sample mixes the classes of a row of ``classes`` (n, m)
with the weights of the same row of ``weights`` (n, m); mixup pairs are m = 2 (classes
:math:`c, c'`, weights :math:`\lambda, 1-\lambda`), and m > 2 are the mixtures of m classes
(Chaudhry et al., 2022). The coordinate frame is a strategy object (:mod:`.frames`): the SVD
frame of any classifier, or the logit coordinates of a tight frame. Fast paths stay as
internal branches: pairs take the loss's fused pair terms and the diagonal plus rank-3
preconditioner of :mod:`.pair_preconditioner` (3x3 adjugates), m > 2 the rank-(m+1) one of
:mod:`.mixture_preconditioner`; the logit frame inverts the softmax Newton system exactly.

For fixed :math:`(W, b)` the UFM objective separates into one strictly convex problem per
sample, :math:`\phi_s(h) = \ell(Wh + b; c_s, c'_s, \lambda_s) + \frac{\lambda_H}{2}\|h\|^2`.
Its minimiser lies in the row space of :math:`W` (stationarity gives
:math:`h = -W^\top\nabla\ell/\lambda_H`), so with the thin SVD :math:`W = U\Sigma V^\top`
(rank :math:`r`) we write :math:`h = Vx` and solve in :math:`x\in\mathbb{R}^r` with
:math:`A = U\Sigma`:

.. math:: \phi(x) = \ell(Ax + b) + \tfrac{\lambda_H}{2}\|x\|^2, \qquad
          \nabla\phi = A^\top g + \lambda_H x, \qquad
          \nabla^2\phi = A^\top \nabla^2\ell\, A + \lambda_H I .

Newton directions come from preconditioned conjugate gradients. For losses of the softmax
family (:math:`\nabla^2\ell = \operatorname{diag}(p) - pp^\top`) the preconditioner replaces
the probabilities of the classes other than :math:`c, c'` by their :math:`p`-weighted mean
:math:`\bar p = \sum_o p_o^2/\sum_o p_o` (which keeps it positive semi-definite), giving

.. math:: M_0 = \bar p\,\Sigma^2 + \lambda_H I + (p_c - \bar p)\,a_c a_c^\top
          + (p_{c'} - \bar p)\,a_{c'}a_{c'}^\top - (A^\top p)(A^\top p)^\top,

a diagonal plus rank-3 matrix inverted by the Woodbury identity with one 3x3 solve per
sample. For a simplex-ETF classifier all :math:`p_o` are equal, :math:`M_0` is the exact
Hessian and each Newton step needs a single CG iteration; near one, a bound on the residual
of the preconditioned step lets it stand without any Hessian product (:mod:`.pcg`). For
the squared error the Hessian :math:`\Sigma^2 + \lambda_H I` is diagonal. A per-sample
backtracking line search makes the iteration globally convergent; once the predicted
decrease is below rounding level full Newton steps are taken. Samples are processed in
chunks and converged samples are skipped, so no (n, K, K) or (n, d, d) tensor is ever
formed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..losses import MixupLoss
from .chunk_threads import ChunkThreads, row_blocks
from .feature_totals import InnerStats, Totals
from .frames import RowSpaceFrame, frame_for, tight_frame
from .gram_preconditioner import GramSums
from .mixture_preconditioner import mixture_preconditioner
from .pair_preconditioner import diagonal_preconditioner, pair_preconditioner
from .pcg import Preconditioner, newton_direction

_ARMIJO = 1e-4
_MAX_BACKTRACK = 40
# Newton systems are solved to no smaller a residual than this fraction of the tolerance
_RESIDUAL_FLOOR = 0.1


@dataclass(slots=True)
class _LineSearchSamples:
    """The samples of a per-sample line search, one row each (see :meth:`FeatureSolver._line_search`).

    ``t`` is each sample's step length (1, then halved until its test passes, in place), the
    trial point is ``x - t direction`` with logits ``z - t z_direction``; ``f`` is the
    objective at x, ``decrease`` the predicted decrease at t = 1, and ``rounding`` the level
    below which a predicted decrease cannot be told from rounding.
    """

    t: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    direction: torch.Tensor
    z_direction: torch.Tensor
    ids: torch.Tensor
    f: torch.Tensor
    decrease: torch.Tensor
    rounding: torch.Tensor

    def subset(self, rows: torch.Tensor) -> _LineSearchSamples:
        """The samples at positions ``rows`` (copies: the step lengths of ``self`` stay its own)."""
        return _LineSearchSamples(self.t[rows], self.x[rows], self.z[rows], self.direction[rows],
                                  self.z_direction[rows], self.ids[rows], self.f[rows],
                                  self.decrease[rows], self.rounding[rows])


@dataclass(frozen=True)
class PairColumns:
    """The classes ``c``, ``c_prime`` and the weight ``lam`` of class c of pair samples
    (m = 2), contiguous, and which pairs are of the same class: what the pair fast path reads."""

    c: torch.Tensor
    c_prime: torch.Tensor
    lam: torch.Tensor
    same: torch.Tensor

    @classmethod
    def of(cls, classes: torch.Tensor, weights: torch.Tensor) -> PairColumns:
        c, c_prime = classes[:, 0].contiguous(), classes[:, 1].contiguous()
        return cls(c, c_prime, weights[:, 0].contiguous(), c == c_prime)


class FeatureSolver:
    r"""Holds the features of all samples in the coordinates of the current classifier.

    ``X`` (n, r) are the coordinates in the solver's frame; :meth:`features` returns
    ``H = X V^T`` (n, d). :meth:`set_classifier` changes ``W`` (and ``b``) and carries the
    features over as a warm start; :meth:`solve` minimises every per-sample objective.

    Parameters
    ----------
    classes, weights : (n, m) classes and weights of every sample (m = 2: pairs, where the
        first weight is lam; use :meth:`pairs` to build from ``c``, ``c_prime``, ``lam``).
    loss, lam_H : the per-sample objective :math:`\ell(Wh + b) + \frac{\lambda_H}2\|h\|^2`.
    chunk_size, parallel : samples per chunk, and how chunks share the CPU threads
        (:mod:`.chunk_threads`).
    sample_weight : (n,) weights of each sample's objective and classifier gradients (class
        imbalance, or the total weight of a group of samples with one target,
        :mod:`.sample_groups`); None for all 1.
    sample_count : (n,) how many samples each one stands for (a group's count), which the
        sums of squared feature gradients count it; None for 1 each.
    grad_W_needed : False skips the sums :math:`\sum_s g_s h_s^\top` that only a learned W needs.
    pin_cpus : keep the chunk threads on one CPU each (:mod:`.chunk_threads`, with ``parallel``).
    logit_coordinates : solve in the logit coordinates of a classifier that is a tight frame
        (:class:`~.frames.LogitFrame`); any other classifier keeps its SVD frame.
    coordinates : (X, V), features to start from: coordinates X (n, r) in the frame V (d, r)
        of another solver, which the first :meth:`set_classifier` carries over.
    """

    def __init__(self, classes: torch.Tensor, weights: torch.Tensor, loss: MixupLoss,
                 lam_H: float, chunk_size: int = 4096, parallel: str = "chunks", *,
                 sample_weight: torch.Tensor | None = None,
                 sample_count: torch.Tensor | None = None, grad_W_needed: bool = True,
                 pin_cpus: bool = False, logit_coordinates: bool = False,
                 coordinates: tuple[torch.Tensor, torch.Tensor] | None = None):
        if classes.ndim != 2 or classes.shape != weights.shape or classes.shape[1] < 2:
            raise ValueError(
                f"classes and weights must both have shape (n, m) with m >= 2, got "
                f"{tuple(classes.shape)} and {tuple(weights.shape)}"
            )
        self.classes, self.weights = classes, weights
        self.n, self.m = int(classes.shape[0]), int(classes.shape[1])
        self.pair_columns = PairColumns.of(classes, weights) if self.m == 2 else None
        self.loss = loss
        self.lam_H = float(lam_H)
        self.chunk_size = int(chunk_size)
        self.threads = ChunkThreads(classes.device, parallel, pin_cpus)
        self.sample_weight = sample_weight
        self.sample_count = sample_count
        self.grad_W_needed = bool(grad_W_needed)
        self.logit_coordinates = bool(logit_coordinates)
        self._softmax = loss.hessian == "softmax"
        self.W = self.b = self.frame = None
        self.X, self._carried_V = (None, None) if coordinates is None else coordinates

    @classmethod
    def pairs(cls, c, c_prime, lam, loss: MixupLoss, lam_H: float, *args, **options) -> FeatureSolver:
        """The solver of mixup pairs (c, c', lam): classes (c, c'), weights (lam, 1 - lam)."""
        return cls(torch.stack([c, c_prime], 1), torch.stack([lam, 1 - lam], 1), loss, lam_H,
                   *args, **options)

    # -- classifier ------------------------------------------------------------------------

    @property
    def samples(self) -> float:
        """How many samples the rows stand for: n, or the sum of ``sample_count``."""
        return float(self.n if self.sample_count is None else self.sample_count.sum())

    @property
    def V(self) -> torch.Tensor:
        """(d, r): features are ``H = X V^T``."""
        return self.frame.V

    def set_classifier(self, W: torch.Tensor, b: torch.Tensor | None, H: torch.Tensor | None = None):
        """Factor ``W`` and express the warm start (``H`` if given, else the old features)."""
        frame = frame_for(W, self.logit_coordinates)
        X = self._warm_start(frame.V, H)
        self.W, self.b, self.frame, self.X, self._carried_V = W, b, frame, X, None

    def _warm_start(self, V: torch.Tensor, H: torch.Tensor | None) -> torch.Tensor:
        """Coordinates in the new frame V (h = x V^T): of ``H`` if given, else of the current
        features, else zeros."""
        if H is not None:
            return self._rows_times(H, V)
        if self.X is not None:
            old_V = self._carried_V if self.frame is None else self.frame.V
            return self._rows_times(self.X, old_V.T @ V)
        return torch.zeros(self.n, V.shape[1], dtype=V.dtype, device=V.device)

    def features(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``H = X V^T`` (n, d), or its rows ``rows`` (an index that may repeat rows: a
        group's features for each of its samples, :mod:`.sample_groups`)."""
        return self._rows_times(self.X, self.frame.V.T, rows)

    def _rows_times(self, M: torch.Tensor, R: torch.Tensor,
                    rows: torch.Tensor | None = None) -> torch.Tensor:
        """``M @ R`` (or ``M[rows] @ R``, gathered block by block, never whole), block by block
        on the chunk threads: beside a busy process a product this large would otherwise meet
        torch's per-operation barriers."""
        n = M.shape[0] if rows is None else rows.shape[0]
        out = torch.empty(n, R.shape[1], dtype=R.dtype, device=R.device)

        def block(part):
            torch.matmul(M[part] if rows is None else M[rows[part]], R, out=out[part])

        self.threads.map(block, row_blocks(n, self.chunk_size))
        return out

    def snapshot(self) -> tuple:
        """Everything :meth:`restore` needs to return to this classifier and these features."""
        return (self.X.clone(), self.W, self.b, self.frame)

    def restore(self, snapshot: tuple) -> None:
        X, self.W, self.b, self.frame = snapshot
        self.X = X.clone()

    def in_dtype(self, dtype: torch.dtype) -> FeatureSolver:
        """This solver, its classifier, frame and features rounded to ``dtype`` (a copy that
        shares the samples and the chunk threads): where only a few digits are asked of a
        pass, as of Newton-CG's Hessian products, float32 halves the memory traffic and
        speeds the products up (:mod:`.newton_cg`)."""
        if dtype == self.X.dtype:
            return self
        low = copy.copy(self)
        low.weights = self.weights.to(dtype)
        low.pair_columns = None if self.m != 2 else PairColumns.of(self.classes, low.weights)
        low.sample_weight = None if self.sample_weight is None else self.sample_weight.to(dtype)
        low.W = self.W.to(dtype)
        low.b = None if self.b is None else self.b.to(dtype)
        low.frame = self.frame.to(dtype)
        low.X = torch.empty(self.X.shape, dtype=dtype, device=self.X.device)
        self.threads.map(lambda rows: low.X[rows].copy_(self.X[rows]), self.row_blocks())
        return low

    def subset(self, rows: torch.Tensor, counts: torch.Tensor | None = None,
               weight: torch.Tensor | None = None) -> FeatureSolver:
        """This solver restricted to the samples ``rows`` (a copy of their features that
        shares the classifier, its frame and the chunk threads), for Newton-CG's Hessian
        products on a subsample of the samples (:mod:`.newton_cg`); it is not meant to
        solve, whose per-sample flags it does not restrict. ``counts`` (float64), where
        given, says how many samples a row stands for in the subsample (a fraction too,
        under a quadrature weight, :mod:`.lam_quadrature`), and ``weight`` (then needed)
        their total weight."""
        part = copy.copy(self)
        part.classes, part.weights = self.classes[rows], self.weights[rows]
        part.n = int(rows.numel())
        part.pair_columns = None if self.m != 2 else PairColumns.of(part.classes, part.weights)
        part.sample_weight = None if self.sample_weight is None else self.sample_weight[rows]
        part.sample_count = None if self.sample_count is None else self.sample_count[rows]
        if counts is not None:
            part.sample_weight, part.sample_count = weight.to(self.X.dtype), counts
        part.X = self.X[rows]
        return part

    def theory_frame(self):
        """The coordinates X and the frame the theory reference measures them in
        (:mod:`.reference`): ``A``, or for pairs in centred logit coordinates a
        :class:`~.frames.CentredFrame`."""
        return self.X, (self.frame.theory_frame() if self.m == 2 else self.frame.A)

    def state_dict(self) -> dict:
        return {"X": self.X, "W": self.W, "b": self.b, "frame": self.frame.key}

    def load_state_dict(self, state: dict) -> None:
        """Restore; coordinates saved in the SVD frame (no ``"frame"``: a checkpoint of an
        older version, or a run without logit coordinates) are carried over to the logit
        frame through the features when this solver uses one."""
        W, b = state["W"], state["b"]
        if state.get("frame") is None and self.logit_coordinates and tight_frame(W) is not None:
            self.W, self.b, self.frame, self.X = W, b, RowSpaceFrame(W), state["X"]
            H = self.features()
            self.X = None
            self.set_classifier(W, b, H)
            return
        self.set_classifier(W, b)
        self.X = state["X"]

    # -- per-sample pieces -------------------------------------------------------------------

    def _to_logits(self, v):
        """:math:`Av` per sample (rows of ``v``): coordinates to logits, without the bias."""
        return self.frame.to_logits(v)

    def _from_logits(self, g):
        r""":math:`A^\top g` per sample: logit gradients to coordinates."""
        return self.frame.from_logits(g, self.loss.shift_invariant)

    def _logits(self, x):
        z = self._to_logits(x)
        return z if self.b is None else z + self.b

    def _measure(self, idx):
        """Features, logits, loss values, probabilities, logit and feature gradients at ``idx``."""
        x = self.X[idx]
        z = self._logits(x)
        value, p, g_z = self._terms(z, idx)
        return x, z, value, p, g_z, torch.add(self._from_logits(g_z), x, alpha=self.lam_H)

    def _chunks(self):
        for rows in self.row_blocks():
            yield torch.arange(rows.start, rows.stop, device=self.X.device)

    def row_blocks(self) -> list[slice]:
        """The chunks as row slices, for work that needs no gathers."""
        return row_blocks(self.n, self.chunk_size)

    def _terms(self, z, idx, need_grad=True):
        pairs = self.pair_columns
        if pairs is not None:
            return self.loss.pair_terms(z, pairs.c[idx], pairs.c_prime[idx], pairs.lam[idx], need_grad)
        return self.loss.mixture_terms(z, self.classes[idx], self.weights[idx], need_grad)

    def _hessian_vector(self, z, p, v, idx, Av=None):
        r""":math:`\nabla^2\phi\,v = A^\top\nabla^2\ell\,(Av) + \lambda_H v` per sample;
        ``Av`` the logits of ``v`` if known."""
        Av = self._to_logits(v) if Av is None else Av
        return self._from_logits(self._logit_hessian(z, p, Av, idx)).add_(v, alpha=self.lam_H)

    def _logit_hessian(self, z, p, u, idx):
        r""":math:`\nabla^2\ell\,u` per sample: the loss's Hessian in the logits ``z`` (with
        probabilities ``p`` for the softmax family) applied to the logit vectors ``u``."""
        if self._softmax:
            pu = p * u
            return pu.addcmul_(p, pu.sum(-1, keepdim=True), value=-1.0)
        if self.loss.hessian == "identity":
            return u
        if self.pair_columns is not None:
            pairs = self.pair_columns
            return self.loss.hvp(z, pairs.c[idx], pairs.c_prime[idx], pairs.lam[idx], u)
        return self.loss.mixture_hvp(z, self.classes[idx], self.weights[idx], u)

    def _preconditioner(self, p, idx, loss_frame=None) -> Preconditioner:
        """M_0^{-1}, whether it is exact, and its deviation: the exact Sherman-Morrison inverse
        of the logit frame for the softmax family, else the model of the loss's Hessian
        (:mod:`.pair_preconditioner`, :mod:`.mixture_preconditioner`)."""
        if self._softmax:
            exact = self.frame.softmax_preconditioner(p, self.lam_H)
            if exact is not None:
                return exact
        if self.loss.hessian_model == "identity":
            return diagonal_preconditioner(self.loss, self.frame.sigma2, self.lam_H)
        if self.pair_columns is not None:
            pairs = self.pair_columns
            return pair_preconditioner(self.frame, self.loss, self.lam_H, p, pairs.c[idx],
                                       pairs.c_prime[idx], pairs.same[idx], pairs.lam[idx], loss_frame)
        return mixture_preconditioner(self.frame, self.loss, self.lam_H, p, self.classes[idx],
                                      self.weights[idx], loss_frame)

    def _uses_loss_frame(self) -> bool:
        """Whether :meth:`_preconditioner` takes ``loss_frame`` (it saves it a product): the
        softmax family in the SVD frame."""
        return self._softmax and isinstance(self.frame, RowSpaceFrame)

    def _newton_direction(self, z, p, grad, idx, forcing, loss_frame=None, floor=0.0):
        """(direction, its logits or None, CG iterations) with residual at most
        max(forcing |grad|, floor) per sample."""
        preconditioner, hessian_vector = self._newton_system(z, p, idx, loss_frame)
        return newton_direction(
            preconditioner, hessian_vector, self._to_logits, self.frame.sigma2, grad,
            (forcing * grad.norm(dim=-1)).clamp_min(floor),
            lambda rows: self._newton_system(z, p, idx, loss_frame, rows, preconditioner))

    def _newton_system(self, z, p, idx, loss_frame, rows=None, formed=None):
        """(preconditioner, Hessian product) of the Newton systems of the samples ``idx`` at
        logits ``z``, or of the rows ``rows`` of them alone (for CG to drop finished rows),
        whose preconditioner is then ``formed``'s (that of all of them) restricted to them,
        where given, rather than formed again."""
        if rows is not None:
            z, p, idx = z[rows], p[rows], idx[rows]
            loss_frame = None if loss_frame is None else loss_frame[rows]
        preconditioner = (self._preconditioner(p, idx, loss_frame) if formed is None or rows is None
                          else formed.restricted(rows))
        return preconditioner, lambda v, Av=None: self._hessian_vector(z, p, v, idx, Av)

    def _new_totals(self) -> Totals:
        K, r = self.frame.A.shape
        return Totals(K, r, self.X.dtype, self.X.device, self.lam_H, self.grad_W_needed)

    def _combine(self, parts: list[Totals]) -> Totals:
        return Totals.combine(self._new_totals(), parts)

    # -- the solve -------------------------------------------------------------------------

    def solve(self, tol: float, max_newton: int = 100) -> InnerStats:
        """Minimise every per-sample objective until |grad phi_s| <= tol (or it stalls).

        The statistics are accumulated as samples finish, each at its final state, so no
        separate evaluation pass is needed.
        """
        parts: list[Totals] = []
        active = torch.ones(self.n, dtype=torch.bool, device=self.X.device)
        self._finish = torch.zeros_like(active)
        self._rounding = torch.zeros_like(active)
        newton = cg_total = passes = visits = 0
        for newton in range(1, max_newton + 1):
            idx_all = torch.nonzero(active).squeeze(1)
            if idx_all.numel() == 0:
                break
            passes += 1
            visits += idx_all.numel()
            chunks = [idx_all[start : start + self.chunk_size]
                      for start in range(0, idx_all.numel(), self.chunk_size)]
            for idx, (still, cg, part) in zip(chunks, self._map_newton(chunks, tol, False)):
                active[idx] = still
                cg_total += cg
                parts.append(part)
        leftover = torch.nonzero(active).squeeze(1)
        if leftover.numel():
            parts.append(self._accumulate(leftover))
        return self._combine(parts).stats(newton, cg_total, self.frame.V, passes, visits)

    def newton_pass(self, tol: float) -> InnerStats:
        """One Newton step on every sample with |grad phi_s| > tol.

        The returned statistics describe the features *before* the step.
        """
        self._finish = torch.zeros(self.n, dtype=torch.bool, device=self.X.device)
        self._rounding = torch.zeros_like(self._finish)
        results = self._map_newton(list(self._chunks()), tol, True)
        cg_total = sum(cg for _, cg, _ in results)
        return self._combine([part for _, _, part in results]).stats(1, cg_total, self.frame.V, 1, self.n)

    def evaluate(self) -> InnerStats:
        """Objective, classifier gradients and feature-gradient norms at the current X."""
        return self._combine(self.threads.map(self._accumulate, self._chunks())).stats(
            0, 0, self.frame.V, 1, self.n)

    def _map_newton(self, chunks, tol, before_step):
        """(still to do, CG iterations, totals) of one Newton step on each chunk, in order."""
        def step(idx):
            part = self._new_totals()
            todo, cg = self._newton_chunk(idx, tol, part, before_step)
            return todo, cg, part

        return self.threads.map(step, chunks)

    def _accumulate(self, idx):
        x, _, value, _, g_z, grad = self._measure(idx)
        part = self._new_totals()
        part.add(value, g_z, x, grad, *self._factors(idx))
        return part

    def _weight(self, idx):
        return None if self.sample_weight is None else self.sample_weight[idx]

    def _factors(self, idx):
        """(weight, count) of the samples ``idx`` for :meth:`Totals.add`, each None if all 1."""
        return self._weight(idx), None if self.sample_count is None else self.sample_count[idx]

    def _line_search(self, x, z, direction, z_direction, ids, f, decrease, rounding, measure=False):
        """Backtracking per sample: x - t direction with the first t = 1, 1/2, ... that passes.

        The Armijo test (or a predicted decrease below rounding level) is made on all samples
        at t = 1, then only on those still pending, so a few hard samples do not make the
        whole chunk evaluate its objective again. Returns (new x, accepted per sample, full),
        with ``full`` None or, when ``measure``, (taken at t = 1 per sample, loss values,
        logit gradients there) from the loss terms of the full step.
        """
        samples = _LineSearchSamples(torch.ones_like(f), x, z, direction, z_direction, ids, f,
                                     decrease, rounding)
        new_x = x
        accepted = torch.zeros_like(f, dtype=torch.bool)
        pending = None  # every sample of the chunk
        full = None
        for _ in range(_MAX_BACKTRACK):
            if pending is None:  # the full step first
                tried = samples
                trial, z_trial = tried.x - tried.direction, tried.z - tried.z_direction
            else:
                tried = samples.subset(pending)
                t = tried.t[:, None]
                trial, z_trial = tried.x - t * tried.direction, tried.z - t * tried.z_direction
            # the gradient terms only at the full step, where they may confirm convergence
            value, _, g_z = self._terms(z_trial, tried.ids, need_grad=measure and pending is None)
            f_trial = value + 0.5 * self.lam_H * torch.linalg.vecdot(trial, trial)
            armijo = f_trial <= tried.f - _ARMIJO * tried.t * tried.decrease
            ok = torch.isfinite(f_trial) & (armijo | (tried.decrease <= tried.rounding))
            if pending is None:
                new_x = torch.where(ok[:, None], trial, x)
                accepted = ok.clone()  # ok stays what the full step did (``full``)
                if measure:
                    full = (ok, value, g_z)
                pending = torch.nonzero(~ok).squeeze(1)
            else:
                good = pending[ok]
                new_x[good] = trial[ok]
                accepted[good] = True
                pending = pending[~ok]
            if pending.numel() == 0:
                break
            samples.t[pending] = 0.5 * samples.t[pending]
        return new_x, accepted, full

    def _confirm(self, todo, ids, x, full, tol, totals):
        """``todo`` less the samples whose full step ended within ``tol``, which join ``totals``.

        Their loss terms at the new point came with the line search, so one product gives
        their gradients, and the pass that would only have measured them is saved.
        """
        at_full, value, g_z = full
        grad = torch.add(self._from_logits(g_z), x, alpha=self.lam_H)
        done = at_full & (grad.norm(dim=-1) <= tol)
        if not bool(done.any()):
            return todo
        totals.add(value[done], g_z[done], x[done], grad[done], *self._factors(ids[done]))
        still = todo.clone()
        still[torch.nonzero(todo).squeeze(1)[done]] = False
        return still

    def _newton_chunk(self, idx, tol, totals, before_step):
        x, z, value, p, g_z, grad = self._measure(idx)
        gnorm = grad.norm(dim=-1)
        todo = (gnorm > tol) & ~self._finish[idx]
        if before_step:
            totals.add(value, g_z, x, grad, *self._factors(idx))
        elif not bool(todo.all()):
            done = ~todo
            totals.add(value[done], g_z[done], x[done], grad[done], *self._factors(idx[done]))
        if not bool(todo.any()):
            return todo, 0
        if bool(todo.all()):  # no copies when every sample in the chunk steps
            ids, x_s, z_s, grad_s, p_s, value_s, g_s = idx, x, z, grad, p, value, gnorm
        else:
            sub = torch.nonzero(todo).squeeze(1)
            ids, x_s, z_s, grad_s, value_s, g_s = idx[sub], x[sub], z[sub], grad[sub], value[sub], gnorm[sub]
            p_s = p[sub] if p is not None else None
        if p_s is None:
            p_s = torch.softmax(z_s, dim=-1)
        f_s = value_s + 0.5 * self.lam_H * torch.linalg.vecdot(x_s, x_s)
        # forcing term min(0.1, |grad|): inexact early, exact (superlinear) near the optimum
        forcing = torch.clamp(g_s, max=0.1)
        # a sample need only reach the tolerance: a residual below a tenth of it buys nothing
        floor = _RESIDUAL_FLOOR * tol
        # A^T grad ell, from the gradient at hand (for the preconditioners that use it)
        loss_frame = torch.add(grad_s, x_s, alpha=-self.lam_H) if self._uses_loss_frame() else None
        direction, z_direction, cg = self._newton_direction(z_s, p_s, grad_s, ids, forcing,
                                                            loss_frame, floor)
        if z_direction is None:
            z_direction = self._to_logits(direction)  # logits move linearly along the step
        decrease = torch.linalg.vecdot(grad_s, direction)
        rounding = 64 * torch.finfo(x.dtype).eps * (f_s.abs() + 1)
        x_s, accepted, full = self._line_search(x_s, z_s, direction, z_direction, ids, f_s,
                                                decrease, rounding, measure=not before_step)
        self.X[ids] = x_s
        # A sample makes one more (evaluation-only) visit when no step was found, or after
        # two consecutive full steps below rounding level (its gradient is at its floor).
        at_rounding = decrease <= rounding
        totals.at_rounding = totals.at_rounding and bool(at_rounding.all())
        self._finish[ids] = ~accepted | (decrease <= 0) | (at_rounding & self._rounding[ids])
        self._rounding[ids] = at_rounding
        if full is not None:
            todo = self._confirm(todo, ids, x_s, full, tol, totals)
        return todo, cg

    # -- the reduced Hessian ------------------------------------------------------------------

    def newton_systems(self, z, p, g_z, rhs, idx, rtol: float = 1e-12):
        r"""(:math:`M_s^{-1}r_s` per row, CG iterations): the per-sample Newton systems
        :math:`M_s = A^\top\nabla^2\ell_s A + \lambda_H I` at logits ``z`` (probabilities
        ``p``, logit gradients ``g_z``) solved for the rows of ``rhs`` to the residual
        ``rtol`` :math:`|r_s|`, by the preconditioned CG of :func:`.pcg.newton_direction`
        with the preconditioner of the feature solve; rows that CG leaves above it (its
        iteration cap) are refined on their true residual, up to five times. In float32 CG
        aims at half the residual asked: its recursive residual drifts from the true one by
        rounding, and without the margin most chunks at a relative residual of 1e-5 paid a
        refinement (one more Hessian product each) for that drift alone."""
        if p is None:
            p = torch.softmax(z, dim=-1)
        loss_frame = self._from_logits(g_z) if self._uses_loss_frame() else None
        preconditioner, hessian_vector = self._newton_system(z, p, idx, loss_frame)

        def restrict(rows):
            return self._newton_system(z, p, idx, loss_frame, rows, preconditioner)

        target = rtol * rhs.norm(dim=-1)
        aim = 0.5 * target if rhs.dtype == torch.float32 else target
        solution = torch.zeros_like(rhs)
        residual, cg_total = rhs, 0
        for _ in range(5):
            step, _, cg = newton_direction(preconditioner, hessian_vector, self._to_logits,
                                           self.frame.sigma2, residual, aim, restrict)
            solution = solution + step
            cg_total += cg
            residual = rhs - hessian_vector(solution)
            if not bool((residual.norm(dim=-1) > target).any()):
                break
        return solution, cg_total

    def reduced_hessian_vector(self, D: torch.Tensor, db: torch.Tensor | None = None,
                               rtol: float = 1e-12):
        r"""Sums over samples of the reduced Hessian applied to the direction (D, db).

        With the features at their optimum for the classifier (W, b) (stationarity
        :math:`W^\top g_s + \lambda_H h_s = 0`, :math:`g_s = \nabla\ell_s`), implicit
        differentiation of it along :math:`(\dot W, \dot b) = (D, db)` gives

        .. math:: \dot h_s = -M_s^{-1}\big(D^\top g_s + W^\top\nabla^2\ell_s\,(Dh_s + db)\big),
                  \qquad M_s = W^\top\nabla^2\ell_s W + \lambda_H I,

        :math:`\dot z_s = Dh_s + db + W\dot h_s`, :math:`\dot g_s = \nabla^2\ell_s\dot z_s`, and
        the derivative of the envelope gradient
        :math:`\nabla F = \frac1n\sum_s w_s(g_s h_s^\top, g_s) + (\lambda_W W, \lambda_b b)`:

        .. math:: \nabla^2F\,(D, db) = \frac1n\sum_s w_s\big(\dot g_s h_s^\top
                  + g_s\dot h_s^\top,\ \dot g_s\big) + (\lambda_W D, \lambda_b\,db)

        (the Hessian of a function defined by a minimisation: e.g. Nocedal & Wright,
        Numerical Optimization, 2nd ed., section 7.1, for its use by Newton-CG). In the
        solver's frame :math:`h_s = Vx_s`, :math:`W = AV^\top`; with :math:`D_V = DV` and
        :math:`D_\perp = D(I - VV^\top)` the system splits: on range(V) it is the feature
        Newton system :math:`(A^\top\nabla^2\ell A + \lambda_H I)\dot x = -(D_V^\top g_s +
        A^\top\nabla^2\ell(D_Vx_s + db))`, solved by :meth:`newton_systems`; off it
        :math:`\dot h_\perp = -D_\perp^\top g_s/\lambda_H`. Hence

        .. math:: \sum_s w_s(\dot g_s h_s^\top + g_s\dot h_s^\top) =
                  \Big(\sum_s w_s(\dot g_s x_s^\top + g_s\dot x_s^\top)\Big)V^\top
                  - \frac1{\lambda_H}\Big(\sum_s w_s g_s g_s^\top\Big)D_\perp .

        Returns ``(sum_W (K, d), sum_b (K,), CG iterations)``: the sums over samples, not
        divided by n and without the penalties (as :class:`InnerStats` holds the gradient).
        One call is one pass over the samples. Exact only at solved features: elsewhere it
        is the Hessian of the features' own stationary point.
        """
        frame = self.frame
        D_V = D @ frame.V  # (K, r)
        D_perp = D - D_V @ frame.V.T
        off_range = bool(D_perp.abs().max() > 0)

        def chunk(idx):
            x = self.X[idx]
            z = self._logits(x)
            _, p, g_z = self._terms(z, idx)
            if p is None:
                p = torch.softmax(z, dim=-1)
            move = x @ D_V.T if db is None else torch.addmm(db, x, D_V.T)  # D h_s + db
            rhs = g_z @ D_V + self._from_logits(self._logit_hessian(z, p, move, idx))
            dx, cg = self.newton_systems(z, p, g_z, rhs, idx, rtol)
            dx = -dx
            dg = self._logit_hessian(z, p, move + self._to_logits(dx), idx)
            weight = self._weight(idx)
            g_w = g_z if weight is None else g_z * weight[:, None]
            if weight is not None:
                dg = dg * weight[:, None]
            gram = g_w.T @ g_z if off_range else None
            return dg.T @ x + g_w.T @ dx, gram, dg.sum(0), cg

        parts = self.threads.map(chunk, list(self._chunks()))
        sum_x = sum(part[0] for part in parts)
        sum_W = sum_x @ frame.V.T
        if off_range:
            sum_W = sum_W - (sum(part[1] for part in parts) @ D_perp) / self.lam_H
        return sum_W, sum(part[2] for part in parts), sum(part[3] for part in parts)

    def _logit_curvature(self, idx, need_grad: bool):
        """Coordinates, logit gradients (None unless ``need_grad``) and the diagonal of the
        logit Hessian at ``idx`` (the softmax model's :math:`p_c(1 - p_c)`, the identity
        model's 1, which needs no loss terms), unweighted."""
        x = self.X[idx]
        z = self._logits(x)
        identity = self.loss.hessian_model == "identity"
        p = g_z = None
        if need_grad or not identity:
            _, p, g_z = self._terms(z, idx, need_grad=True)
        if identity:
            return x, g_z, torch.ones_like(z)
        p = torch.softmax(z, dim=-1) if p is None else p
        return x, g_z, p * (1 - p)

    def curvature_diagonal(self):
        r"""Sums over samples of the logit curvature times the squared coordinates,
        :math:`\sum_s w_s\,[\nabla^2\ell_s]_{cc}\,x_{s,k}^2` (K, r), and of the logit
        curvature, :math:`\sum_s w_s[\nabla^2\ell_s]_{cc}` (K,): the diagonal of the
        classifier block :math:`\partial^2L/\partial W^2` in the solver's frame (times n), a
        preconditioner of the reduced Hessian (:mod:`.newton_cg`). The softmax model's
        diagonal is :math:`p_c(1 - p_c)`; the identity model's is 1. One pass over the
        samples."""

        def chunk(idx):
            x, _, diagonal = self._logit_curvature(idx, need_grad=False)
            weight = self._weight(idx)
            if weight is not None:
                diagonal = diagonal * weight[:, None]
            return diagonal.T @ (x * x), diagonal.sum(0)

        parts = self.threads.map(chunk, list(self._chunks()))
        return sum(part[0] for part in parts), sum(part[1] for part in parts)

    def gram_curvature(self, entries: bool = True) -> GramSums:
        r"""The sums behind the Gram-entry metric (:mod:`.gram_preconditioner`), one pass over
        the samples: :math:`\sum_s w_s S_{s,j}g_{s,k}^2`, :math:`\sum_s w_s g_sg_s^\top` and
        :math:`\sum_s w_s S_{s,j}`, with :math:`S_{s,j} = a_{s,j}/(\lambda_H + G_{jj}a_{s,j})`,
        :math:`a_{s,j}` the diagonal of the logit Hessian and G the Gram matrix of the
        classifier's rows (centred for a loss blind to a common logit shift). ``entries``
        False leaves out the two (K, K) sums (None), which only a learned W's metric needs."""
        W = self.W - self.W.mean(0, keepdim=True) if self.loss.shift_invariant else self.W
        gram_diagonal = (W * W).sum(1)

        def chunk(idx):
            _, g_z, diagonal = self._logit_curvature(idx, need_grad=entries)
            S = diagonal / (self.lam_H + gram_diagonal * diagonal)
            weight = self._weight(idx)
            S_w = S if weight is None else S * weight[:, None]
            if not entries:
                return None, None, S_w.sum(0)
            g_w = g_z if weight is None else g_z * weight[:, None]
            return S_w.T @ (g_z * g_z), g_w.T @ g_z, S_w.sum(0)

        parts = self.threads.map(chunk, list(self._chunks()))
        return GramSums(*(None if parts[0][k] is None else sum(part[k] for part in parts)
                          for k in range(3)))
