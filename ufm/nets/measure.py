r"""Measurements of a trained network, always in eval mode and without gradients.

:func:`eval_mode` switches every module to eval mode for the duration and restores each
module's own mode afterwards, so BatchNorm uses and never updates its running statistics.

What is measured (THEORY.md sections 5 and 6):

* **Neural collapse** on the clean training set, streamed in batches
  (:class:`ufm.metrics.CollapseAccumulator`, then a second pass for NC4).
* **Calibration** on the clean test set: accuracy, NLL, ECE, reliability table.
* **Mixed training pairs** :math:`x = \lambda x_i + (1-\lambda)x_j` on a lam grid, for a triple
  of classes and for all classes: features and logits saved with :math:`(c, c', \lambda)`.
* **Agreement with the UFM** (:func:`theory_agreement`), on the all-classes pairs.
* **Layer-wise linearity** (:func:`layer_linearity`), the question of Chaudhry et al. (2022).

References: Papyan, Han & Donoho, PNAS 2020; Fisher, Meng & Papyan, "Pushing boundaries:
mixup's influence on neural collapse", ICLR 2024 (arXiv:2402.06171); Chaudhry et al., "When
does mixup promote local linearity in learned representations?", 2022.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ..etf import etf_distance, etf_gain, row_norm
from ..losses import MixupLoss, get_loss
from ..metrics import CalibrationAccumulator, CollapseAccumulator, NearestClassMeanAccumulator
from ..theory import has_exact_theory, optimal_coefficients
from .data import Dataset
from .models import MixupNet

if TYPE_CHECKING:
    from .config import TrainConfig

FLOAT = torch.float64
LAM_H_RANGE = (1e-8, 1e4)
PAIR_SEED = 2024


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for every module inside the block; each module's own mode is restored."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def clean_outputs(
    model: MixupNet, x: torch.Tensor, batch_size: int, device
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """(rows, features, logits) batch by batch, in eval mode without gradients.

    Grad mode and module modes are thread-wide, so the caller's loop body runs under them
    too until the generator is exhausted or closed.
    """
    with eval_mode(model), torch.no_grad():
        for rows in _batches(len(x), batch_size):
            features = model.features(x[rows].to(device))
            yield rows, features, model.classifier(features)


def _classifier(model: MixupNet) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The classifier's weight (K, d) and bias (K,) or None, float64."""
    weight, bias = model.classifier.weight.detach(), model.classifier.bias
    return weight.to(FLOAT), None if bias is None else bias.detach().to(FLOAT)


# --------------------------------------------------------------------------------------------
# Clean data: neural collapse and calibration
# --------------------------------------------------------------------------------------------


def collapse_measurement(
    model: MixupNet, x: torch.Tensor, y: torch.Tensor, batch_size: int, device
) -> tuple[dict[str, float], torch.Tensor]:
    """NC metrics of the clean training set and its accuracy and NLL; also the class means.

    Returns the scalars (keys of :meth:`ufm.metrics.CollapseAccumulator.compute`, ``nc4``,
    ``train_accuracy``, ``train_nll``) and the class means (K, d), float64.
    """
    weight, bias = _classifier(model)
    collapse = CollapseAccumulator(*weight.shape)
    calibration = CalibrationAccumulator()
    for rows, features, logits in clean_outputs(model, x, batch_size, device):
        labels = y[rows].to(device)
        collapse.update(features, labels)
        calibration.update(logits, labels)
    scalars = collapse.compute(weight, bias)
    nearest = NearestClassMeanAccumulator(collapse.class_means)
    for _, features, logits in clean_outputs(model, x, batch_size, device):
        nearest.update(features, logits)
    train = calibration.compute()
    scalars.update(nc4=nearest.compute(), train_accuracy=train["accuracy"], train_nll=train["nll"])
    return scalars, collapse.class_means


def calibration_measurement(
    model: MixupNet, x: torch.Tensor, y: torch.Tensor, n_bins: int, batch_size: int, device
) -> dict[str, object]:
    """Accuracy, NLL, ECE and reliability table on clean data (the test set)."""
    calibration = CalibrationAccumulator(n_bins)
    for rows, _, logits in clean_outputs(model, x, batch_size, device):
        calibration.update(logits, y[rows].to(device))
    return calibration.compute()


# --------------------------------------------------------------------------------------------
# Mixed training pairs
# --------------------------------------------------------------------------------------------


def class_pairs(
    labels: np.ndarray, classes: Sequence[int], per_pair: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_pair`` random training pairs (i, j) for every class pair c <= c' of ``classes``.

    Sample i is of class c and j of class c'; for c = c', j differs from i.
    """
    labels = np.asarray(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    first, second = [], []
    for k, c in enumerate(classes):
        for c_prime in classes[k:]:
            i_pos = rng.integers(len(members[c]), size=per_pair)
            if c == c_prime:
                # Any position but i's own: shift by 1 .. n-1 around the class.
                n = len(members[c])
                j_pos = (i_pos + 1 + rng.integers(n - 1, size=per_pair)) % n
            else:
                j_pos = rng.integers(len(members[c_prime]), size=per_pair)
            first.append(members[c][i_pos])
            second.append(members[c_prime][j_pos])
    return np.concatenate(first), np.concatenate(second)


def _mixed_inputs(x_i: torch.Tensor, x_j: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
    """(P * L, ...) inputs lam_l x_i + (1 - lam_l) x_j, pair-major."""
    lam = lams.to(x_i.dtype).reshape(1, -1, *([1] * (x_i.ndim - 1)))
    mixed = lam * x_i.unsqueeze(1) + (1 - lam) * x_j.unsqueeze(1)
    return mixed.reshape(-1, *x_i.shape[1:])


def _pair_chunks(n_pairs: int, n_lams: int, batch_size: int) -> Iterator[slice]:
    return _batches(n_pairs, max(1, batch_size // (n_lams + 2)))


def mixed_activations(
    model: MixupNet,
    x: torch.Tensor,
    y: torch.Tensor,
    i: np.ndarray,
    j: np.ndarray,
    lams: np.ndarray,
    batch_size: int,
    device,
) -> dict[str, np.ndarray]:
    r"""Features and logits of :math:`\lambda x_i + (1-\lambda) x_j` for every pair and lam.

    Returns ``features`` (P, L, d) and ``logits`` (P, L, K) in the network's dtype (saved as
    computed; the comparisons with theory cast them to float64), and ``c`` = y[i],
    ``c_prime`` = y[j], ``lam`` (L,), ``i``, ``j``: lam is the weight of class c.
    """
    lam_t = torch.as_tensor(lams, dtype=torch.float32, device=device)
    features, logits = [], []
    with eval_mode(model), torch.no_grad():
        for rows in _pair_chunks(len(i), len(lams), batch_size):
            x_i = x[torch.as_tensor(i[rows])].to(device)
            x_j = x[torch.as_tensor(j[rows])].to(device)
            h = model.features(_mixed_inputs(x_i, x_j, lam_t))
            z = model.classifier(h)
            features.append(h.reshape(len(x_i), len(lams), -1).cpu())
            logits.append(z.reshape(len(x_i), len(lams), -1).cpu())
    return {
        "features": torch.cat(features).numpy(),
        "logits": torch.cat(logits).numpy(),
        "c": y[torch.as_tensor(i)].numpy(),
        "c_prime": y[torch.as_tensor(j)].numpy(),
        "lam": np.asarray(lams, dtype=np.float64),
        "i": np.asarray(i),
        "j": np.asarray(j),
    }


# --------------------------------------------------------------------------------------------
# Agreement with the unconstrained-features model
# --------------------------------------------------------------------------------------------


def ufm_margins(K: int, gain: float, lams: np.ndarray, lam_H: float, loss: MixupLoss):
    r"""UFM logit margin :math:`z_c - z_{c'} = g\,(a(\lambda) - b(\lambda))` for a simplex-ETF
    classifier of gain :math:`g` (:func:`ufm.theory.optimal_coefficients`), and (a, b)."""
    scale = row_norm(K, gain)
    a, b = optimal_coefficients(K, lams, lam_H, scale, loss)
    return gain * (a - b), a, b


def fit_lam_H(margins: np.ndarray, lams: np.ndarray, K: int, gain: float, loss: MixupLoss) -> float:
    r"""Least-squares effective :math:`\lambda_H`: minimises
    :math:`\sum_{p,l}\bigl(m_{pl} - g(a-b)(\lambda_l;\lambda_H)\bigr)^2` over
    :math:`\log\lambda_H\in[\log 10^{-8}, \log 10^4]`: a grid of 61 points locates the best
    bracket, bounded Brent refines it (``scipy.optimize.minimize_scalar``).
    ``margins`` (P, L) are the network's margins at the lam grid ``lams`` (L,).
    """
    mean, count = margins.mean(axis=0), margins.shape[0]
    # sum_p (m_pl - t_l)^2 = sum_p (m_pl - mean_l)^2 + P (mean_l - t_l)^2: only the mean matters.

    def objective(log_lam_H: float) -> float:
        theory, _, _ = ufm_margins(K, gain, lams, math.exp(log_lam_H), loss)
        return float(count * ((mean - theory) ** 2).sum())

    grid = np.linspace(math.log(LAM_H_RANGE[0]), math.log(LAM_H_RANGE[1]), 61)
    values = [objective(t) for t in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    result = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(math.exp(result.x if result.fun <= values[best] else grid[best]))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def row_space(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal basis (d, r) of the row space of ``matrix`` (m, d), r its numerical rank.

    From the SVD, keeping singular values above max(m, d) * eps * the largest: a simplex ETF
    of K rows has rank K - 1, which a plain QR would not reveal.
    """
    _, singular, vh = np.linalg.svd(matrix, full_matrices=False)
    keep = singular > max(matrix.shape) * np.finfo(np.float64).eps * singular.max()
    return vh[keep].T


def _scaled_distance(H: np.ndarray, optimum: np.ndarray) -> tuple[float, float]:
    """(min over s >= 0 of |H - s optimum|_F / |H|_F, the minimising s)."""
    scale = max(float((H * optimum).sum()), 0.0) / float((optimum**2).sum())
    return float(np.linalg.norm(H - scale * optimum) / np.linalg.norm(H)), scale


def _check_agreement_inputs(activations: dict[str, np.ndarray]) -> None:
    lams = np.asarray(activations["lam"])
    if not {0.0, 0.5, 1.0} <= set(lams.tolist()):
        raise ValueError(f"the lam grid must contain 0, 1/2 and 1, got {lams.tolist()}")
    same = np.asarray(activations["c"]) == np.asarray(activations["c_prime"])
    if same.all() or not same.any():
        raise ValueError(
            "theory agreement needs both same-class and different-class pairs, got "
            f"{int(same.sum())} same-class of {same.size}"
        )


@dataclass
class Agreement:
    """Scalars and a per-lam table from :func:`theory_agreement`."""

    scalars: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)


def theory_agreement(
    activations: dict[str, np.ndarray],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    global_mean: torch.Tensor,
    loss: MixupLoss,
) -> Agreement:
    r"""Compare mixed-pair activations with the UFM optimum for the network's own classifier.

    Features are centred, :math:`\tilde h = h - \mu_G` with :math:`\mu_G` the mean of the
    clean training class means (the UFM has no feature offset).

    * Same-class pairs (:math:`c=c'`): mean :math:`\cos(\tilde h, w_c)` per lam (theory: 1)
      and the spread :math:`\sqrt{\operatorname{mean}_{p,\lambda}\|\tilde h_p(\lambda)-\bar
      h_p\|^2}/\sqrt{\operatorname{mean}_p\|\bar h_p\|^2}` with :math:`\bar h_p` the pair's
      mean over lam (theory: 0, the optimum does not depend on lam).
    * Different-class pairs: the margin :math:`z_c - z_{c'}` of the network's logits per lam,
      beside the UFM margin :math:`g(a-b)`. **Approximation:** the theory holds for a simplex
      ETF; the network's :math:`W` is replaced by the ETF with the same gain
      :math:`g = \operatorname{tr}(WW^\top)/(K-1)` (:func:`ufm.etf.etf_gain`), and
      ``classifier_etf_distance`` (:func:`ufm.etf.etf_distance` of :math:`W`) says how far
      that is from the truth. The one free parameter, an effective :math:`\lambda_H`, is
      fitted by least squares (:func:`fit_lam_H`) and reported as ``fitted_lam_H``.
    * ``boundary_distance_half``: mean distance :math:`|z_c-z_{c'}|/\|w_c-w_{c'}\|` of the
      :math:`\lambda=1/2` features from the c/c' decision boundary (theory: 0), and
      ``boundary_distance_half_relative``: the same divided by the mean distance of the
      clean endpoints (:math:`\lambda\in\{0,1\}`) from that boundary.
    * ``ufm_distance``: with :math:`\tilde H` all centred features (same- and different-class,
      every lam) stacked and :math:`H^\star` the UFM optima :math:`a\,w_c + b\,w_{c'}` at the
      fitted :math:`\lambda_H` (:math:`a_\text{same}w_c` for same-class pairs), using the
      network's :math:`W` rows,

      .. math:: D = \min_{s\ge 0}\frac{\|\tilde H - sH^\star\|_F}{\|\tilde H\|_F}
                = \sqrt{1 - \frac{\langle\tilde H, H^\star\rangle_+^2}
                {\|\tilde H\|_F^2\|H^\star\|_F^2}} \in [0, 1],

      0 exactly when the features are the UFM optimum up to one global scale (reported as
      ``ufm_scale``). The scale is free because the network's effective feature
      regularisation is not the UFM's :math:`\lambda_H` exactly. Two diagnostics split it:
      ``out_of_span_fraction`` :math:`=\|\tilde H - P\tilde H\|_F/\|\tilde H\|_F` with
      :math:`P` the projection onto the row space of :math:`W` (the part the classifier
      cannot see, which the UFM's ridge removes), and ``ufm_distance_in_span``, :math:`D`
      computed for :math:`P\tilde H`.
    * Confidence (top softmax probability) per lam, and :math:`p_c`, :math:`p_{c'}` beside
      the softmax of :math:`W h^\star` (theory); ``confidence_half`` is the mean confidence
      of the different-class :math:`\lambda=1/2` mixtures.

    For a loss without exact theory (focal) the theory entries are NaN. ``activations`` are
    as from :func:`mixed_activations`; the lam grid must hold 0, 1/2 and 1, and there must be
    same-class and different-class pairs.
    """
    _check_agreement_inputs(activations)
    H = activations["features"].astype(np.float64) - global_mean.cpu().numpy()
    Z = activations["logits"].astype(np.float64)
    c, c_prime, lams = activations["c"], activations["c_prime"], activations["lam"]
    W = weight.cpu().numpy()
    K = W.shape[0]
    same = c == c_prime
    different = ~same
    half = int(np.flatnonzero(lams == 0.5)[0])
    endpoints = np.flatnonzero((lams == 0.0) | (lams == 1.0))

    # Same-class pairs.
    H_same = H[same]
    w_same = W[c[same]][:, None, :]
    norms_same = np.linalg.norm(H_same, axis=-1)
    cosine_same = (H_same * w_same).sum(-1) / (norms_same * np.linalg.norm(w_same, axis=-1))
    centre = H_same.mean(axis=1, keepdims=True)
    spread = math.sqrt(((H_same - centre) ** 2).sum(-1).mean() / (centre**2).sum(-1).mean())

    # Different-class pairs: margins and boundary distances.
    pairs = np.flatnonzero(different)
    margins = Z[pairs, :, c[pairs]] - Z[pairs, :, c_prime[pairs]]
    boundary = np.linalg.norm(W[c[pairs]] - W[c_prime[pairs]], axis=-1)[:, None]
    distances = np.abs(margins) / boundary
    probabilities = _softmax(Z)
    p_c = probabilities[pairs, :, c[pairs]]
    p_c_prime = probabilities[pairs, :, c_prime[pairs]]

    gain = etf_gain(weight)
    span = row_space(W)
    scalars = {
        "classifier_gain": gain,
        "classifier_etf_distance": etf_distance(weight),
        "same_class_cosine": float(cosine_same.mean()),
        "same_class_spread": spread,
        "boundary_distance_half": float(distances[:, half].mean()),
        "boundary_distance_half_relative": float(
            distances[:, half].mean() / distances[:, endpoints].mean()
        ),
        "fitted_lam_H": math.nan,
        "margin_fit_rms": math.nan,
        "ufm_distance": math.nan,
        "ufm_scale": math.nan,
        "ufm_distance_in_span": math.nan,
        "out_of_span_fraction": float(np.linalg.norm(H - H @ span @ span.T) / np.linalg.norm(H)),
        "confidence_half": float(probabilities[pairs, half].max(-1).mean()),
    }
    theory_margin = theory_p_c = theory_confidence = np.full(len(lams), np.nan)
    if has_exact_theory(loss):
        lam_H = fit_lam_H(margins, lams, K, gain, loss)
        theory_margin, a, b = ufm_margins(K, gain, lams, lam_H, loss)
        (a_same,), _ = optimal_coefficients(
            K, [1.0], lam_H, row_norm(K, gain), loss, same_class=True
        )
        optimum = a[None, :, None] * W[c][:, None, :] + b[None, :, None] * W[c_prime][:, None, :]
        optimum[same] = a_same * W[c[same]][:, None, :]
        residual, scale = _scaled_distance(H, optimum)
        residual_in_span, _ = _scaled_distance(H @ span @ span.T, optimum)
        theory_probabilities = _softmax(optimum[pairs] @ W.T)
        theory_p_c = theory_probabilities[np.arange(len(pairs)), :, c[pairs]].mean(axis=0)
        theory_confidence = theory_probabilities.max(-1).mean(axis=0)
        scalars.update(
            fitted_lam_H=lam_H,
            margin_fit_rms=float(np.sqrt(((margins - theory_margin) ** 2).mean())),
            ufm_distance=residual,
            ufm_scale=scale,
            ufm_distance_in_span=residual_in_span,
        )

    rows = []
    for l, lam in enumerate(lams):
        rows.append(
            {
                "lam": float(lam),
                "same_class_cosine": float(cosine_same[:, l].mean()),
                "same_class_norm": float(norms_same[:, l].mean()),
                "margin_mean": float(margins[:, l].mean()),
                "margin_std": float(margins[:, l].std()),
                "margin_theory": float(theory_margin[l]),
                "boundary_distance": float(distances[:, l].mean()),
                "confidence_mean": float(probabilities[:, l].max(-1).mean()),
                "p_c_mean": float(p_c[:, l].mean()),
                "p_c_prime_mean": float(p_c_prime[:, l].mean()),
                "theory_p_c": float(theory_p_c[l]),
                "theory_confidence": float(theory_confidence[l]),
            }
        )
    return Agreement(scalars, rows)


# --------------------------------------------------------------------------------------------
# Layer-wise linearity
# --------------------------------------------------------------------------------------------


def layer_linearity(
    model: MixupNet,
    x: torch.Tensor,
    i: np.ndarray,
    j: np.ndarray,
    lams: np.ndarray,
    batch_size: int,
    device,
) -> list[float]:
    r"""Non-linearity of every hidden block's output f along input segments (Chaudhry et al. 2022):

    .. math:: \operatorname{mean}_{(i,j),\lambda}\ \frac{\|f(\lambda x_i + (1-\lambda)x_j) -
              (\lambda f(x_i) + (1-\lambda) f(x_j))\|}{\|f(x_i) - f(x_j)\|}

    over the pairs ``(i, j)`` and the interior lams of ``lams``; pairs with
    :math:`f(x_i) = f(x_j)` are left out of that layer's mean. 0 for a layer that is affine
    along every segment. One value per block, first to last.
    """
    interior = np.asarray([lam for lam in lams if 0.0 < lam < 1.0], dtype=np.float64)
    lam_t = torch.as_tensor(interior, dtype=torch.float32, device=device)
    lam_64 = torch.as_tensor(interior, dtype=FLOAT).reshape(1, -1, 1)
    totals = np.zeros(model.num_blocks)
    counts = np.zeros(model.num_blocks)
    with eval_mode(model), torch.no_grad():
        for rows in _pair_chunks(len(i), len(interior), batch_size):
            x_i = x[torch.as_tensor(i[rows])].to(device)
            x_j = x[torch.as_tensor(j[rows])].to(device)
            P = len(x_i)
            outputs = model.block_outputs(torch.cat([x_i, x_j, _mixed_inputs(x_i, x_j, lam_t)]))
            for layer, output in enumerate(outputs):
                f = output.to(FLOAT).reshape(len(output), -1).cpu()
                f_i, f_j, f_mix = f[:P], f[P : 2 * P], f[2 * P :].reshape(P, len(interior), -1)
                chord = lam_64 * f_i[:, None] + (1 - lam_64) * f_j[:, None]
                gap = torch.linalg.vector_norm(f_mix - chord, dim=-1)
                length = torch.linalg.vector_norm(f_i - f_j, dim=-1)
                keep = length > 0
                totals[layer] += float((gap[keep] / length[keep, None]).sum())
                counts[layer] += int(keep.sum()) * len(interior)
    return [float(t / n) if n else math.nan for t, n in zip(totals, counts)]


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Scalars (JSON), tables (CSV) and arrays (npz) of one measurement."""

    scalars: dict[str, object]
    tables: dict[str, list[dict]]
    arrays: dict[str, dict[str, np.ndarray]]


def _triple(config: TrainConfig, num_classes: int, rng: np.random.Generator) -> tuple[int, ...]:
    if config.triple:
        return tuple(config.triple)
    return tuple(int(c) for c in np.sort(rng.choice(num_classes, size=3, replace=False)))


def triple_projections(
    weight: torch.Tensor, classes: Sequence[int], features: np.ndarray, centre: np.ndarray
) -> dict[str, np.ndarray]:
    """Centred features projected for the figures of Fisher et al. (2024).

    ``span_basis`` (d, r): orthonormal basis of span{w_c : c in classes} (r = 3, or 2 when
    the three rows are dependent, as for K = 3); ``plane_basis`` (d, 2): the directions of the
    plane through the three classifier vectors, span{w_c - mean}; ``*_coordinates``: the
    features minus ``centre`` in those bases.
    """
    rows = weight.cpu().numpy().astype(np.float64)[list(classes)]
    centred = features - centre
    span_basis = row_space(rows)
    plane_basis = row_space(rows - rows.mean(axis=0))
    return {
        "span_basis": span_basis,
        "span_coordinates": centred @ span_basis,
        "plane_basis": plane_basis,
        "plane_coordinates": centred @ plane_basis,
    }


def measure(model: MixupNet, data: Dataset, config: TrainConfig, device) -> Measurement:
    """Every measurement of the module docstring for ``model`` on ``data``.

    Pairs are drawn from a generator seeded with (``config.seed``, 2024), so every
    measurement of a run uses the same pairs. The model's train/eval mode is restored.
    """
    rng = np.random.default_rng([config.seed, PAIR_SEED])
    K, batch = data.num_classes, config.measure_batch_size
    loss = get_loss(config.loss, **config.loss_params)
    weight, bias = _classifier(model)
    lams = config.lams()
    labels = data.y_train.numpy()

    collapse, class_means = collapse_measurement(model, data.x_train, data.y_train, batch, device)
    test = calibration_measurement(model, data.x_test, data.y_test, config.n_bins, batch, device)
    global_mean = class_means.mean(dim=0)

    triple = _triple(config, K, rng)
    i, j = class_pairs(labels, triple, config.pairs_per_class_pair, rng)
    triple_acts = mixed_activations(model, data.x_train, data.y_train, i, j, lams, batch, device)
    projections = triple_projections(
        weight, triple, triple_acts["features"].astype(np.float64), global_mean.cpu().numpy()
    )
    i, j = class_pairs(labels, list(range(K)), config.pairs_all_classes, rng)
    all_acts = mixed_activations(model, data.x_train, data.y_train, i, j, lams, batch, device)
    agreement = theory_agreement(all_acts, weight, bias, global_mean, loss)

    i = rng.integers(len(labels), size=config.linearity_pairs)
    j = rng.integers(len(labels), size=config.linearity_pairs)
    linearity = layer_linearity(model, data.x_train, i, j, lams, batch, device)

    scalars: dict[str, object] = {
        "train_accuracy": collapse.pop("train_accuracy"),
        "train_nll": collapse.pop("train_nll"),
        "test_accuracy": test["accuracy"],
        "nll": test["nll"],
        "ece": test["ece"],
        **collapse,
        **agreement.scalars,
        "linearity": linearity,
        "triple": list(triple),
    }
    classifier_arrays = {
        "weight": weight.cpu().numpy(),
        "bias": np.zeros(K) if bias is None else bias.cpu().numpy(),
        "global_mean": global_mean.cpu().numpy(),
    }
    return Measurement(
        scalars=scalars,
        tables={
            "reliability": test["reliability"],
            "theory_vs_lam": agreement.rows,
            "linearity": [{"layer": k + 1, "nonlinearity": v} for k, v in enumerate(linearity)],
        },
        arrays={
            "activations_triple": {
                **triple_acts,
                **classifier_arrays,
                **projections,
            },
            "activations_all": {**all_acts, **classifier_arrays},
        },
    )
