"""The exact reduced theory of minority collapse (ufm.theory.minority) against independent
computations: the full learned solver, a joint L-BFGS on (H, W) written here, the objective of
perturbed classifiers, and the values stated in the issue that asked for the theory."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ufm
from ufm.imbalance import class_sizes, pair_weight
from ufm.nets.coefficient_curves import ce_curves
from ufm.theory.minority import (
    CELL_GROUPS,
    cell_amplification,
    imbalance_theory,
    minority_collapse_threshold,
)

LAMS11 = tuple(i / 10 for i in range(11))


def _learned(K, k_B, rho, lams, pairing="sample", d=None, seed=0, loss="ce", W_init=None,
             classifier="learned"):
    config = ufm.UFMConfig(K=K, d=d or K, classifier=classifier, imbalance_ratio=rho,
                           minority_classes=k_B, lam_H=5e-3, lam_W=5e-3, lams=tuple(lams),
                           pairing=pairing, loss=loss, tol=1e-12, max_iters=20000,
                           dtype="float64", seed=seed)
    return ufm.solve(config, W_init=W_init)


@pytest.mark.parametrize("rho, expected", [(1.0, -1 / 3), (10.0, 0.2329), (100.0, 0.7568)])
def test_minority_cosine_at_the_stated_values(rho, expected):
    # The values an independent L-BFGS reference gave to four digits (K = 4, two minority
    # classes, lam_H = lam_W = 5e-3, 11 lams, sample pairing).
    theory = imbalance_theory(4, 2, rho, 5e-3, 5e-3, LAMS11)
    assert abs(theory.minority_cosine - expected) < 5e-5


@pytest.mark.parametrize("K, k_B, rho, lams, pairing, d", [
    (4, 2, 10.0, LAMS11, "sample", 4),
    (4, 2, 100.0, LAMS11, "sample", 3),  # d = K - 1 suffices: G has rank K - 1
    (6, 2, 16.0, LAMS11, "class", 6),
    (5, 3, 8.0, (1.0,), "sample", 5),  # plain training
    (6, 1, 20.0, (0.0, 0.3, 0.5, 1.0), "sample", 6),  # one minority class
    (4, 2, 1e5, LAMS11, "sample", 4),  # beyond exact collapse: mu_B = 0, cosine 1
])
def test_gram_matrix_equals_the_full_learned_solver(K, k_B, rho, lams, pairing, d):
    theory = imbalance_theory(K, k_B, rho, 5e-3, 5e-3, lams, pairing=pairing)
    result = _learned(K, k_B, rho, lams, pairing, d=d, seed=3)
    G = (result.W @ result.W.T).to(torch.float64)
    assert result.summary["grad_norm"] < 1e-10
    assert float((G - theory.gram()).abs().max()) < 1e-8
    assert abs(result.summary["loss"] - theory.objective) < 1e-11


def test_exact_collapse_beyond_a_finite_ratio():
    collapsed = imbalance_theory(4, 2, 1e5, 5e-3, 5e-3, LAMS11)
    assert collapsed.eigenvalues["minority"] == 0.0
    assert collapsed.minority_cosine == 1.0
    below = imbalance_theory(4, 2, 1e3, 5e-3, 5e-3, LAMS11)
    assert 0 < below.eigenvalues["minority"] and below.minority_cosine < 1.0


def _joint_objective(H, W, c, cp, lam, weight, lam_H, lam_W):
    z = H @ W.T
    target = lam[:, None] * F.one_hot(c, W.shape[0]) + (1 - lam)[:, None] * F.one_hot(cp, W.shape[0])
    per_sample = -(target * torch.log_softmax(z, dim=1)).sum(1) + 0.5 * lam_H * (H * H).sum(1)
    return (weight * per_sample).mean() + 0.5 * lam_W * (W * W).sum()


def test_against_an_independent_joint_minimisation():
    """Every (c, c', lam) sample with its own feature, (H, W) minimised jointly from a random
    start by torch's L-BFGS and then Newton's method on the exact autograd Hessian (its
    pseudo-inverse: rotations W U leave the objective unchanged): nothing of ufm's solver or
    theory is used."""
    K, k_B, rho, d = 4, 2, 10.0, 4
    c = torch.arange(K).repeat_interleave(K).repeat_interleave(len(LAMS11))
    cp = torch.arange(K).repeat(K).repeat_interleave(len(LAMS11))
    lam = torch.tensor(LAMS11, dtype=torch.float64).repeat(K * K)
    weight = pair_weight(class_sizes(K, rho, k_B), torch.stack([c, cp], 1))
    n = len(c)

    def objective(x):
        return _joint_objective(x[: n * d].reshape(n, d), x[n * d:].reshape(K, d), c, cp, lam,
                                weight, 5e-3, 5e-3)

    generator = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(n * d + K * d, generator=generator, dtype=torch.float64)).requires_grad_()
    optimiser = torch.optim.LBFGS([x], lr=1, max_iter=400, history_size=50,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        value = objective(x)
        value.backward()
        return value

    optimiser.step(closure)
    x = x.detach()
    for _ in range(30):
        grad = torch.func.grad(objective)(x)
        if float(grad.norm()) < 1e-14:
            break
        x = x - torch.linalg.pinv(torch.func.hessian(objective)(x), hermitian=True,
                                  rtol=1e-12) @ grad
    theory = imbalance_theory(K, k_B, rho, 5e-3, 5e-3, LAMS11)
    W = x[n * d:].reshape(K, d)
    assert float(torch.func.grad(objective)(x).norm()) < 1e-12
    assert abs(float(objective(x)) - theory.objective) < 1e-13
    assert float((W @ W.T - theory.gram()).abs().max()) < 1e-10


def test_no_nearby_classifier_does_better():
    """The objective at the theory's W, and at W with each eigenvalue moved by 1%, each
    with the features solved exactly by the fixed-classifier solver: the theory's is lowest
    and equals its reported objective."""
    K, k_B, rho = 5, 2, 30.0
    theory = imbalance_theory(K, k_B, rho, 5e-3, 5e-3, LAMS11)
    W = theory.classifier()
    best = _learned(K, k_B, rho, LAMS11, W_init=W, classifier="fixed").summary["loss"]
    assert abs(best - theory.objective) < 1e-12
    values, vectors = torch.linalg.eigh(W @ W.T)
    for k in range(K):
        for factor in (0.99, 1.01):
            scaled = values.clone()
            scaled[k] *= factor
            if scaled[k] < 1e-9:
                continue
            G = (vectors * scaled) @ vectors.T
            e, V = torch.linalg.eigh(G)
            W_moved = V * e.clamp(min=0).sqrt()
            moved = _learned(K, k_B, rho, LAMS11, W_init=W_moved, classifier="fixed")
            assert moved.summary["loss"] > best


def test_balanced_is_a_simplex_etf_for_either_pairing():
    for pairing in ("sample", "class"):
        theory = imbalance_theory(6, 2, 1.0, 5e-3, 5e-3, LAMS11, pairing=pairing)
        mu = list(theory.eigenvalues.values())
        assert max(mu) - min(mu) < 1e-12 * max(mu)
        assert abs(theory.minority_cosine + 1 / 5) < 1e-13
        assert abs(theory.cross_cosine + 1 / 5) < 1e-13


def test_class_pairing_keeps_the_minority_rows_apart():
    sample = imbalance_theory(10, 5, 64.0, 5e-3, 5e-3, LAMS11)
    plain = imbalance_theory(10, 5, 64.0, 5e-3, 5e-3, (1.0,))
    paired = imbalance_theory(10, 5, 64.0, 5e-3, 5e-3, LAMS11, pairing="class")
    assert sample.minority_cosine > plain.minority_cosine > 0 > paired.minority_cosine


@pytest.mark.parametrize("loss, params", [("label_smoothing", {"eps": 0.1}), ("logit_adjusted", {})])
def test_other_softmax_losses_against_the_solver(loss, params):
    theory = imbalance_theory(4, 2, 10.0, 5e-3, 5e-3, LAMS11, loss=loss, loss_params=params)
    config = ufm.UFMConfig(K=4, d=4, classifier="learned", imbalance_ratio=10.0,
                           minority_classes=2, lams=LAMS11, loss=loss, loss_params=params,
                           tol=1e-12, max_iters=20000, dtype="float64")
    result = ufm.solve(config)
    G = (result.W @ result.W.T).to(torch.float64)
    assert float((G - theory.gram()).abs().max()) < 1e-8


def test_threshold_is_where_the_cosine_crosses_zero():
    found = minority_collapse_threshold(4, 2, 5e-3, 5e-3, LAMS11)
    assert found.limit_cosine == 1.0 and abs(found.balanced_cosine + 1 / 3) < 1e-13
    assert 1.0 < found.threshold < 10.0
    at = imbalance_theory(4, 2, found.threshold, 5e-3, 5e-3, LAMS11).minority_cosine
    assert abs(at) < 1e-10
    assert imbalance_theory(4, 2, found.threshold * 1.01, 5e-3, 5e-3, LAMS11).minority_cosine > 0
    never = minority_collapse_threshold(10, 5, 5e-3, 5e-3, LAMS11, pairing="class")
    assert never.threshold is None and never.limit_cosine < 0


@pytest.mark.parametrize("kwargs, message", [
    ({"imbalance_ratio": 0.5}, "imbalance_ratio must lie in [1, inf), got 0.5"),
    ({"minority_classes": 0}, "minority_classes must be >= 1"),
    ({"minority_classes": 4}, "minority_classes must be <= 3"),
    ({"pairing": "both"}, "pairing must be one of sample, class"),
    ({"lams": [0.5, 1.5]}, "lams must be a non-empty list of numbers in [0, 1]"),
    ({"loss": "mse"}, "needs a softmax-family loss"),
    ({"lam_H": 0.0}, "lam_H must lie in (0, inf), got 0.0"),
    ({"imbalance_ratio": float("inf"), "loss": "logit_adjusted"}, "give a finite imbalance_ratio"),
])
def test_bad_input_is_refused(kwargs, message):
    arguments = {"K": 4, "minority_classes": 2, "imbalance_ratio": 10.0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        imbalance_theory(**arguments)


def test_public_name_and_realisation():
    theory = ufm.imbalance_theory(5, 2, 4.0, lams=LAMS11)
    W = theory.classifier(d=7)
    assert W.shape == (5, 7)
    assert float((W @ W.T - theory.gram()).abs().max()) < 1e-12
    assert float(W.sum(0).abs().max()) < 1e-12  # the rows sum to zero


def _solver_amplification(result, k_B):
    """The amplification per group of cells of a solved UFM, computed here from its features
    alone: each feature centred by the mean of the clean class features, its least-squares
    coefficients on the rows of its classes (numpy's lstsq), every cell of a group averaged,
    normalised by the mean same-class coefficient of the group's classes."""
    H, W = result.H.numpy(), result.W.numpy()
    c, cp, lam = result.c.numpy(), result.c_prime.numpy(), result.lam.numpy()
    K = W.shape[0]
    centre = np.mean([H[(c == k) & (cp == k)].mean(0) for k in range(K)], axis=0)

    def coefficients(k, kp):
        h = H[(c == k) & (cp == kp) & (lam == 0.5)][0] - centre
        rows = W[[k]] if k == kp else W[[k, kp]]
        return np.linalg.lstsq(rows.T, h, rcond=None)[0]

    minority = set(range(K - k_B, K))
    same = {k: coefficients(k, k)[0] for k in range(K)}
    found = {}
    for count, name in enumerate(CELL_GROUPS):
        cells = [(k, kp) for k in range(K) for kp in range(k + 1, K)
                 if (k in minority) + (kp in minority) == count]
        classes = {k for cell in cells for k in cell}
        found[name] = (np.mean([coefficients(*cell).sum() for cell in cells])
                       / np.mean([same[k] for k in classes]))
    return found


@pytest.mark.parametrize("K, k_B, rho, pairing", [(4, 2, 10.0, "sample"), (5, 2, 16.0, "class"),
                                                   (5, 3, 30.0, "sample")])
def test_cell_amplification_equals_the_full_solvers_features(K, k_B, rho, pairing):
    theory = imbalance_theory(K, k_B, rho, 5e-3, 5e-3, LAMS11, pairing=pairing)
    found = cell_amplification(theory)
    expected = _solver_amplification(_learned(K, k_B, rho, LAMS11, pairing, seed=3), k_B)
    for name in CELL_GROUPS:
        assert found.amplification[name] == pytest.approx(expected[name], abs=1e-7), name
    # the groups differ once the classes are imbalanced
    values = list(found.amplification.values())
    assert max(values) - min(values) > 0.05


def test_balanced_cell_amplification_is_the_balanced_optimums():
    theory = imbalance_theory(6, 2, 1.0, 0.05, 0.01, LAMS11)
    a, b = ce_curves(6, theory.eigenvalues["between"], [0.5], 0.05)
    for value in cell_amplification(theory).amplification.values():
        assert value == pytest.approx(float(a[0] + b[0]), rel=1e-9)


def test_cell_amplification_refuses_what_has_no_mixed_feature():
    with pytest.raises(ValueError, match="plain training"):
        cell_amplification(imbalance_theory(4, 2, 10.0, lams=[1.0]))
    with pytest.raises(ValueError, match="imbalance_ratio = inf"):
        cell_amplification(imbalance_theory(4, 2, math.inf, lams=LAMS11))
    one = cell_amplification(imbalance_theory(4, 1, 10.0, lams=LAMS11))
    assert one.amplification["minority_minority"] is None  # one minority class: no such cell
    assert one.amplification["majority_majority"] > 0


# -- the SymPy derivation (ufm.symbolic, step 10) -----------------------------------------------


@pytest.mark.parametrize("k_A, k_B", [(3, 2), (2, 3), (4, 1), (1, 3)])
def test_symbolic_minority_steps_are_proven(k_A, k_B):
    from ufm import symbolic as sym

    assert sym.check_gram_spectrum(k_A, k_B) is True
    assert sym.check_gram_entries(k_A, k_B) is True
    assert sym.check_feature_norm(k_A, k_B) is True
    assert sym.check_cell_forms(k_A, k_B) is True


def test_symbolic_envelope_is_proven_and_a_wrong_one_is_not():
    import sympy as sp

    from ufm import symbolic as sym

    assert sym.check_envelope() is True
    # The Gram matrix with the between-group direction taken as 1_A - 1_B (not normalised
    # by the group sizes) is not an eigenvector: G e != mu_0 e for unequal groups.
    G = sym.minority_gram(3, 2)
    wrong = sp.Matrix([1, 1, 1, -1, -1])
    mu_0 = sp.Symbol("mu_0", positive=True)
    assert any(sp.simplify(entry) != 0 for entry in G * wrong - mu_0 * wrong)


def test_the_numbers_follow_the_symbolic_gram():
    import sympy as sp

    from ufm import symbolic as sym

    theory = imbalance_theory(5, 2, 7.0, 5e-3, 5e-3, LAMS11)
    mu = theory.eigenvalues
    G = sym.minority_gram(3, 2).subs({sp.Symbol("mu_A", positive=True): mu["majority"],
                                      sp.Symbol("mu_B", positive=True): mu["minority"],
                                      sp.Symbol("mu_0", positive=True): mu["between"]})
    G = torch.tensor([[float(v) for v in row] for row in G.tolist()], dtype=torch.float64)
    assert float((G - theory.gram()).abs().max()) < 1e-14


def test_theory_command_prints_and_writes_the_imbalance_table(tmp_path, capsys):
    from ufm.cli import main
    from ufm.io import read_json

    out = tmp_path / "imbalance"
    code = main(["theory", "--K", "6", "--minority-classes", "2", "--imbalance-ratio", "8",
                 "--lams", "0", "0.25", "0.5", "0.75", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mixup, class pairing" in printed and "plain training" in printed
    rows = {row["kind"]: row for row in read_json(out / "theory.json")["rows"]}
    lams = (0.0, 0.25, 0.5, 0.75, 1.0)
    for kind, pairing, grid in (("mixup, sample pairing", "sample", lams),
                                ("mixup, class pairing", "class", lams),
                                ("plain training", "sample", (1.0,))):
        expected = imbalance_theory(6, 2, 8.0, 5e-3, 5e-3, grid, pairing=pairing)
        assert abs(rows[kind]["minority_cosine"] - expected.minority_cosine) < 1e-14
        assert abs(rows[kind]["objective"] - expected.objective) < 1e-14


@pytest.mark.parametrize("arguments, message", [
    (["--minority-classes", "6"], "minority_classes must be <= 5"),
    (["--minority-classes", "2", "--imbalance-ratio", "0.5"], "imbalance_ratio must lie in"),
    (["--minority-classes", "2", "--mixup-points", "3"], "mixup_points must be 2"),
    (["--minority-classes", "2", "--loss", "mse"], "needs a softmax-family loss"),
])
def test_theory_command_refuses_bad_imbalance_input(arguments, message, capsys):
    from ufm.cli import main

    assert main(["theory", "--K", "6", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_exact_collapse_ratio_in_closed_form_against_the_solver():
    from ufm.theory.minority import exact_collapse_ratio

    # plain training: rho_c = (1/(lam_H lam_W) - k_B)/k_A, here (40000 - 5)/5
    assert abs(exact_collapse_ratio(10, 5, 5e-3, 5e-3, [1.0]) / 7999.0 - 1) < 1e-12
    assert abs(exact_collapse_ratio(10, 5, 1e-2, 5e-3, [1.0]) / 3999.0 - 1) < 1e-12
    assert exact_collapse_ratio(10, 5, 5e-3, 5e-3, LAMS11, pairing="class") is None
    rho_c = exact_collapse_ratio(4, 2, 5e-3, 5e-3, LAMS11)
    below = imbalance_theory(4, 2, rho_c * 0.999, 5e-3, 5e-3, LAMS11)
    above = imbalance_theory(4, 2, rho_c * 1.001, 5e-3, 5e-3, LAMS11)
    assert below.eigenvalues["minority"] > 0 and below.minority_cosine < 1
    assert above.eigenvalues["minority"] == 0 and above.minority_cosine == 1.0
    assert minority_collapse_threshold(4, 2, 5e-3, 5e-3, LAMS11).exact_collapse == rho_c
