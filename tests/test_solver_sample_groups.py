"""Samples with one soft target solved once (ufm.solver.sample_groups).

The groups are checked against the dense soft targets compared directly, and a grouped solve
against the solve of every sample on its own (the same loss declaring ``target_only`` False)
and against the gradient of the full objective in (H, W) over all samples by autograd.
"""

from dataclasses import replace

import pytest
import torch
from solver_support import newton_gram_at_start, random_direction

from ufm import get_loss
from ufm.losses.softmax import SoftmaxFamily
from ufm.losses.squared_error import SquaredError
from ufm.solver import UFMConfig, sample_groups, solve
from ufm.solver.newton_cg import GramNewtonCG
from ufm.solver.problem import build_problem
from ufm.solver.sample_groups import group_samples, target_keys, weight_quantum


def _dense_targets(classes, weights, K):
    return torch.zeros(classes.shape[0], K, dtype=torch.float64).scatter_add_(
        1, classes, weights.to(torch.float64))


def _partition(labels):
    """The samples' partition as a set of frozensets of sample indices."""
    members = {}
    for sample, label in enumerate(labels):
        members.setdefault(label, []).append(sample)
    return {frozenset(group) for group in members.values()}


@pytest.mark.parametrize("fields", [
    {"K": 6, "d": 6, "num_lams": 7},
    {"K": 7, "d": 7, "pairs": "random", "num_pairs": 15, "num_lams": 5},
    {"K": 5, "d": 6, "mixup_points": 3, "num_lams": 4},
])
def test_the_groups_are_the_samples_with_one_dense_soft_target(fields):
    problem = build_problem(UFMConfig(**fields))
    groups = group_samples(problem.classes, problem.weights, problem.loss)
    targets = _dense_targets(problem.classes, problem.weights, problem.config.K)
    # independent: samples whose dense targets agree to 1e-14, everything else 1e-3 apart
    close = (targets[:, None] - targets[None]).abs().amax(-1) <= 1e-14
    expected = {frozenset(torch.nonzero(row).squeeze(1).tolist()) for row in close}
    if groups is None:
        assert all(len(group) == 1 for group in expected)
        return
    assert _partition(groups.inverse.tolist()) == expected
    # each group's first sample represents it, and the groups keep the samples' order
    first = [min(group) for group in expected]
    assert sorted(first) == groups.representatives.tolist()
    assert torch.equal(groups.inverse[groups.representatives], torch.arange(len(first)))
    assert torch.equal(groups.counts, torch.bincount(groups.inverse))


def test_targets_a_few_units_in_the_last_place_apart_are_one_and_others_are_not():
    classes = torch.tensor([[0, 1], [1, 0], [0, 1], [0, 1], [2, 2], [2, 3], [3, 2]])
    lam = torch.tensor([0.35000000000000003, 0.65, 0.35 + 1e-12, 0.35, 0.3, 1.0, 0.0],
                       dtype=torch.float64)
    weights = torch.stack([lam, 1 - lam], 1)
    keys = target_keys(classes, weights)
    assert torch.equal(keys[0], keys[1]) and torch.equal(keys[0], keys[3])
    assert not torch.equal(keys[0], keys[2])  # 1e-12 apart: another target
    # pure class 2: a same-class pair and lam = 1 or 0 with any partner
    assert torch.equal(keys[4], keys[5]) and torch.equal(keys[4], keys[6])
    assert weight_quantum(torch.float64) < 1e-14
    groups = group_samples(classes, weights, get_loss("ce"))
    assert groups.inverse.tolist() == [0, 0, 1, 0, 2, 2, 2]
    assert groups.group_weights(torch.arange(1.0, 8.0)).tolist() == [7.0, 3.0, 18.0]


def test_float32_mirror_samples_are_one_target_too():
    lam = torch.tensor([0.35, 0.65, 0.35 + 1e-5], dtype=torch.float32)
    weights = torch.stack([lam, 1 - lam], 1)
    assert float(weights[0, 0]) != float(weights[1, 1])  # one rounding apart in float32
    keys = target_keys(torch.tensor([[0, 1], [1, 0], [0, 1]]), weights)
    assert torch.equal(keys[0], keys[1]) and not torch.equal(keys[0], keys[2])


def test_a_loss_that_does_not_declare_target_only_is_solved_sample_by_sample(monkeypatch):
    problem = build_problem(UFMConfig(K=4, d=4, num_lams=3))
    assert group_samples(problem.classes, problem.weights, problem.loss) is not None
    monkeypatch.setattr(SoftmaxFamily, "target_only", False)
    assert group_samples(problem.classes, problem.weights, problem.loss) is None
    distinct = torch.tensor([[0, 1], [1, 2]])
    assert group_samples(distinct, torch.full((2, 2), 0.5), get_loss("mse")) is None


def _autograd_gradient_norm(config, result) -> float:
    """sqrt(mean_s |n dL/dh_s|^2 + |dL/dW|^2 + |dL/db|^2) of the objective over all samples
    by autograd in float64 (the driver's scale-free norm), W and b where they are learned."""
    problem = build_problem(config)
    n = problem.n
    H = result.H.clone().requires_grad_(True)
    W = result.W.clone().requires_grad_(True)
    b = None if result.b is None else result.b.clone().requires_grad_(True)
    logits = H @ W.T if b is None else H @ W.T + b
    values = problem.loss.mixture_value(logits, problem.classes, problem.weights)
    weight = problem.sample_weight
    if weight is None:
        weight = torch.ones(n, dtype=torch.float64)
    objective = ((weight * (values + 0.5 * config.lam_H * (H * H).sum(1))).sum() / n
                 + 0.5 * config.lam_W * (W * W).sum())
    if b is not None:
        objective = objective + 0.5 * config.lam_b * (b * b).sum()
    learned = [W] if config.classifier == "learned" else []
    grads = torch.autograd.grad(objective, [H, *learned] + ([b] if b is not None else []))
    feature = (n * grads[0]).pow(2).sum(1).mean()
    return float((feature + sum(g.pow(2).sum() for g in grads[1:])).sqrt())


@pytest.mark.parametrize("fields", [
    {"K": 6, "d": 6, "num_lams": 5, "classifier": "learned", "method": "newton_gram"},
    {"K": 6, "d": 6, "num_lams": 5, "classifier": "learned", "method": "newton"},
    {"K": 7, "d": 7, "pairs": "random", "num_pairs": 16, "classifier": "learned",
     "bias": True, "lam_b": 1e-2, "imbalance_ratio": 10.0, "minority_classes": 2},
    {"K": 6, "d": 6, "num_lams": 5, "classifier": "learned", "loss": "mse"},
])
def test_a_grouped_solve_is_the_solve_of_every_sample_on_its_own(fields, monkeypatch):
    config = UFMConfig(**fields, tol=1e-10)
    problem = build_problem(config)
    assert group_samples(problem.classes, problem.weights, problem.loss) is not None
    grouped = solve(config)
    with monkeypatch.context() as patch:
        patch.setattr(SoftmaxFamily, "target_only", False)
        patch.setattr(SquaredError, "target_only", False)
        alone = solve(config)
    assert grouped.summary["stop_reason"] == alone.summary["stop_reason"] == "converged"
    loss = alone.summary["loss"]
    assert abs(grouped.summary["loss"] - loss) <= 1e-12 * abs(loss)
    # F is invariant under rotations of feature space: compare W W^T and the logits
    assert float((grouped.W @ grouped.W.T - alone.W @ alone.W.T).abs().max()) <= 1e-8
    logits = grouped.H @ grouped.W.T
    assert grouped.H.shape == alone.H.shape == (problem.n, config.d)
    # two solutions to gradient 1e-10, along soft directions (a few hundredths of lam_W = 5e-3)
    assert float((logits - alone.H @ alone.W.T).abs().max()) <= 1e-7
    assert _autograd_gradient_norm(config, grouped) <= 1e-9


def test_a_fixed_etf_grouped_solve_is_at_the_exact_theory():
    config = UFMConfig(K=8, d=9, num_lams=7, tol=1e-12)
    problem = build_problem(config)
    groups = group_samples(problem.classes, problem.weights, problem.loss)
    assert groups is not None and groups.counts.numel() < problem.n / 2
    result = solve(config)
    assert result.summary["theory_distance"] <= 1e-12
    assert max(result.summary["theory_distance_per_lam"].values()) <= 1e-12
    assert _autograd_gradient_norm(config, result) <= 1e-11


def test_a_checkpoint_with_a_row_per_sample_resumes_grouped(tmp_path, monkeypatch):
    """A checkpoint written before samples were grouped holds the features of every sample;
    the grouped run keeps its groups' first samples' and reaches the same optimum."""
    config = UFMConfig(K=6, d=6, num_lams=5, classifier="learned", tol=1e-10,
                       mixed_precision=False)
    straight = solve(config)
    with monkeypatch.context() as patch:
        patch.setattr(SoftmaxFamily, "target_only", False)
        stopped = solve(replace(config, max_iters=3), checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert stopped.stop_reason == "max_iters"
    assert saved["features"]["X"].shape[0] == stopped.summary["n"]
    resumed = solve(config, checkpoint_dir=tmp_path, resume=True)
    assert resumed.stop_reason == "converged"
    assert abs(resumed.summary["loss"] - straight.summary["loss"]) <= 1e-12
    assert float((resumed.W @ resumed.W.T - straight.W @ straight.W.T).abs().max()) <= 1e-8


@pytest.mark.parametrize("fields", [
    {},
    # the samples of one target weigh differently: a pure class by its partner's size
    {"imbalance_ratio": 10.0, "minority_classes": 2, "bias": True, "lam_b": 1e-2},
    {"imbalance_ratio": 10.0, "minority_classes": 2, "pairing": "class"},
])
def test_a_grouped_subsample_is_the_same_samples_as_before(fields, monkeypatch):
    """Newton-CG's subsampled Hessian products take every 4th sample as stored; grouped, each
    group weighs the samples of it that this picks, by their number and total weight, so the
    products are those of the samples solved one by one."""
    config = UFMConfig(K=6, d=6, num_lams=5, classifier="learned", mixed_precision=False,
                       **fields)
    grouped = newton_gram_at_start(config, monkeypatch)
    alone = newton_gram_at_start(config, monkeypatch, grouped=False)
    monkeypatch.setattr(GramNewtonCG, "subsample_min_samples", 1)  # subsamples at any size
    assert grouped.feature_solver.n < alone.feature_solver.n
    v = random_direction(config)
    for _ in range(grouped.hessian_stride):
        subsample, reference = grouped._product_samples(), alone._product_samples()
        assert subsample.n < reference.n < alone.feature_solver.n
        assert subsample.samples == reference.n
        product, expected = grouped.hessian_vector(v, subsample), alone.hessian_vector(v, reference)
        assert float((product - expected).norm()) <= 1e-10 * float(expected.norm())


def test_keys_that_share_a_hash_are_still_told_apart(monkeypatch):
    """The groups come from a hash of each key, checked row by row: with every hash equal
    (all collide) the groups are those of the keys compared whole."""
    problem = build_problem(UFMConfig(K=5, d=5, num_lams=5))
    expected = group_samples(problem.classes, problem.weights, problem.loss)
    monkeypatch.setattr(sample_groups, "_row_hashes",
                        lambda keys: torch.zeros(keys.shape[0], dtype=torch.int64))
    colliding = group_samples(problem.classes, problem.weights, problem.loss)
    for name in ("representatives", "inverse", "counts"):
        assert torch.equal(getattr(colliding, name), getattr(expected, name))
