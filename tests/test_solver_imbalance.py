"""Class imbalance in the UFM solver: sample weights n_c n_c', the minority cosine, refusals.

The weighted objective is checked against an autograd gradient of its own definition, the
two methods against each other, and the fixed-ETF optimum against the balanced one (the
problem separates per sample, so the weights cannot move it).
"""

from __future__ import annotations

import pytest
import torch

import ufm
from ufm.imbalance import block_etf_distance, class_sizes, minority_cosine, pair_weight
from ufm.solver.problem import build_problem

LEARNED = dict(K=6, d=8, classifier="learned", num_lams=5, lam_W=5e-3)


def _weighted_objective(config, H, W):
    """(1/n) sum_s w_s (loss_s + lam_H/2 |h_s|^2) + lam_W/2 |W|^2, from its definition."""
    problem = build_problem(config)
    sizes = class_sizes(config.K, config.imbalance_ratio, config.minority_classes)
    if config.pairing == "sample":
        weight = sizes[problem.c] * sizes[problem.c_prime]
    else:
        weight = sizes[problem.c]
    weight = weight / weight.mean()
    logits = H @ W.T
    log_p = torch.log_softmax(logits, dim=1)
    loss = -(problem.lam * log_p.gather(1, problem.c[:, None]).squeeze(1)
             + (1 - problem.lam) * log_p.gather(1, problem.c_prime[:, None]).squeeze(1))
    phi = loss + 0.5 * config.lam_H * (H * H).sum(1)
    return (weight * phi).mean() + 0.5 * config.lam_W * (W * W).sum()


@pytest.mark.parametrize("pairing", ["sample", "class"])
def test_learned_solution_is_stationary_for_the_weighted_objective(pairing):
    config = ufm.UFMConfig(**LEARNED, imbalance_ratio=8.0, minority_classes=2, pairing=pairing, tol=1e-10)
    result = ufm.solve(config)
    assert result.summary["stop_reason"] == "converged"
    H = result.H.clone().requires_grad_(True)
    W = result.W.clone().requires_grad_(True)
    grad_H, grad_W = torch.autograd.grad(_weighted_objective(config, H, W), (H, W))
    n = H.shape[0]
    # per-sample feature gradients n dL/dh_s / w_s and the classifier gradient vanish
    assert float(grad_W.norm()) < 1e-8
    assert float((n * grad_H).norm(dim=1).max()) < 1e-6
    # and the imbalance is felt: the balanced optimum is not stationary for this objective
    balanced = ufm.solve(ufm.UFMConfig(**LEARNED, tol=1e-10))
    W0 = balanced.W.clone().requires_grad_(True)
    (grad_balanced,) = torch.autograd.grad(_weighted_objective(config, balanced.H, W0), (W0,))
    assert float(grad_balanced.norm()) > 1e-4


def test_newton_and_gradient_descent_agree_under_imbalance():
    common = dict(LEARNED, K=4, d=4, num_lams=3, imbalance_ratio=5.0, minority_classes=2)
    newton = ufm.solve(ufm.UFMConfig(**common, tol=1e-10))
    gd = ufm.solve(ufm.UFMConfig(**common, method="gd", tol=1e-7, max_iters=100000))
    assert gd.summary["stop_reason"] == "converged"
    # W is unique up to a rotation of the feature space: compare the Gram matrices
    gram_newton, gram_gd = newton.W @ newton.W.T, gd.W @ gd.W.T
    assert float((gram_newton - gram_gd).norm() / gram_newton.norm()) < 1e-5
    assert abs(newton.summary["loss"] - gd.summary["loss"]) < 1e-9


def test_ratio_one_is_the_balanced_problem():
    # a ratio a rounding step above 1 takes the weighted path with weights 1 + O(1e-13); with
    # L-BFGS, whose iterates move continuously with the weights, the two runs stay within
    # rounding of each other all the way (a trust region's accept/reject can branch on it)
    balanced = ufm.solve(ufm.UFMConfig(**LEARNED, tol=1e-10, method="newton"))
    nearly = ufm.solve(ufm.UFMConfig(**LEARNED, tol=1e-10, imbalance_ratio=1.0 + 1e-13,
                                     minority_classes=3, method="newton"))
    assert build_problem(nearly.config).sample_weight is not None
    # (H, W) is unique up to a rotation of the feature space: compare what a rotation keeps,
    # the Gram matrix of W, the logits and the feature norms
    for a, b in [(balanced.W @ balanced.W.T, nearly.W @ nearly.W.T),
                 (balanced.H @ balanced.W.T, nearly.H @ nearly.W.T),
                 (balanced.H.norm(dim=1), nearly.H.norm(dim=1))]:
        assert float((a - b).abs().max()) < 1e-12
    assert abs(balanced.summary["loss"] - nearly.summary["loss"]) < 1e-12
    assert balanced.summary["etf_distance_W"] < 1e-6


def test_minority_cosine_rises_with_the_ratio():
    cosines = []
    for ratio in (1.0, 4.0, 16.0, 64.0):
        summary = ufm.solve(ufm.UFMConfig(**LEARNED, tol=1e-9, imbalance_ratio=ratio, minority_classes=3)).summary
        cosines.append(summary["minority_cosine"])
        assert len(summary["row_norms"]) == 6
    assert abs(cosines[0] - (-1 / 5)) < 1e-6  # an ETF at ratio 1
    assert all(b > a + 1e-3 for a, b in zip(cosines, cosines[1:]))


def test_fixed_etf_optimum_does_not_depend_on_the_weights():
    balanced = ufm.solve(ufm.UFMConfig(K=5, d=6, num_lams=7, tol=1e-12))
    skewed = ufm.solve(ufm.UFMConfig(K=5, d=6, num_lams=7, tol=1e-12, imbalance_ratio=50.0, minority_classes=2))
    assert float((balanced.H - skewed.H).norm() / balanced.H.norm()) < 1e-12
    assert skewed.summary["theory_distance"] < 1e-12
    # but the objective is the weighted one
    assert abs(skewed.summary["loss"] - balanced.summary["loss"]) > 1e-6


def test_mixtures_of_three_classes_take_product_weights():
    config = ufm.UFMConfig(K=5, d=6, mixup_points=3, pairs="all", num_lams=3, imbalance_ratio=3.0,
                           minority_classes=2)
    problem = build_problem(config)
    sizes = class_sizes(5, 3.0, 2)
    expected = sizes[problem.classes].prod(1)
    expected = expected / expected.mean()
    assert float((problem.sample_weight - expected).abs().max()) < 1e-14
    assert ufm.solve(config).summary["theory_distance"] < 1e-10


def test_weights_and_measures_of_the_classifier():
    w = pair_weight(class_sizes(4, 10.0, 1), torch.tensor([[0, 0], [0, 3], [3, 3]]))
    assert torch.allclose(w, torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64) * 3 / 1.11)
    W = ufm.simplex_etf(5, 7)
    assert abs(minority_cosine(W, 3) + 0.25) < 1e-14
    assert block_etf_distance(W, torch.tensor([0, 2, 4])) < 1e-14
    collapsed = W.clone()
    collapsed[3] = collapsed[4]
    assert abs(minority_cosine(collapsed, 2) - 1.0) < 1e-14
    assert block_etf_distance(collapsed, torch.tensor([3, 4])) > 0.1
    assert minority_cosine(W, 1) is None


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(imbalance_ratio=0.5, minority_classes=1), r"imbalance_ratio must lie in \[1, inf\), got 0.5"),
        (dict(imbalance_ratio=2.0, minority_classes=6), "minority_classes must be <= 5"),
        (dict(imbalance_ratio=2.0, minority_classes=-1), "minority_classes must be >= 0"),
        (dict(pairing="both"), "pairing"),
        (dict(mixup_points=3, pairs="all", pairing="class"), "pairing = 'class'"),
    ],
)
def test_bad_imbalance_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ufm.UFMConfig(K=6, d=8, **fields)
