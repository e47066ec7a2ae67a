r"""Method ``"newton_cg"``: exact features, truncated Newton on the learned classifier.

As :mod:`.newton` (:class:`~.newton.ReducedNewton`), the features are eliminated,
:math:`F(\theta) = \min_H L(H, \theta)` with :math:`\theta = (W, b)`, and solved exactly per
sample by :class:`~.feature_newton.FeatureSolver`; the outer step is not L-BFGS's but a
truncated Newton step, :math:`\nabla^2F\,p \approx -\nabla F` solved by conjugate gradients
with the exact Hessian-vector products of
:meth:`~.feature_newton.FeatureSolver.reduced_hessian_vector` (implicit differentiation of the
feature optimum: one pass over the samples each; ``"newton_gram"`` takes them over the samples
at the lam values of a quadrature of the lam grid, or in its first steps over a quarter of the
samples, :class:`GramNewtonCG`). This is trust-region Newton-CG: the
Steihaug-Toint conjugate-gradient path (Nocedal & Wright, Numerical Optimization, 2nd ed.,
Algorithm 7.2) stops at the forcing residual :math:`\|\nabla^2F\,p + \nabla F\| \le
\eta_k\|\nabla F\|` with :math:`\eta_k = \min(0.5, \sqrt{\|\nabla F\|})` (their (7.3):
superlinear convergence; ``"newton_gram"`` sets :math:`\eta_k` by how far the last step's
linear model missed, :data:`FORCING_RULES`), once the residual is a tenth of the solve's
tolerance (the last step needs no more), at the first direction of non-positive curvature
(F is not convex far from its optimum), followed to the boundary, or where it leaves the trust
region; the radius follows their Algorithm 4.1. A first version with a line search instead (their
Algorithm 7.1) met nearly flat directions far from the optimum, took a step of norm 144 at
K = d = 50 and paid 7 feature solves to cut it back; a rejected trust-region point costs one.

Why: on sparse random class pairs the reduced Hessian has soft directions (condition about
65 at K = d = 50, ``scripts/reduced_hessian.py --num-pairs``) and L-BFGS needs about
14 sqrt(condition) iterations, each a feature solve of several passes over the samples;
``scripts/bench_outer.py`` counts both methods' passes. F is invariant under rotations of
feature space, :math:`W \mapsto WQ^\top`, so its Hessian is singular along
:math:`W\Omega` (:math:`\Omega` skew). The exact gradient is orthogonal to those
directions, but with features solved only to a tolerance the Hessian products give them
eigenvalues of either sign near zero, along which CG stepped far (at K = 20, d = 32 the
line-search version took 79 iterations and 383 feature solves with them, 8 and 12 without
them, to gradient 1e-8): CG runs on the projected
Hessian (:meth:`NewtonCG._step_projector`). Measured at K = d = 50 on random pairs at
gradient 7.6e-7, the projected Newton step (CG to 1e-8) is 1.2e4 times as long as the
gradient, so the reduced Hessian has eigenvalues of 1e-4 or below (lam_W / 50) besides the
rotations (``scripts/reduced_hessian.py`` counts eigenvalues below 1e-4 as zero), and the
step cut the gradient only 4.4 times where its linear model promised 500: F is far from
quadratic along them at that distance.

``"newton_cg"`` solves the features in the problem's dtype throughout and asks its Hessian
products for 1e-12 (no float32 anywhere: its products are exact to the last digits), its
features tighter than L-BFGS's (:meth:`NewtonCG._inner_tol`). ``"newton_gram"`` asks its
products only for the digits its conjugate gradients need (a tenth of the relative residual
at which they stop: the forcing term's, or at the last step the tolerance's share of the
gradient), so with ``mixed_precision`` it runs them
on a float32 copy of the features (:meth:`NewtonCG.product_dtype`), which halves their
memory traffic and speeds up their matrix products (``docs/performance.md`` has the time).
Checkpoints save what :class:`~.newton.ReducedNewton` saves (the L-BFGS memory stays empty);
the trust radius, the last step's model (:attr:`NewtonCG.last_accepted`), ``"newton_gram"``'s
phase, its subsamples and whether its float32 products were found too inaccurate
(``float64_products``) are not saved, so a resumed run starts again from its first radius and
forcing term (and L-BFGS steps) and need not retrace the same steps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..etf import rank_cutoff
from .gram_preconditioner import GramMetric, bias_metric, off_row_curvature
from .lam_quadrature import QUADRATURE_NODES, sample_quadrature
from .methods import auto_choice, method_factory
from .newton import FixedClassifierNewton, NewtonMethod, ReducedNewton
from .sample_groups import picked_rows
from .state import Iterate, RunState

# the inner tolerance is this fraction of |grad F|^{3/2} (see NewtonCG._inner_tol)
_INNER_FRACTION = 0.1
# conjugate-gradient iterations per Newton step at most
_MAX_CG = 500
# a trust-region point is accepted when F falls by this fraction of the model's decrease
_ETA = 1e-4
# trust-region points tried per step at most
_MAX_TRIALS = 30
# CG also stops once the residual of its Newton system is this fraction of the tolerance
_TOLERANCE_FRACTION = 0.1
# Hessian products solve the features' Newton systems to this relative residual
_SYSTEM_RTOL = 1e-12
# ... or, with adaptive_products, to 0.1 of the relative residual at which CG stops (the
# forcing term, or _TOLERANCE_FRACTION of the tolerance over |grad F|) but at most this
_ADAPTIVE_RTOL = 1e-4
# products asked for this relative residual or more may run in float32 (product_dtype)
_FLOAT32_RTOL = 1e-6
# ... unless a float32 product is off from the float64 one by more than this (relative)
_FLOAT32_PRODUCT_ERROR = 0.1
# Eisenstat & Walker's safeguard: a forcing term falls no faster than to this power of the last
_FORCING_SAFEGUARD_POWER = (1 + math.sqrt(5)) / 2


def newton_cg_method(state: RunState) -> NewtonMethod:
    """Truncated Newton if W or b is learned; a fixed classifier has nothing to step but the
    features, which :class:`~.newton.FixedClassifierNewton` does as ``"newton"`` does."""
    return NewtonCG(state) if state.learns_W_or_b else FixedClassifierNewton(state)


def newton_gram_method(state: RunState) -> NewtonMethod:
    """Method ``"newton_gram"``: :class:`GramNewtonCG` if W or b is learned, else as
    :func:`newton_cg_method`."""
    return GramNewtonCG(state) if state.learns_W_or_b else FixedClassifierNewton(state)


def auto_method(state: RunState) -> NewtonMethod:
    """Method ``"auto"`` (the default): for a learned classifier the outer method measured
    faster at the problem's size (:func:`~.methods.auto_choice`), ``"newton_gram"`` up to
    :data:`~.methods.AUTO_GRAM_MAX_K` classes and
    L-BFGS (``"newton"``) above; a fixed classifier's Newton steps on the features otherwise.

    Why the bound: ``"newton_gram"`` was the faster to gradient 1e-8 on sparse random pairs
    at K = 50, 100, 200 and 400 (at 400 it converged within the time limit that stopped
    L-BFGS short of it), and no slower on the medium problem on all pairs (K = 100,
    d = 128), each in the same run as L-BFGS on 2 idle cores. At K = d = 1000 (200,004
    samples), side by side on one core each for 50 minutes, neither converged: L-BFGS was
    ahead for the first half hour, down to a gradient of about 1e-4, and
    ``"newton_gram"`` after it: 1.9e-6 at 50 minutes, against L-BFGS's 5.3e-5 (its
    iterations had gone up and down between 4e-5 and 2.4e-4 for the last 20 minutes;
    ``docs/performance.md``). No larger size was compared, so L-BFGS stays the default
    above it.
    """
    return method_factory(auto_choice(state.config.K))(state)


class NewtonCG(ReducedNewton):
    r"""Trust-region Newton-CG on the reduced function (see the module docstring).

    ``forcing_rule`` names the rule of the inner CG's forcing term (:data:`FORCING_RULES`);
    ``forcing_max`` and ``forcing_power`` set :math:`\eta_k = \min(\eta_{\max},
    \|\nabla F\|^{p})`, the ``"power"`` rule's at every step and the
    ``"eisenstat_walker"`` rule's at the first (0.5 and 1/2: Nocedal & Wright's (7.3));
    ``scripts/bench_outer.py`` compares other choices.
    """

    name = "newton_cg"
    forcing_rule = "power"
    forcing_max = 0.5
    forcing_power = 0.5
    # the accepted point of the last trust-region step, for the forcing rule (none before it)
    last_accepted: AcceptedStep | None = None
    preconditioner = "none"
    # Hessian products to a relative residual tied to CG's stopping residual, not _SYSTEM_RTOL
    adaptive_products = False
    _product_rtol = _SYSTEM_RTOL
    # Hessian products over 1/this of the samples (1: all of them, the exact Hessian) ...
    hessian_stride = 1
    # ... while the gradient norm is above this fraction of the first one, and only where
    # the subsample keeps at least this many samples
    subsample_above = 0.0
    subsample_min_samples = 1024
    _subsamples = 0  # subsampled steps so far, which turn the offset of the subsample
    # Hessian products at every step on the samples at this many lam values of a grid,
    # weighted by a quadrature of the grid (:mod:`.lam_quadrature`; 0: never), where the grid
    # has a rule; then no stride subsample
    quadrature_nodes = 0
    _quadrature = None  # its (rows, counts, weight) of the feature solver, once made; () if none
    # steps projected onto the row space of W where it is rank deficient (_step_projector)
    confine_to_row_space = False
    # set once float32 Hessian products are found too far from float64 ones
    # (_check_float32_products); whether this step's have been checked
    float64_products = False
    _float32_checked = False

    def _first_dtype(self) -> torch.dtype:
        return self.state.problem.dtype

    def _inner_tol(self, outer_grad: float | None) -> float:
        r"""Tighter than L-BFGS's :math:`0.1\|\nabla F\|`: the features' error sets the
        floor of the next gradient, which would hold Newton's convergence to a linear rate of
        about 0.1; :math:`0.1\|\nabla F\|^{3/2}` keeps it superlinear (the power rule's
        forcing :math:`\eta_k = \sqrt{\|\nabla F\|}`; kept as it is under the
        Eisenstat-Walker rule), at the price of about one more feature pass per solve (their
        Newton steps converge quadratically)."""
        tol = self.state.config.tol
        if outer_grad is None:
            return max(0.1 * tol, 1e-3)
        return max(0.1 * tol, min(1e-3, _INNER_FRACTION * outer_grad * min(1.0, math.sqrt(outer_grad))))

    def product_dtype(self) -> torch.dtype:
        """The dtype of this step's Hessian products: float32 for a float64 problem with
        ``mixed_precision`` while they are asked for no more than :data:`_FLOAT32_RTOL`
        relative residual (``adaptive_products``; float32 rounds at about 6e-8) and they
        have passed :meth:`_check_float32_products`, else the problem's. At the last step
        the residual asked is a share of the tolerance over the gradient (:meth:`steihaug`),
        often above this bound even at a tolerance of 1e-12, so that step's products may
        stay float32 where the forcing term alone would have asked for float64 (the residual
        they are asked for is then about a hundredth of the tolerance)."""
        dtype = self.state.problem.dtype
        if (self.adaptive_products and self.state.config.mixed_precision and dtype == torch.float64
                and self._product_rtol >= _FLOAT32_RTOL and not self.float64_products):
            return torch.float32
        return dtype

    def hessian_vector(self, v: torch.Tensor, solver=None) -> torch.Tensor:
        """The reduced Hessian at the current features applied to the flat direction ``v``
        (W first, then b, as the flat gradient); one pass over the samples of ``solver``
        (the feature solver, or its copy of :meth:`_product_samples`: on a subsample its sums
        are divided by the number of samples it stands for, an estimate of the mean over all
        samples)."""
        state, config = self.state, self.state.config
        solver = self.feature_solver if solver is None else solver
        n = solver.samples
        D, db = self._split(v)
        if not state.learn_W:
            D = torch.zeros_like(state.W)
        if not state.learn_b:
            db = None
        dtype = solver.X.dtype
        sum_W, sum_b, cg = solver.reduced_hessian_vector(
            D.to(dtype), None if db is None else db.to(dtype), self._product_rtol)
        self.work["hessian_products"] += 1
        self.work["hessian_visits"] += solver.n
        self.work["hessian_cg"] += int(cg)
        return self._join(sum_W.to(v.dtype) / n + config.lam_W * D if state.learn_W else None,
                          sum_b.to(v.dtype) / n + config.lam_b * db if state.learn_b else None)

    def steihaug(self, grad: torch.Tensor, radius: float, metric) -> _CGPath:
        r"""The Steihaug-Toint conjugate-gradient path (Nocedal & Wright, Algorithm 7.2) on
        :math:`\min_p g^\top p + \frac12 p^\top P\nabla^2F P\,p` from p = 0,
        preconditioned by ``metric`` (:meth:`_metric`: M, an approximate inverse Hessian;
        the trust region is then the ellipsoid :math:`p^\top M^{-1}p \le \Delta^2`, Conn,
        Gould & Toint, Trust-Region Methods, Algorithm 7.5.1). It stops at the forcing
        residual :math:`\sqrt{r^\top Mr} \le \eta\sqrt{g^\top Mg}`, :math:`\eta` of
        ``forcing_rule`` (:data:`FORCING_RULES`), at the first direction of non-positive
        curvature (followed to the boundary) or where it leaves the trust region of
        ``radius``; also once the residual :math:`\|P(\nabla^2F\,p + \nabla F)\|` is
        :data:`_TOLERANCE_FRACTION` of the solve's tolerance, where the step already takes the
        gradient below it as far as the linear model can tell (the forcing term, made for
        superlinear convergence, would ask the last step for many more digits than the
        tolerance needs: in a one-off run at K = d = 200 on random pairs, the last step
        started at a gradient of 5e-8, a forcing term of 2.3e-4). The Hessian products run
        on the feature solver of :meth:`_product_samples`; with ``adaptive_products``, to 0.1
        of the larger of the two relative residuals (the forcing term, and the tolerance's
        share over :math:`\|g\|`), within [:data:`_SYSTEM_RTOL`, :data:`_ADAPTIVE_RTOL`].
        The path is kept so that a smaller radius finds its point without new
        Hessian products (:meth:`_CGPath.point`); :math:`M^{-1}` of every point and
        direction is carried by the recurrence :math:`M^{-1}d_{k+1} = -r_{k+1} +
        \beta_k M^{-1}d_k`, so M is never inverted."""
        project = self._step_projector()

        def precondition(v):
            return project(metric(project(v)))

        g = project(grad)
        z = precondition(g)
        grad_norm = float(torch.linalg.vector_norm(grad))
        rz = float(torch.dot(g, z))
        forcing = FORCING_RULES[self.forcing_rule](self, grad_norm)
        target = forcing * math.sqrt(max(rz, 0.0))
        enough = _TOLERANCE_FRACTION * self.state.config.tol
        if self.adaptive_products:
            asked = max(forcing, enough / max(grad_norm, 1e-300))
            self._product_rtol = max(_SYSTEM_RTOL, min(_ADAPTIVE_RTOL, 0.1 * asked))
        samples = self._product_samples()
        direction = -z
        products = samples.in_dtype(self.product_dtype())
        checked = self._check_float32_products(samples, products, project(direction))
        if self.float64_products:
            products = samples
        path = _CGPath(g, forcing)
        zero = torch.zeros_like(g)
        step, M_inv_step, H_step = zero, zero, zero
        residual = g.clone()  # P(H p + g)
        M_inv_direction = -residual
        for _ in range(_MAX_CG):
            if checked is not None:  # the first product, already made in float64
                Hd, checked = project(checked), None
            else:
                Hd = project(self.hessian_vector(project(direction), products))
            curvature = float(torch.dot(direction, Hd))
            path.segments.append((step, M_inv_step, H_step, direction, M_inv_direction, Hd))
            if curvature <= 0:
                path.end = "negative_curvature"  # the last segment goes on to the boundary
                return path
            alpha = rz / curvature
            step, M_inv_step = step + alpha * direction, M_inv_step + alpha * M_inv_direction
            H_step = H_step + alpha * Hd
            path.ends.append(alpha)
            if float(torch.dot(step, M_inv_step)) >= radius * radius:
                path.end = "boundary"
                return path
            residual = residual + alpha * Hd
            if float(torch.linalg.vector_norm(residual)) <= enough:
                path.end = "tolerance"
                break
            z = precondition(residual)
            rz_new = float(torch.dot(residual, z))
            if math.sqrt(max(rz_new, 0.0)) <= target:
                path.end = "forcing"
                break
            beta = rz_new / rz
            direction = -z + beta * direction
            M_inv_direction = -residual + beta * M_inv_direction
            rz = rz_new
        return path

    def _trial_point(self, theta: torch.Tensor, metric, trial: int) -> TrialPoint:
        """The point the trust region's ``trial``-th try evaluates for the path's point
        ``theta`` (flat), with the directions of W it dropped and grew: ``theta`` itself here
        (:class:`GramNewtonCG` changes the rank of W at the first try)."""
        return TrialPoint(theta, 0, 0)

    def _product_samples(self):
        """The feature solver this step's Hessian products run on, before
        :meth:`product_dtype` rounds it: the samples of the lam quadrature
        (:meth:`_quadrature_samples`) where there is one, else 1/:attr:`hessian_stride` of
        the samples while the gradient norm is above :attr:`subsample_above` of the first
        one and the subsample keeps at least :attr:`subsample_min_samples`, else all samples.

        A stride subsample is every :attr:`hessian_stride`-th sample as stored, from an
        offset that turns with each step (where samples with one soft target are solved once,
        :mod:`.sample_groups`, each group once, weighing the samples of it that this picks:
        a quarter of the groups, in which a pure class met in 19 pairs counts 19 times in
        one step and not at all in three, gave at K = d = 200 on random pairs the same
        iterations but more rejected trust-region points and 7 % more time than before
        grouping). The samples of a class pair are stored together, its lam
        values in order, so every pair keeps its share of samples spread evenly over its lam
        range (with a multiple of 4 samples per pair, at the same lam values for every pair
        in one step). Measured at K = d = 100 on random pairs against no subsample (median
        of 4 alternating runs, 2 idle cores): 0.79 of the time in 24 iterations; one sample
        drawn at random from every 4 consecutive ones, 0.88 in 25; a random quarter of all
        samples, which leaves some pairs without a sample, 0.97 in 27."""
        solver = self.feature_solver
        quadrature = self._quadrature_samples()
        if quadrature:
            return solver.subset(*quadrature)
        stride = self.hessian_stride
        if (stride > 1 and solver.samples >= stride * self.subsample_min_samples
                and self.current.grad_norm > self.subsample_above * self._first_grad_norm()):
            offset = self._subsamples % stride
            self._subsamples += 1
            # the same samples, each group once with the number and weight of them it holds
            problem = self.state.problem
            solver = solver.subset(*picked_rows(self.groups, slice(offset, None, stride),
                                                problem.n, problem.sample_weight,
                                                device=solver.X.device))
        return solver

    def _quadrature_samples(self) -> tuple:
        """(rows, counts, weight) of the feature solver for :meth:`FeatureSolver.subset`: the
        samples at the lam values of the grid's quadrature (:mod:`.lam_quadrature`,
        :attr:`quadrature_nodes` of them), each counting its node's weight, so that the
        subsample stands for all samples and its sums are exact for terms polynomial in lam
        of degree below the number of nodes; () where there is none (no nodes asked, samples
        not pairs on a grid, or a grid with no rule). Made once: the samples do not change.

        Why at every step, where the stride subsample serves only the first ones: its error
        is that of a smooth integrand's quadrature, not of dropping 3 samples in 4 (see
        :mod:`.lam_quadrature` for the measured errors of both)."""
        if self._quadrature is None:  # not made yet; () once made and found to be none
            self._quadrature = ()
            problem = self.state.problem
            weights = None
            if self.quadrature_nodes and problem.lam_index is not None:
                weights = sample_quadrature(problem.lam_index, problem.config.lam_grid(),
                                            self.quadrature_nodes)
            if weights is not None:
                samples = torch.nonzero(weights).squeeze(1)
                self._quadrature = picked_rows(self.groups, samples, problem.n,
                                               problem.sample_weight, weights[samples],
                                               device=samples.device)
        return self._quadrature

    def _check_float32_products(self, samples, rounded,
                                direction: torch.Tensor) -> torch.Tensor | None:
        r"""The float64 product of ``direction`` on ``samples``, made once the float32
        products (on ``rounded``, the float32 copy of ``samples``) are due and not yet
        checked (at the first trust-region step, and after a rejected point), or None. A
        float32 product of the same direction is compared with it; beyond
        :data:`_FLOAT32_PRODUCT_ERROR` relative error the products stay float64 for the rest
        of the run. Both products count in ``work``.

        Why: the reduced Hessian is a difference of two terms, each of the size of the
        per-sample systems' inverse, about :math:`1/\lambda_H`; float32's error in those
        systems is amplified by that cancellation. Measured relative errors of float32
        products (scripts never kept; one-off runs at the Newton steps of each solve):
        2e-5 to 1.5e-4 at K = d = 100 on random pairs with lam_H = 5e-3, about the residual
        asked of them; 1e-2 to 6e-2 at K = d = 24 with lam_H = 1e-3, where the solve still
        converged in 14 iterations; 1.5 to 31 at K = 6, d = 8 with lam_H = 1e-3, where it
        crept at a gradient of 1e-5 after 100 iterations, and NaN at lam_H = 1e-4, where it
        stalled at the first step."""
        if self._float32_checked or rounded is samples:
            return None
        self._float32_checked = True
        exact = self.hessian_vector(direction, samples)
        approximate = self.hessian_vector(direction, rounded)
        error = float(torch.linalg.vector_norm(approximate - exact)
                      / torch.linalg.vector_norm(exact))
        if not error <= _FLOAT32_PRODUCT_ERROR:  # NaN too
            self.float64_products = True
        return exact

    def _metric(self):
        r"""The preconditioner :math:`v \mapsto Mv` of this step (:data:`PRECONDITIONERS`,
        chosen by ``preconditioner``), built at the current classifier and features."""
        return PRECONDITIONERS[self.preconditioner](self)

    def _initial_radius(self, theta: torch.Tensor, grad: torch.Tensor, metric) -> float:
        r"""The first trust radius: :math:`\|\theta\|` in the trust region's norm where the
        metric is diagonal (its inverse known), else the length :math:`\sqrt{g^\top Mg}`
        of the preconditioned gradient step."""
        inverse_norm = getattr(metric, "inverse_norm", None)
        if inverse_norm is not None:
            return max(inverse_norm(theta), 1e-3)
        g = self._step_projector()(grad)
        return max(math.sqrt(max(float(torch.dot(g, metric(g))), 0.0)), 1e-12)

    def _step_projector(self, row_space: bool | None = None):
        r"""The orthogonal projection of flat directions onto those a Newton step takes: off
        the rotations :math:`\{W\Omega : \Omega^\top = -\Omega\}` and, with ``row_space``
        (by default :attr:`confine_to_row_space`) where W is rank deficient, within its row
        space (the identity when W is not learned).

        *Off the rotations.* F is invariant under :math:`W \mapsto WQ`, so at the optimum
        its Hessian vanishes on those directions, and with features solved only to the inner
        tolerance the Hessian products give them eigenvalues of either sign near zero: CG then
        takes huge steps along them, which the line search cuts back by many feature solves.
        Away from the optimum :math:`\nabla^2F\,W\Omega = \nabla F\,\Omega` (the gradient
        is equivariant), small near it. CG runs on :math:`P\nabla^2F P` with right-hand side
        :math:`P\nabla F`. The skew :math:`\Omega` nearest to D solves
        :math:`(G\Omega + \Omega G)/2 = \operatorname{skew}(W^\top D)` with
        :math:`G = W^\top W = V\operatorname{diag}(\mu)V^\top` (:math:`\mu = \sigma^2`
        from the SVD of W): in that basis :math:`\Omega'_{ij} = 2A'_{ij}/(\mu_i + \mu_j)`
        (0 where both are 0: such a rotation does not move W).

        *Within the row space.* The gradient :math:`\nabla_W F = 2\nabla_G F\,W`, the
        reduced Hessian's products and the metric all map directions whose rows lie in the
        row space of W to such directions, so in exact arithmetic no step leaves it; in
        floating point the float32 Hessian products put components of their rounding level
        (measured: 3e-7 of a step's length at K = d = 200 on random pairs) on the directions
        that a drop (:meth:`GramNewtonCG._trial_point`) had set to zero, and the frame that
        holds the features then counts them again. The row space is that of the features'
        frame (:func:`~ufm.etf.rank_cutoff` on the singular values of W). Both projections
        commute (the rotations split into those inside the row space and those that turn it),
        so applying one after the other projects onto the intersection. A step confined to
        the row space cannot leave a saddle at which W is zero along a direction that F
        would grow, so only :class:`GramNewtonCG`, whose trial points grow W there, confines
        its steps; ``off_row_curvature_min`` in the summary certifies the end point of any
        method (:func:`~.optimality.learned_optimality`)."""
        if row_space is None:
            row_space = self.confine_to_row_space
        state = self.state
        if not state.learn_W:
            return lambda v: v
        W = state.W
        _, sigma, Vh = torch.linalg.svd(W, full_matrices=True)
        Q = Vh.T
        mu = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
        mu[: sigma.numel()] = sigma * sigma
        total = mu[:, None] + mu[None, :]
        keep = total > 1e-12 * float(mu.max().clamp_min(1e-300))
        scale = torch.where(keep, 2.0 / torch.where(keep, total, 1.0), 0.0)
        null = Q[:, sigma.numel():] if row_space else Q[:, :0]
        if row_space and sigma.numel():
            cut = rank_cutoff(W, float(sigma[0]))
            null = torch.cat([Q[:, : sigma.numel()][:, sigma <= cut], null], dim=1)

        def project(v):
            D, db = self._split(v)
            if null.shape[1]:
                D = D - (D @ null) @ null.T
            WD = W.T @ D
            skew = Q.T @ (0.5 * (WD - WD.T)) @ Q
            D = D - W @ (Q @ (scale * skew) @ Q.T)
            return self._join(D, db)

        return project

    radius: float | None = None  # the trust region's, set at the first step

    def step(self, current: Iterate) -> str | None:
        r"""One trust-region step (Nocedal & Wright, Algorithm 4.1, with their constants):
        the Steihaug point at the current radius, accepted when the actual decrease of F is
        at least :math:`10^{-4}` of the model's (or, below the rounding level of F, when the
        gradient norm falls); the radius is quartered after a ratio below 1/4 and doubled
        after one above 3/4 at the boundary. The first point tried may drop or grow
        directions of W (:meth:`_trial_point`, which :class:`GramNewtonCG` overrides);
        rejected, it is followed by the path's point at the same radius. A rejected point is
        followed by the path's point at the smaller radius, so only a new feature solve is
        paid for it, and has the next step's float32 Hessian products checked again
        (:meth:`_check_float32_products`).
        The step's history columns (:meth:`~.newton.NewtonMethod.step_record`) say how many
        CG directions its path took (``step_cg``), why the path ended (``step_path_end``,
        :attr:`_CGPath.end`), its forcing term (``step_forcing``), the radius and length of
        the accepted point (``step_radius``, ``step_length``, in the metric's norm), the
        gradient norm its linear model predicts there (``step_model_gradient``,
        :meth:`_CGPath.point`, off the rotations: beside the gradient the step reached, the
        hypotenuse of the row's ``grad_W_norm`` and ``grad_b_norm``, it says how far the
        gradient of F is from its quadratic model's over the step), its ratio of actual to
        predicted decrease (``step_ratio``; empty where it was accepted at the rounding level
        of F), the points tried (``step_trials``) and the directions of W the accepted point
        dropped and grew (``step_dropped``, ``step_grown``): whether a slow step was held by
        the radius, by curvature or by the model's accuracy."""
        theta, grad, F0 = self._theta(), current.theta_grad, current.objective
        metric = self._metric()
        if self.radius is None:
            self.radius = self._initial_radius(theta, grad, metric)
        path = self.steihaug(grad, self.radius, metric)
        accepted_state = self.feature_solver.snapshot()
        grad_norm = float(torch.linalg.vector_norm(grad))
        inner_tol = self._inner_tol(grad_norm)
        for trial in range(1, _MAX_TRIALS + 1):
            radius = self.radius
            p, length, predicted, model_gradient = path.point(radius)
            point, dropped, grown = self._trial_point(theta + p, metric, trial)
            new = self._evaluate(*self._split(point), inner_tol)
            actual = F0 - new.objective
            ratio = actual / predicted if predicted > 0 else -math.inf
            at_rounding = predicted <= 64 * np.finfo(np.float64).eps * (abs(F0) + 1)
            if ratio < 0.25:
                self.radius = 0.25 * length
            elif ratio > 0.75 and length >= 0.99 * self.radius:
                self.radius = 2.0 * self.radius
            if math.isfinite(new.objective) and (
                    ratio > _ETA or (at_rounding and new.grad_norm < current.grad_norm)):
                self.state.W, self.state.b = self._split(point)
                self.current = new
                self.last_accepted = AcceptedStep(grad_norm, model_gradient, path.forcing)
                self._step_record = {
                    "step_kind": "trust_region", "step_cg": len(path.segments),
                    "step_path_end": path.end, "step_forcing": path.forcing,
                    "step_radius": radius, "step_length": length,
                    "step_model_gradient": model_gradient,
                    "step_ratio": ratio if ratio > _ETA else None, "step_trials": trial,
                    "step_dropped": dropped, "step_grown": grown}
                return None
            self.feature_solver.restore(accepted_state)
            self._float32_checked = False
            if dropped or grown:  # the next try is the path's point as it is, at this radius
                self.radius = radius
            if self.radius <= 1e-14 * max(1.0, float(torch.linalg.vector_norm(theta))):
                break
        return "stalled"


class GramNewtonCG(NewtonCG):
    r"""Newton-CG preconditioned by the Gram-entry metric (:mod:`.gram_preconditioner`),
    which is also the metric of its trust region; its Hessian products solve the per-sample
    systems only as accurately as its conjugate gradients' stopping residual asks
    (:data:`_ADAPTIVE_RTOL` at most),
    in float32 with ``mixed_precision``.

    Far from the optimum the reduced function is well conditioned and L-BFGS gains a
    factor 100 on the gradient in fewer sample passes than Newton-CG, whose early trust
    regions are small (``scripts/bench_outer.py``: about 25 passes against 70 to 85 at
    K = d = 50 and 100 on random pairs); the soft directions of sparse pairs slow L-BFGS
    only after that. So the method takes L-BFGS steps until the gradient norm is
    ``switch_fraction`` of the first one, then preconditioned trust-region steps.

    Why the metric: on sparse random class pairs the reduced Hessian's soft directions
    change the Gram entries of class pairs no sample contains; the metric weights every
    entry by its own curvature.

    Its forcing term is Eisenstat & Walker's (``forcing_rule``, :data:`FORCING_RULES`): the
    gradient after a Newton step is often tens of times what its linear model predicted, so
    conjugate gradients stop at about the residual that the model's own error leaves.

    Pairs on a lam grid of 21 values or more run every Hessian product on the samples at
    11 of its lam values (``quadrature_nodes``), each weighted by a quadrature of the grid
    (:mod:`.lam_quadrature`, :meth:`NewtonCG._quadrature_samples`): about half the work,
    with an error that of a smooth function's quadrature (``docs/performance.md`` has the
    comparison). Other problems run the Hessian products of their first Newton steps on
    every 4th sample (``hessian_stride``, :meth:`NewtonCG._product_samples`), a quarter of
    the work, while the gradient norm is above ``subsample_above`` = 1e-3 of the first
    one. Closer to the optimum that subsample's error along the soft directions made steps
    fail: with it throughout, K = d = 100 on random pairs took 33 iterations instead of 25
    and longer than without it, and every 8th sample took longer at K = 200. With the
    bound, 0.79 of the time at K = 100. The gradient and the trust region's ratio are
    always exact.

    The first try of each trust-region step drops the directions in which W's Gram matrix
    is collapsing (:meth:`_trial_point`), so that the next step's passes over the samples
    do not carry them in the features' frame.
    """

    name = "newton_gram"
    preconditioner = "gram"
    forcing_rule = "eisenstat_walker"
    adaptive_products = True
    hessian_stride = 4
    subsample_above = 1e-3
    quadrature_nodes = QUADRATURE_NODES
    # L-BFGS steps until the gradient norm is at this fraction of the first one
    switch_fraction = 1e-2
    # a step's first trial point drops W's components on the eigenvectors of its (centred)
    # Gram matrix below this fraction of the largest eigenvalue, on the span where F curves
    # upward (_trial_point; 0: never)
    collapse_fraction = 1e-4
    # ... and grows W off its row space along class directions where F curves downward
    # below this multiple of -lam_W (_trial_point)
    grow_threshold = 1e-3
    confine_to_row_space = True
    _newton_phase = False

    def _first_dtype(self) -> torch.dtype:
        """float32 features first with ``mixed_precision``, as L-BFGS (its phase only)."""
        return ReducedNewton._first_dtype(self)

    def step(self, current: Iterate) -> str | None:
        """An L-BFGS step (:meth:`ReducedNewton.step`, float32 features with
        ``mixed_precision``) while the gradient norm is above ``switch_fraction`` of the first
        one, a preconditioned trust-region step after, its features in the problem's dtype
        (the trust region's ratio compares values of F that float32 would round; the
        Hessian products alone may be rounded, :meth:`product_dtype`); the passage
        measures the features in that dtype again, which is that iteration's step."""
        if not self._newton_phase:
            self._newton_phase = current.grad_norm <= self.switch_fraction * self._first_grad_norm()
            if self._newton_phase and self._in_float32_phase:
                self._to_full_precision()
                return None
        if self._newton_phase:
            return super().step(current)
        return ReducedNewton.step(self, current)

    def _trial_point(self, theta: torch.Tensor, metric, trial: int) -> TrialPoint:
        r"""The first try of a step evaluates the path's point with the rank of W adapted:
        its collapsing directions dropped, and directions grown where F would decrease off
        its row space; later tries (after a rejection) the path's point as it is.

        Both read the curvature off the row space, :math:`C = 2\nabla_G F`
        (:func:`~.gram_preconditioner.off_row_curvature`, from the sums the step's metric
        made at the step's start): adding :math:`\varepsilon uv^\top` to W, with v off its
        row space, changes F by :math:`\frac{\varepsilon^2}2u^\top Cu` to second order.

        *Drop.* The candidates are the eigenvectors of the Gram matrix of the centred W (of W
        for a loss that sees a common logit shift) whose eigenvalue is below
        ``collapse_fraction`` of the largest, and above the rounding level of W's frame
        (:mod:`.frames`), below which a direction costs nothing. C restricted to their span
        is diagonalised; its eigenvectors of positive eigenvalue span the collapsing
        directions S, and W becomes :math:`W - P_SW_c`. On S, W at zero is then a local
        minimum of F, not a saddle where the gradient vanishes by symmetry alone. To second
        order the drop lowers F by :math:`\frac12\operatorname{tr}(P_SW_cW_c^\top P_SC)`.

        *Growth.* The Newton steps do not leave the row space of W
        (:meth:`NewtonCG._step_projector`), so where W is zero along a direction u of class
        space (u orthogonal to the columns of the centred W) on which C is negative, only
        rounding errors that happen to grow past the frame's rank rule move it from that
        saddle (at K = d = 6 on 10 random pairs, from a classifier of rank 1 with
        trust-region steps from the start: 37 iterations, 14 with growth). C restricted to
        those directions is diagonalised, and along each eigenvector of eigenvalue below
        ``-grow_threshold`` lam_W, W gains :math:`\varepsilon uv^\top` with v a direction
        off the row space of the centred W (as many as there are) and :math:`\varepsilon`
        the largest singular value of the centred W times
        :math:`\sqrt{\text{collapse\_fraction}}`, so that the new direction is at the edge
        of the collapsing ones; the next steps' Krylov spaces then hold it, and F falls by about
        :math:`\frac{\varepsilon^2}2|u^\top Cu|` more. This is the rank increase of the
        low-rank methods for trace-norm problems (Journee, Bach, Absil & Sepulchre, SIAM J.
        Optim. 2010); from a full-rank start it is rarely needed, since drops leave only
        directions where C is positive.

        The trust region's ratio judges the point with the changes against the model's
        decrease for the path's point (:meth:`NewtonCG.step` tries the same radius again
        without them if it is rejected); the model gradient the forcing rule compares with
        the next gradient is the path's point's.

        Why: with weight decay on W and H the learned problem is a nuclear-norm penalty on
        the logits, whose optimal Gram matrix is often far from full rank, and every pass
        over the samples costs in proportion to the rank of the frame that holds the
        features, which counts a direction until it is at rounding level. Newton steps
        shrink collapsing directions without taking them to zero."""
        gram_sums = getattr(metric, "gram_sums", None)
        if trial > 1 or self.collapse_fraction <= 0 or not self.state.learn_W or gram_sums is None:
            return TrialPoint(theta, 0, 0)
        W, b = self._split(theta)
        W_c = W - W.mean(0, keepdim=True) if self.feature_solver.loss.shift_invariant else W
        U, sigma, Vh = torch.linalg.svd(W_c, full_matrices=True)
        # the frame's rank rule, on W itself
        rounding = rank_cutoff(W, torch.linalg.matrix_norm(W, 2))
        config = self.state.config
        curvature = off_row_curvature(gram_sums.outer, self.state.problem.n, config.lam_H,
                                      config.lam_W).to(W.dtype)
        sigma_all = torch.zeros(U.shape[1], dtype=W.dtype, device=W.device)
        sigma_all[: sigma.numel()] = sigma
        largest = float(sigma_all[0])
        small = (sigma_all > rounding) & (sigma_all ** 2 < self.collapse_fraction * largest ** 2)
        collapsing = _curved_span(U[:, small], curvature, lambda values: values > 0)
        growing = _curved_span(U[:, sigma_all <= rounding], curvature,
                               lambda values: values < -self.grow_threshold * config.lam_W)
        # directions off the row space of the centred W (a shift-invariant loss sees only
        # it, and u v^T with u orthogonal to 1 leaves the mean row alone), as many as there are
        free = Vh[int((sigma > rounding).sum()):]
        growing = growing[:, : free.shape[0]] if largest > 0 else growing[:, :0]
        if collapsing.shape[1] == 0 and growing.shape[1] == 0:
            return TrialPoint(theta, 0, 0)
        W_new = W - collapsing @ (collapsing.T @ W_c)
        if growing.shape[1]:
            epsilon = largest * math.sqrt(self.collapse_fraction)
            W_new = W_new + epsilon * growing @ free[: growing.shape[1]]
        return TrialPoint(self._join(W_new, b), collapsing.shape[1], growing.shape[1])

    def _inner_tol(self, outer_grad: float | None) -> float:
        """L-BFGS's inner tolerance in its phase, Newton-CG's after."""
        if self._newton_phase:
            return super()._inner_tol(outer_grad)
        return ReducedNewton._inner_tol(self, outer_grad)


def _curved_span(candidates: torch.Tensor, curvature: torch.Tensor, chosen) -> torch.Tensor:
    """The eigenvectors (K, k) of ``curvature`` restricted to the span of the orthonormal
    ``candidates`` (K, m) whose eigenvalues ``chosen`` selects (a boolean function of them)."""
    if candidates.shape[1] == 0:
        return candidates
    values, vectors = torch.linalg.eigh(candidates.T @ curvature @ candidates)
    return candidates @ vectors[:, chosen(values)]


class TrialPoint(NamedTuple):
    """A point a trust-region step tries (flat, W first, then b) and how many directions of W
    it dropped and grew (:meth:`GramNewtonCG._trial_point`)."""

    theta: torch.Tensor
    dropped: int
    grown: int


class AcceptedStep(NamedTuple):
    """What the forcing rule of the next step knows of the last accepted trust-region point:
    the norm of the gradient in the classifier (W, b) where the step began, the norm its
    linear model predicted at the point (:meth:`_CGPath.point`), and the forcing term the step
    used."""

    grad_norm: float
    model_gradient: float
    forcing: float


class PathPoint(NamedTuple):
    """A point of the Steihaug path (:meth:`_CGPath.point`)."""

    step: torch.Tensor
    length: float  # in the trust region's norm
    predicted: float  # the model's decrease, -m(p)
    model_gradient: float  # |P(g + H p)|, the gradient the linear model predicts there


class _CGPath:
    r"""The Steihaug path: its segments (start point, :math:`M^{-1}` of it, H times it,
    direction, :math:`M^{-1}` of it, H times it), the step length that ends each segment
    (none for the last when CG stopped there at negative curvature, ``unbounded``), the
    gradient, for the model value, and the forcing term it was run to. Lengths are in the
    trust region's norm :math:`\sqrt{p^\top M^{-1}p}`."""

    def __init__(self, grad: torch.Tensor, forcing: float):
        self.grad = grad
        self.forcing = forcing
        self.segments: list[tuple] = []
        self.ends: list[float] = []
        # why CG stopped: "forcing", "tolerance", "boundary", "negative_curvature" or
        # "max_cg" (_MAX_CG directions)
        self.end = "max_cg"

    @property
    def unbounded(self) -> bool:
        """Whether the last segment has no end: CG stopped on it at negative curvature, so
        it goes on to the boundary."""
        return self.end == "negative_curvature"

    def point(self, radius: float) -> PathPoint:
        """Where the path leaves the ball of ``radius``, or its end inside it; steepest
        descent to the boundary if it has no segment (its model gradient then unknown, NaN:
        no product was made)."""
        if not self.segments:
            p = -self.grad * (radius / max(float(torch.linalg.vector_norm(self.grad)), 1e-300))
            return PathPoint(p, radius, float(torch.dot(self.grad, -p)), math.nan)
        for index, (start, M_start, H_start, direction, M_direction, H_direction) in enumerate(self.segments):
            last = index == len(self.segments) - 1
            end = None if (last and self.unbounded) else self.ends[index]
            tau = self._to_boundary(start, M_start, direction, M_direction, radius)
            if end is not None and tau >= end:
                if not last:
                    continue
                tau = end  # the end of CG, inside the ball
            p, M_p, Hp = start + tau * direction, M_start + tau * M_direction, H_start + tau * H_direction
            length = math.sqrt(max(float(torch.dot(p, M_p)), 0.0))
            return PathPoint(p, length, -float(torch.dot(self.grad, p) + 0.5 * torch.dot(p, Hp)),
                             float(torch.linalg.vector_norm(self.grad + Hp)))
        raise AssertionError("unreachable")

    @staticmethod
    def _to_boundary(start, M_start, direction, M_direction, radius: float) -> float:
        """The tau >= 0 at which start + tau direction has length ``radius`` (start inside)."""
        a = float(torch.dot(direction, M_direction))
        b = float(torch.dot(start, M_direction))
        c = float(torch.dot(start, M_start)) - radius * radius
        return (-b + math.sqrt(max(b * b - a * c, 0.0))) / a


def _identity_metric(method: NewtonCG):
    """M = I: plain conjugate gradients in a spherical trust region."""

    def metric(v):
        return v

    metric.inverse_norm = lambda v: float(torch.linalg.vector_norm(v))
    return metric


def _diagonal_metric(method: NewtonCG):
    r""":math:`M = S^{-2}`, S the square root of the diagonal of the classifier block of the
    objective's Hessian, :math:`\frac1n\sum_s w_s[\nabla^2\ell_s]_{cc}x_{s,k}^2 +
    \lambda_W` in the feature solver's frame
    (:meth:`~.feature_newton.FeatureSolver.curvature_diagonal`, one pass over the samples),
    :math:`\lambda_W` off the row space of W and :math:`\frac1n\sum_s
    w_s[\nabla^2\ell_s]_{cc} + \lambda_b` for the bias. It ignores the features' response
    (the Schur complement that makes the soft directions), so it evens out the stiff
    directions only; ``scripts/bench_outer.py`` measures it."""
    state, config, n = method.state, method.state.config, method.state.problem.n
    rows, bias = method.feature_solver.curvature_diagonal()
    method.work["preconditioner_passes"] += 1
    V = method.feature_solver.frame.V
    range_curvature = rows / n + config.lam_W
    bias_curvature = (bias / n + config.lam_b).clamp_min(1e-12)

    def scaled(v, power):
        D, db = method._split(v)
        rows = None
        if state.learn_W:
            D_V = D @ V
            rows = (range_curvature**power * D_V) @ V.T + config.lam_W**power * (D - D_V @ V.T)
        return method._join(rows, bias_curvature**power * db if state.learn_b else None)

    def metric(v):
        return scaled(v, -1.0)

    metric.inverse_norm = lambda v: math.sqrt(max(float(torch.dot(v, scaled(v, 1.0))), 0.0))
    return metric


def _gram_metric(method: NewtonCG):
    """The Gram-entry metric of :mod:`.gram_preconditioner` (one pass over the samples);
    with a fixed classifier only its bias block, so W is not factored."""
    state, config, n = method.state, method.state.config, method.state.problem.n
    solver = method.feature_solver
    sums = solver.gram_curvature(entries=state.learn_W)
    method.work["preconditioner_passes"] += 1
    gram = GramMetric(state.W, sums, n, config.lam_H, config.lam_W,
                      solver.loss.shift_invariant) if state.learn_W else None
    bias_inverse = bias_metric(sums, n, config.lam_H, config.lam_b) if state.learn_b else None

    def metric(v):
        D, db = method._split(v)
        return method._join(gram.apply_W(D) if state.learn_W else None,
                            bias_inverse * db if state.learn_b else None)

    metric.gram_sums = sums  # for the curvature off the row space (GramNewtonCG._trial_point)
    return metric


PRECONDITIONERS = {
    # plain conjugate gradients
    "none": _identity_metric,
    # the diagonal of the classifier block, features held fixed
    "diagonal": _diagonal_metric,
    # the curvature of every Gram entry and off the row space (.gram_preconditioner)
    "gram": _gram_metric,
}


def _power_forcing(method: NewtonCG, grad_norm: float) -> float:
    r""":math:`\eta = \min(\eta_{\max}, \|\nabla F\|^p)` (``forcing_max``, ``forcing_power``;
    Nocedal & Wright's (7.3) with the defaults 0.5 and 1/2): superlinear convergence where
    the quadratic model is accurate over the step."""
    return min(method.forcing_max, grad_norm**method.forcing_power)


def _eisenstat_walker_forcing(method: NewtonCG, grad_norm: float) -> float:
    r"""Eisenstat & Walker's choice 1 (Choosing the forcing terms in an inexact Newton method,
    SIAM J. Sci. Comput. 17, 1996, (2.1) with the safeguard (2.6)): how far the last step's
    linear model missed the gradient it reached,
    :math:`\eta_k = |\,\|g_k\| - \|g_{k-1} + H_{k-1}p_{k-1}\|\,| / \|g_{k-1}\|`, but no
    less than :math:`\eta_{k-1}^{(1+\sqrt5)/2}` where that is above 0.1, and at most
    ``forcing_max``; the power rule at the first step (:attr:`NewtonCG.last_accepted` empty).

    Why: where F is far from its quadratic model over a Newton step, conjugate gradients
    run to the power rule's residual buy digits the step then loses. In one-off runs of
    ``"newton_gram"`` on random pairs with the power rule, the gradient after a step was
    10 to 50 times the model's prediction at K = d = 100 and 200 and 29 times at
    K = d = 1000; a residual far below that miss costs CG directions (each a Hessian
    product, a pass over the samples) and gains nothing. This rule asks for about the
    residual at which the model's own error starts (``docs/performance.md`` has the
    comparison).

    The norms are Euclidean, of the gradient in (W, b) and of the model's gradient off the
    rotations (:meth:`_CGPath.point`; the two differ by the features' error along the
    rotations, below the miss this measures); as the power rule's, the term then bounds CG's
    residual relative to the gradient in the metric's norm (:meth:`NewtonCG.steihaug`)."""
    last = method.last_accepted
    if last is None or not math.isfinite(last.model_gradient) or not last.grad_norm > 0:
        return _power_forcing(method, grad_norm)
    eta = abs(grad_norm - last.model_gradient) / last.grad_norm
    safeguard = last.forcing**_FORCING_SAFEGUARD_POWER
    if safeguard > 0.1:
        eta = max(eta, safeguard)
    return min(method.forcing_max, eta)


FORCING_RULES = {
    # min(forcing_max, |grad F|^forcing_power) at every step
    "power": _power_forcing,
    # how far the last step's linear model missed (the power rule at the first step)
    "eisenstat_walker": _eisenstat_walker_forcing,
}
