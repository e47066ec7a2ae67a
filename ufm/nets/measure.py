r"""Measurements of a trained network, always in eval mode and without gradients.

This module runs a network and measures it: clean outputs, mixed pairs and block outputs,
and from them neural collapse, calibration, the projections of the figures and layer-wise
linearity; :func:`measure` does it all at once. What is measured is compared with the
unconstrained-features model in :mod:`ufm.nets.ufm_comparison`, which :func:`measure` calls
and which this module re-exports :func:`theory_agreement` from.
:func:`eval_mode` switches every module to eval mode for the duration and restores each
module's own mode afterwards, so BatchNorm uses and never updates its running statistics.

What is measured (THEORY.md sections 5 and 6):

* **Neural collapse** on the clean training set, streamed in batches
  (:class:`ufm.metrics.CollapseAccumulator`, then a second pass for NC4).
* **Calibration** on the clean test set: accuracy, NLL, ECE, reliability table.
* **Mixed training pairs** :math:`x = \lambda x_i + (1-\lambda)x_j` on a lam grid, for a triple
  of classes and for all classes: features and logits saved with :math:`(c, c', \lambda)`.
* **Agreement with the UFM** on the all-classes pairs: cell means of the features against
  the cross-entropy optimum and the squared-error null
  (:func:`ufm.nets.cell_comparison.compare_cells`), margins and confidences
  (:func:`ufm.nets.ufm_comparison.theory_agreement`). Pairs are mixed where the run was
  mixed (``mixup_layer``: the inputs, or the output of that hidden block for manifold
  mixup); ``measured_at_layer`` says which.
* **Layer-wise linearity** (:func:`ufm.nets.linearity.layer_linearity`, re-exported here),
  the question of Chaudhry et al. (2022).

References: Papyan, Han & Donoho, PNAS 2020; Fisher, Meng & Papyan, "Pushing boundaries:
mixup's influence on neural collapse", ICLR 2024 (arXiv:2402.06171); Chaudhry et al., "When
does mixup promote local linearity in learned representations?", 2022.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..etf import row_space
from ..losses import get_loss
from ..metrics import CalibrationAccumulator, CollapseAccumulator, NearestClassMeanAccumulator
from .cell_comparison import compare_cells
from .data import Dataset
from .forward import batches, eval_mode, mixed_inputs, pair_chunks
from .linearity import layer_linearity
from .models import LinearClassifier, MixupNet
from .ufm_comparison import theory_agreement

if TYPE_CHECKING:
    from .config import TrainConfig

FLOAT = torch.float64
PAIR_SEED = 2024


def clean_outputs(
    model: MixupNet, x: torch.Tensor, batch_size: int, device
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """(rows, features, logits) batch by batch, in eval mode without gradients.

    Grad mode and module modes are thread-wide, so the caller's loop body runs under them
    too until the generator is exhausted or closed.
    """
    with eval_mode(model), torch.no_grad():
        for rows in batches(len(x), batch_size):
            features = model.features(x[rows].to(device))
            yield rows, features, model.classifier(features)


def check_linear_classifier(model: torch.nn.Module) -> None:
    """ValueError unless ``model`` ends in a linear classifier (``model.classifier``, a
    :class:`ufm.nets.models.LinearClassifier` or ``torch.nn.Linear``): the comparison with the
    theory needs its rows w_k."""
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, (LinearClassifier, torch.nn.Linear)) or not hasattr(
        model, "features"
    ):
        raise ValueError(
            "the measurements need a network with features() and a linear last layer "
            f"`classifier` (LinearClassifier or nn.Linear), got {type(classifier).__name__}"
        )


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


def mixed_activations(
    model: MixupNet,
    x: torch.Tensor,
    y: torch.Tensor,
    i: np.ndarray,
    j: np.ndarray,
    lams: np.ndarray,
    batch_size: int,
    device,
    layer: int = 0,
) -> dict[str, np.ndarray]:
    r"""Features and logits of :math:`\lambda x_i + (1-\lambda) x_j` for every pair and lam.

    With ``layer`` = k >= 1 the outputs of hidden block k are mixed instead of the inputs (as
    manifold mixup trains), :math:`\lambda f_k(x_i) + (1-\lambda) f_k(x_j)`, and go through
    the remaining blocks. Returns ``features`` (P, L, d) and ``logits`` (P, L, K) in the network's dtype (saved as
    computed; the comparisons with theory cast them to float64), and ``c`` = y[i],
    ``c_prime`` = y[j], ``lam`` (L,), ``i``, ``j``: lam is the weight of class c.
    """
    lam_t = torch.as_tensor(lams, dtype=torch.float32, device=device)
    features, logits = [], []
    with eval_mode(model), torch.no_grad():
        for rows in pair_chunks(len(i), len(lams), batch_size):
            x_i = x[torch.as_tensor(i[rows])].to(device)
            x_j = x[torch.as_tensor(j[rows])].to(device)
            hidden_i, hidden_j = model.run_blocks(x_i, 0, layer), model.run_blocks(x_j, 0, layer)
            h = model.run_blocks(mixed_inputs(hidden_i, hidden_j, lam_t), layer)
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
    weight: torch.Tensor | np.ndarray,
    classes: Sequence[int],
    features: np.ndarray,
    centre: np.ndarray,
) -> dict[str, np.ndarray]:
    r"""Centred features projected for the figures of Fisher et al. (2024).

    With :math:`w_c` the classifier rows of the three ``classes`` and :math:`\bar w` their
    mean, the features are taken relative to ``centre`` and written in two orthonormal
    bases (both from :func:`ufm.etf.row_space`): that of :math:`\operatorname{span}\{w_c\}`
    and that of the plane through the three vectors, :math:`\operatorname{span}\{w_c -
    \bar w\}`; the coordinates are :math:`E^\top(h - \text{centre})` for a basis :math:`E`.
    :func:`ufm.reproduce.projection.project_triple` builds its projection files on this.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray, (K, d), read in float64.
    classes : three class indices.
    features : numpy.ndarray, (..., d), float64.
    centre : numpy.ndarray, (d,).

    Returns
    -------
    dict with ``span_basis`` (d, r), r = 3, or 2 when the three rows are dependent (as for
    K = 3); ``span_coordinates`` (..., r); ``plane_basis`` (d, r'), r' = 2 unless the three
    vectors lie on one line; ``plane_coordinates`` (..., r').
    """
    if isinstance(weight, torch.Tensor):
        weight = weight.cpu().numpy()
    rows = np.asarray(weight, dtype=np.float64)[list(classes)]
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
    check_linear_classifier(model)
    lams = config.lams()
    rng = np.random.default_rng([config.seed, PAIR_SEED])
    K, batch, layer = data.num_classes, config.measure_batch_size, config.mixup_layer
    loss = get_loss(config.loss, **config.loss_params)
    weight, bias = _classifier(model)
    labels = data.y_train.numpy()

    collapse, class_means = collapse_measurement(model, data.x_train, data.y_train, batch, device)
    test = calibration_measurement(model, data.x_test, data.y_test, config.n_bins, batch, device)
    global_mean = class_means.mean(dim=0)

    triple = _triple(config, K, rng)
    i, j = class_pairs(labels, triple, config.pairs_per_class_pair, rng)
    triple_acts = mixed_activations(
        model, data.x_train, data.y_train, i, j, lams, batch, device, layer
    )
    projections = triple_projections(
        weight, triple, triple_acts["features"].astype(np.float64), global_mean.cpu().numpy()
    )
    i, j = class_pairs(labels, list(range(K)), config.pairs_all_classes, rng)
    all_acts = mixed_activations(
        model, data.x_train, data.y_train, i, j, lams, batch, device, layer
    )
    agreement = theory_agreement(all_acts, weight, bias, global_mean, loss)
    cells = compare_cells(
        all_acts["features"], all_acts["c"], all_acts["c_prime"], lams, weight.cpu().numpy(),
        global_mean.cpu().numpy(), exact_classifier=config.exact_classifier,
        bias=None if bias is None else bias.detach().cpu().numpy(),
    )  # fmt: skip

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
        **cells.scalars,
        "measured_at_layer": layer,
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
            "coefficients_vs_lam": cells.rows,
            "linearity": [{"layer": k + 1, "nonlinearity": v} for k, v in enumerate(linearity)],
        },
        arrays={
            "activations_triple": {
                **triple_acts,
                **classifier_arrays,
                **projections,
            },
            "cells": {**cells.arrays, **classifier_arrays},
        },
    )
