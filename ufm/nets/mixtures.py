r"""Mixtures of three classes in a trained network, beside the exact m-class optimum.

For class triples :math:`(c_1, c_2, c_3)` a network is fed mixtures
:math:`\sum_k y_k x_k` of one training sample :math:`x_k` of each class (mixed at the layer
where the run was mixed, ``mixup_layer``: the inputs, or the output of a hidden block, as in
manifold mixup), with the weights :math:`y` on the grid of the simplex
(:func:`ufm.theory.mixtures.simplex_grid`: all :math:`(i, j, k)/(n-1)`, :math:`i+j+k = n-1`,
:math:`n` = ``mixture_grid``). This is the three-point mixup of Chaudhry et al., "When does
mixup promote local linearity in learned representations?" (2022), measured with the
geometry of Fisher, Meng & Papyan, "Pushing boundaries: mixup's influence on neural
collapse" (ICLR 2024, arXiv:2402.06171), whose pair theory :func:`ufm.mixture_coefficients`
extends to m classes: with a simplex-ETF classifier and cross-entropy the optimal feature is
:math:`h = \sum_k a_k w_{c_k}`, and equal weights put it on every boundary among the three
classes, beyond their mean (:math:`\sum_k a_k > a_\text{same}`).

Per (triple, grid point), following docs/theory.md section 8 (average first, then compare): the
mean centred feature :math:`\bar h - \mu_G` over the sample triples is regressed by least
squares on the classifier rows :math:`w_{c_1}, w_{c_2}, w_{c_3}`, giving
:math:`\hat a_1, \hat a_2, \hat a_3`; :math:`\hat a_\text{same}` is the mean over the three
vertices of the own-class coefficient, and the amplification is
:math:`\sum_k \hat a_k / \hat a_\text{same}` (1 for convex combinations, as the squared error's
optimum gives). The theory is that of the simplex ETF with the network's gain
(:func:`ufm.etf.etf_gain`, the approximation :mod:`ufm.nets.ufm_comparison` makes), at an
effective :math:`\lambda_H` fitted by least squares on the coefficients themselves
(:func:`fit_mixture_lam_H`), and also at the :math:`\lambda_H` fitted on the pair margins.

Files (:func:`add_mixture_measurement`, ``mixup_points >= 3`` only), in the measurement
folder: ``mixtures3.csv`` (one row per triple and grid point, columns :data:`COLUMNS`),
``activations_mixtures3.npz`` (the first triple, the figure's, in the form of
``activations_triple.npz``, with its projections by
:func:`ufm.nets.pairs.triple_projections`), and scalars ``mixture3_*`` in ``scalars.json``
and ``summary.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import softmax

from ..etf import etf_gain, row_norm
from ..losses import get_loss
from ..theory import has_exact_theory, mixture_coefficients
from ..theory.mixtures import simplex_grid
from .measurement import Measurement
from .pairs import triple_projections
from .probe import NetworkProbe
from .ufm_comparison import fit_log_lam_H

PAIR_SEED = 2024
"""Second entry of the seeds of the pair draws (:mod:`ufm.nets.measure`)."""
MIXTURE_SEED = 3
"""Third entry of the seed ``(seed, PAIR_SEED, MIXTURE_SEED)`` of the sample draws."""

_K3 = ("_1", "_2", "_3")
COLUMNS = (
    ("triple", "c_1", "c_2", "c_3", "y_1", "y_2", "y_3", "samples")
    + tuple(f"a{k}" for k in _K3)
    + ("a_same", "amplification", "residual", "spread", "logit_spread")
    + tuple(f"p{k}" for k in _K3)
    + tuple(f"theory_a{k}" for k in _K3)
    + ("theory_a_same", "theory_amplification", "theory_logit_spread")
    + tuple(f"theory_p{k}" for k in _K3)
)
r"""Columns of ``mixtures3.csv``: the triple's index and classes, the weights, the number of
sample triples averaged; the fitted coefficients, :math:`\hat a_\text{same}`, the
amplification, ``residual`` (the fraction :math:`\|r\|/\|\bar h - \mu_G\|` of the mean
centred feature outside the span of the three rows), ``spread`` (RMS distance of the centred
features from their mean, over its norm), ``logit_spread`` (mean over samples of
:math:`\max_k z_{c_k} - \min_k z_{c_k}`; 0 on the boundary of all three), the mean
probabilities of the three classes; the same from the theory (coefficients in the units of
the network's rows, logits :math:`W h^\star` without bias), NaN without exact theory."""


def class_triples(first, K: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``first`` and then distinct sorted triples drawn from ``rng``: (T, 3), T the smaller of
    ``count`` and the number C(K, 3) of triples."""
    triples = [tuple(int(c) for c in first)]
    seen = {tuple(sorted(triples[0]))}  # a class set is measured once, whatever its order
    while len(triples) < min(count, math.comb(K, 3)):
        triple = tuple(int(c) for c in np.sort(rng.choice(K, size=3, replace=False)))
        if triple not in seen:
            seen.add(triple)
            triples.append(triple)
    return np.asarray(triples, dtype=np.int64)


def draw_members(
    labels: np.ndarray, triples: np.ndarray, per_triple: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices (T, P, 3) of ``per_triple`` random training samples of each class of each triple."""
    labels = np.asarray(labels)
    members = np.empty((len(triples), per_triple, 3), dtype=np.int64)
    for t, triple in enumerate(triples):
        for k, c in enumerate(triple):
            of_class = np.flatnonzero(labels == c)
            members[t, :, k] = of_class[rng.integers(len(of_class), size=per_triple)]
    return members


def mixture_activations(
    probe: NetworkProbe, x: torch.Tensor, members: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    r"""Features and logits of :math:`\sum_k y_k f(x_{i_k})` for every sample triple, mixed
    where the probe mixes (:meth:`ufm.nets.probe.NetworkProbe.mixtures`: the inputs, or the
    outputs of its ``mix_at`` module), in eval mode without gradients.

    Parameters
    ----------
    probe : the network's probe.
    x : (n, ...) training inputs.
    members : (P, m) sample indices, one mixture per row.
    weights : (G, m) weights, one grid point per row.

    Returns
    -------
    dict with ``features`` (P, G, d) and ``logits`` (P, G, K) in the network's dtype.
    """
    features, logits = probe.mixtures(x, members, weights)
    return {"features": features.numpy(), "logits": logits.numpy()}


def fit_mixture_lam_H(coefficients: np.ndarray, weights: np.ndarray, K: int, gain: float, loss):
    r"""Least-squares effective :math:`\lambda_H` of measured mixture coefficients.

    Minimises :math:`\sum_{t,g,k} (\hat a_{tgk} - a_k(y_g; \lambda_H))^2` with :math:`a` the
    exact coefficients (:func:`ufm.mixture_coefficients`) of the simplex ETF of gain ``gain``,
    over :math:`\log\lambda_H` in :data:`ufm.nets.ufm_comparison.LAM_H_RANGE`: a grid of 61
    points, then bounded Brent around the best one (as :func:`ufm.nets.ufm_comparison.fit_lam_H`
    does for pair margins, through :func:`ufm.nets.ufm_comparison.fit_log_lam_H`).
    ``coefficients`` (T, G, 3), ``weights`` (G, 3).
    """
    scale = row_norm(K, gain)
    mean, count = coefficients.mean(axis=0), coefficients.shape[0]

    def objective(log_lam_H: float) -> float:
        theory = mixture_coefficients(K, weights, math.exp(log_lam_H), scale, loss)
        return float(count * ((mean - theory) ** 2).sum())

    return fit_log_lam_H(objective)


@dataclass
class MixtureComparison:
    """What :func:`compare_mixtures` found: CSV rows, scalars, and the theory's features
    (T, G, d) (NaN without exact theory)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    theory_features: np.ndarray | None = None


def _grid_points(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Indices of the three vertices e_1, e_2, e_3, and of the equal-weight point."""
    found = [np.flatnonzero(weights[:, k] == 1.0) for k in range(3)]
    equal = np.flatnonzero(np.abs(weights - 1.0 / 3.0).max(axis=1) <= 1e-12)
    if not all(len(rows) for rows in found) or not len(equal):
        raise ValueError(
            "the weight grid must contain the vertices and (1/3, 1/3, 1/3), got "
            f"{len(weights)} points without them"
        )
    return np.asarray([rows[0] for rows in found]), int(equal[0])


def _theory(weights, triples, W, lam_H, K, gain, loss):
    """Coefficients (G, 3), a_same, features (T, G, d) and logits (T, G, K) at ``lam_H``."""
    scale = row_norm(K, gain)
    a = mixture_coefficients(K, weights, lam_H, scale, loss)
    a_same = float(mixture_coefficients(K, np.eye(3)[:1], lam_H, scale, loss)[0, 0])
    features = np.einsum("gk,tkd->tgd", a, W[triples])
    return a, a_same, features, features @ W.T


def compare_mixtures(
    features: np.ndarray,
    logits: np.ndarray,
    triples: np.ndarray,
    weights: np.ndarray,
    weight: np.ndarray,
    global_mean: np.ndarray,
    loss,
    pair_lam_H: float = math.nan,
) -> MixtureComparison:
    r"""Compare 3-class mixtures of a network with the exact optimum (module docstring).

    Parameters
    ----------
    features : (T, P, G, d) features of P sample triples of each of the T class ``triples``
        (T, 3) at the G grid ``weights`` (G, 3), which must hold the vertices and the
        equal-weight point.
    logits : (T, P, G, K) the network's logits of the same mixtures.
    weight : (K, d) the classifier; global_mean : (d,) :math:`\mu_G`, the centre.
    loss : the training loss (name or instance); without exact theory the theory is NaN.
    pair_lam_H : the effective :math:`\lambda_H` fitted on the pair margins, for
        ``mixture3_amplification_theory_pair_lam_H`` (NaN: not computed).

    Returns
    -------
    :class:`MixtureComparison`: rows with :data:`COLUMNS`; scalars ``mixture3_amplification``
    (mean over triples at equal weights), ``mixture3_amplification_theory`` (at
    ``mixture3_fitted_lam_H``), ``mixture3_amplification_theory_pair_lam_H``,
    ``mixture3_fit_rms_relative`` (RMS of :math:`\hat a - a` over all cells, over the theory's
    :math:`a_\text{same}`), ``mixture3_equal_logit_spread_relative`` (the ``logit_spread`` at
    equal weights over its mean at the vertices; theory 0). When the three rows of a triple
    are linearly dependent (K = 3) the coefficients are not identifiable and are NaN.
    """
    loss = get_loss(loss)
    W = np.asarray(weight, dtype=np.float64)
    K = W.shape[0]
    H = np.asarray(features, dtype=np.float64) - np.asarray(global_mean, dtype=np.float64)
    Z = np.asarray(logits, dtype=np.float64)
    T, P, G, _ = H.shape
    vertices, equal = _grid_points(weights)
    rows_W = W[triples]  # (T, 3, d)
    mean = H.mean(axis=1)  # (T, G, d)
    coefficients = np.full((T, G, 3), np.nan)
    for t in range(T):
        if np.linalg.matrix_rank(rows_W[t]) == 3:
            coefficients[t] = np.linalg.lstsq(rows_W[t].T, mean[t].T, rcond=None)[0].T
    fitted = np.einsum("tgk,tkd->tgd", np.nan_to_num(coefficients), rows_W)
    mean_norm = np.linalg.norm(mean, axis=-1)
    residual = np.linalg.norm(mean - fitted, axis=-1) / mean_norm
    spread = np.sqrt(((H - mean[:, None]) ** 2).sum(-1).mean(axis=1)) / mean_norm
    index = triples[:, None, None, :]
    own_logits = np.take_along_axis(Z, np.broadcast_to(index, (T, P, G, 3)), axis=-1)
    logit_spread = (own_logits.max(-1) - own_logits.min(-1)).mean(axis=1)  # (T, G)
    probabilities = np.take_along_axis(
        softmax(Z, axis=-1), np.broadcast_to(index, (T, P, G, 3)), -1
    )
    probabilities = probabilities.mean(axis=1)
    a_same = coefficients[:, vertices, [0, 1, 2]].mean(axis=1)  # (T,)
    amplification = coefficients.sum(-1) / a_same[:, None]

    gain = etf_gain(torch.as_tensor(W))
    theory = np.full((G, 3), np.nan)
    theory_same, lam_H, pair_amplification = math.nan, math.nan, math.nan
    theory_features = np.full((T, G, W.shape[1]), np.nan)
    theory_logits = np.full((T, G, K), np.nan)
    identifiable = bool(np.isfinite(coefficients).all())
    if has_exact_theory(loss) and identifiable:
        lam_H = fit_mixture_lam_H(coefficients, weights, K, gain, loss)
        theory, theory_same, theory_features, theory_logits = _theory(
            weights, triples, W, lam_H, K, gain, loss
        )
        if math.isfinite(pair_lam_H):
            a_pair, same_pair, _, _ = _theory(
                weights[[equal]], triples, W, pair_lam_H, K, gain, loss
            )
            pair_amplification = float(a_pair.sum() / same_pair)
    own_theory = np.take_along_axis(theory_logits, np.broadcast_to(triples[:, None], (T, G, 3)), -1)
    theory_probabilities = np.take_along_axis(
        softmax(theory_logits, axis=-1), np.broadcast_to(triples[:, None], (T, G, 3)), -1
    )
    theory_spread = own_theory.max(-1) - own_theory.min(-1)

    columns = {
        "triple": np.arange(T)[:, None],
        **{f"c{k}": triples[:, None, i] for i, k in enumerate(_K3)},
        **{f"y{k}": weights[None, :, i] for i, k in enumerate(_K3)},
        "samples": np.asarray(P),
        **{f"a{k}": coefficients[..., i] for i, k in enumerate(_K3)},
        "a_same": a_same[:, None],
        "amplification": amplification,
        "residual": residual,
        "spread": spread,
        "logit_spread": logit_spread,
        **{f"p{k}": probabilities[..., i] for i, k in enumerate(_K3)},
        **{f"theory_a{k}": theory[None, :, i] for i, k in enumerate(_K3)},
        "theory_a_same": np.asarray(theory_same),
        "theory_amplification": theory.sum(axis=1)[None] / theory_same,
        "theory_logit_spread": theory_spread,
        **{f"theory_p{k}": theory_probabilities[..., i] for i, k in enumerate(_K3)},
    }
    table = {name: np.broadcast_to(columns[name], (T, G)) for name in COLUMNS}
    rows = [
        {name: table[name][t, g].item() for name in COLUMNS} for t in range(T) for g in range(G)
    ]
    scalars = {
        "mixture3_amplification": float(amplification[:, equal].mean()),
        "mixture3_amplification_theory": float(theory[equal].sum() / theory_same),
        "mixture3_amplification_theory_pair_lam_H": pair_amplification,
        "mixture3_fitted_lam_H": lam_H,
        "mixture3_fit_rms_relative": float(
            np.sqrt(((coefficients - theory) ** 2).mean()) / theory_same
        ),
        "mixture3_equal_logit_spread_relative": float(
            logit_spread[:, equal].mean() / logit_spread[:, vertices].mean()
        ),
    }
    return MixtureComparison(rows, scalars, theory_features)


def add_mixture_measurement(
    measurement: Measurement,
    probe: NetworkProbe,
    x: torch.Tensor,
    y: torch.Tensor,
    settings,
) -> None:
    r"""Measure 3-class mixtures and add them to ``measurement`` (a result of
    :func:`ufm.measure_network` for the same network and ``settings``, a
    :class:`ufm.nets.MeasureSettings`, whose triple, classifier, centre and pair
    :math:`\lambda_H` it reuses): table ``mixtures3``, arrays ``activations_mixtures3``,
    scalars ``mixture3_*`` (module docstring).

    The class triples (:func:`class_triples`: the figure's triple first, ``mixture_triples``
    in all) and the samples (``mixture_samples`` per class triple) are drawn from a generator
    seeded with (``seed``, 2024, 3), so every measurement of a run uses the same ones and the
    pair measurements' draws are untouched. The arrays are those of ``activations_triple``
    for the figure's triple: ``features`` (P, G, d) and ``logits`` (P, G, K) as computed,
    ``classes`` (3,), ``members`` (P, 3) sample indices, ``weights`` (G, 3), ``layer`` (the
    mixing block of a ``ufm train`` run, added by :func:`ufm.nets.measure.measure`), ``weight``, ``bias``, ``global_mean``, the
    projections of :func:`ufm.nets.pairs.triple_projections` (``span_basis``,
    ``span_coordinates`` (P, G, r), ``plane_basis``, ``plane_coordinates`` (P, G, r')), and
    the theory's features ``theory_features`` (G, d), centred, with ``theory_span_coordinates``
    and ``theory_plane_coordinates`` (NaN without exact theory).
    """
    rng = np.random.default_rng([settings.seed, PAIR_SEED, MIXTURE_SEED])
    classifier = measurement.arrays["activations_triple"]
    weight, bias, centre = classifier["weight"], classifier["bias"], classifier["global_mean"]
    triples = class_triples(
        measurement.scalars["triple"], probe.num_classes, settings.mixture_triples, rng
    )
    members = draw_members(y.numpy(), triples, settings.mixture_samples, rng)
    weights = simplex_grid(3, settings.mixture_grid)
    activations = [mixture_activations(probe, x, chosen, weights) for chosen in members]
    features = np.stack([a["features"] for a in activations])
    logits = np.stack([a["logits"] for a in activations])
    comparison = compare_mixtures(
        features,
        logits,
        triples,
        weights,
        weight,
        centre,
        get_loss(settings.loss, **settings.loss_params),
        float(measurement.scalars["fitted_lam_H"]),
    )
    projections = triple_projections(weight, triples[0], features[0].astype(np.float64), centre)
    theory = comparison.theory_features[0]
    measurement.tables["mixtures3"] = comparison.rows
    measurement.scalars.update(comparison.scalars)
    measurement.arrays["activations_mixtures3"] = {
        "features": features[0],
        "logits": logits[0],
        "classes": triples[0],
        "members": members[0],
        "weights": weights,
        "weight": weight,
        "bias": bias,
        "global_mean": centre,
        **projections,
        "theory_features": theory,
        "theory_span_coordinates": theory @ projections["span_basis"],
        "theory_plane_coordinates": theory @ projections["plane_basis"],
    }
