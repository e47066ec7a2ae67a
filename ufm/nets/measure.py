r"""Measurements of a trained network, any ``torch.nn.Module``, in eval mode without gradients.

:func:`measure_network` is the instrument: give it a model (features are the input of its
linear classifier head, read by a forward hook, :mod:`ufm.nets.probe`), training inputs and
labels (numpy arrays or tensors, on any device), optionally test data, and it returns a
:class:`ufm.nets.measurement.Measurement` with ``.summary`` and ``.save(folder)``.
``ufm train`` measures its own networks through the same function (:func:`measure`), so
there is one measurement code path. What is measured:

* **Neural collapse** on the clean training set, streamed in batches
  (:class:`ufm.metrics.CollapseAccumulator`, then a second pass for NC4), with the
  training accuracy and NLL.
* **Calibration** on the clean test set, when given: accuracy, NLL, ECE, reliability table.
* **Mixed training pairs** :math:`x = \lambda x_i + (1-\lambda)x_j` on a lam grid, for a
  triple of classes (the figures) and for the class pairs (all of them up to
  ``max_class_pairs``, :mod:`ufm.nets.measure_settings`), mixed at the input or at the output
  of the module ``mix_at`` (manifold mixup).
* **Agreement with the UFM** of the class-pair features, in the form of a features file
  (:mod:`ufm.nets.features_file`, saved as ``mixed_features.npz``):
  :func:`ufm.nets.feature_comparison.compare_mixed`, the cell-mean comparison with the
  cross-entropy optimum and the squared-error null, and the margins and confidences.
* **Layer-wise linearity** of the modules named in ``layers``
  (:func:`ufm.nets.linearity.layer_linearity`), the question of Chaudhry et al. (2022).
* With ``mixture_points >= 3``, mixtures of three classes (:mod:`ufm.nets.mixtures`).

References: Papyan, Han & Donoho, PNAS 2020; Fisher, Meng & Papyan, "Pushing boundaries:
mixup's influence on neural collapse", ICLR 2024 (arXiv:2402.06171); Chaudhry et al., "When
does mixup promote local linearity in learned representations?", 2022.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..config import config_to_dict
from .data import Dataset
from .feature_comparison import calibration_scalars, collapse_scalars, compare_mixed
from .forward import batches, eval_mode
from .linearity import layer_linearity
from .measure_settings import MeasureSettings, measurement_cost, odd_lam_grid
from .measurement import Measurement
from .mixtures import add_mixture_measurement
from .models import MixupNet
from .pairs import (
    as_mixed_features,
    class_pairs,
    draw_pairs,
    measured_cells,
    mixed_activations,
    triple_projections,
)
from .probe import NetworkProbe, as_inputs, as_labels, model_dtype

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "MeasureSettings",
    "Measurement",
    "class_pairs",
    "measure",
    "measure_network",
    "mixed_activations",
    "triple_projections",
]

FLOAT = torch.float64
PAIR_SEED = 2024


def clean_outputs(
    model: MixupNet, x: torch.Tensor, batch_size: int, device
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """(rows, features, logits) of a :class:`MixupNet` batch by batch, in eval mode without
    gradients (the per-epoch test metrics of ``ufm train`` and its per-class accuracy).

    Grad mode and module modes are thread-wide, so the caller's loop body runs under them
    too until the generator is exhausted or closed.
    """
    with eval_mode(model), torch.no_grad():
        for rows in batches(len(x), batch_size):
            features = model.features(x[rows].to(device))
            yield rows, features, model.classifier(features)


def calibration_measurement(
    model: MixupNet, x: torch.Tensor, y: torch.Tensor, n_bins: int, batch_size: int, device
) -> dict[str, object]:
    """Accuracy, NLL, ECE and reliability table of a :class:`MixupNet` on clean data."""
    return calibration_scalars(
        ((logits, y[rows].to(device)) for rows, _, logits in clean_outputs(model, x, batch_size,
                                                                             device)),
        n_bins,
    )  # fmt: skip


class _CleanBatches:
    """Re-iterable (features, logits, labels) batches of clean inputs through a probe."""

    def __init__(self, probe: NetworkProbe, x: torch.Tensor, y: torch.Tensor) -> None:
        self.probe, self.x, self.y = probe, x, y

    def __iter__(self):
        for rows, features, logits in self.probe.clean(self.x):
            yield features, logits, self.y[rows].to(features.device)


def collapse_measurement(
    probe: NetworkProbe, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """NC metrics of the clean training set and its accuracy and NLL; also the class means.

    Returns the scalars (keys of :meth:`ufm.metrics.CollapseAccumulator.compute`, ``nc4``,
    ``train_accuracy``, ``train_nll``) and the class means (K, d), float64.
    """
    return collapse_scalars(_CleanBatches(probe, x, y), probe.weight, probe.bias)


def _triple(settings: MeasureSettings, num_classes: int, rng: np.random.Generator) -> tuple[int, ...]:
    if settings.triple:
        return tuple(settings.triple)
    return tuple(int(c) for c in np.sort(rng.choice(num_classes, size=3, replace=False)))


def measure_network(
    model: nn.Module,
    x_train,
    y_train,
    x_test=None,
    y_test=None,
    head: nn.Module | str | None = None,
    settings: MeasureSettings | None = None,
    **overrides: Any,
) -> Measurement:
    """Measure any network against the theory (module docstring).

    Parameters
    ----------
    model : any ``torch.nn.Module`` ending in a linear classifier head (``nn.Linear``); it
        is run where it is (its device and dtype), in eval mode, without gradients, and its
        modes are restored.
    x_train, y_train : training inputs (N, ...) and labels (N,) in [0, K), numpy arrays or
        tensors on any device: the mixed pairs and the clean NC metrics come from them. Every
        measured class needs two samples.
    x_test, y_test : clean test data for accuracy, NLL, ECE and the reliability table
        (both or neither).
    head : the classifier head (module or name in ``model.named_modules()``); None takes the
        last linear module the forward pass calls (:func:`ufm.nets.probe.find_head`).
    settings : :class:`ufm.nets.MeasureSettings`; keyword ``overrides`` replace its fields
        (``lam_grid``, ``pairs_all_classes``, ``max_class_pairs``, ``mix_at``, ``layers``,
        ``loss``, ``seed``, ...).

    Returns
    -------
    ufm.nets.measurement.Measurement
        ``.summary``, a dict of numbers and names (NC1-NC4, bias collapse, accuracy, the
        cell-mean comparison with ``amplification`` and its standard errors, margins, ECE
        and NLL with test data, ``n`` clean training samples, ``samples`` mixed ones,
        ``class_pairs_measured``, ...); ``.tables`` (rows per lam); ``.arrays``, groups of
        arrays, among them ``mixed_features`` (the features file of
        :mod:`ufm.nets.features_file`: ``features`` (``samples``, d) with their classes and
        lams) and ``cells`` (the cell means (cells, lams, d)); and ``.save(folder)``.

    Notes
    -----
    Pairs are drawn from a generator seeded with (``seed``, 2024), so every measurement with
    the same settings and data uses the same pairs. Everything that can be refused (settings,
    head, labels, shapes) is checked before the network runs on the data.

    Examples
    --------
    A tiny untrained network on 12 random inputs of 3 classes, mixed at the input on the
    lams 0, 1/2 and 1, two pairs per class pair (a trained network would show collapse):

    >>> import torch, ufm
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    >>> x = torch.randn(12, 4, dtype=torch.float64)
    >>> y = torch.arange(12) % 3
    >>> m = ufm.measure_network(model, x, y, lam_grid=3, pairs_all_classes=2,
    ...                         pairs_per_class_pair=2)
    >>> m.summary["head"], m.summary["measured_at"], m.summary["n"]
    ('2', 'input', 12)
    >>> m.summary["class_pairs_measured"], m.summary["samples"]
    (6, 36)
    >>> 0.0 <= m.summary["train_accuracy"] <= 1.0
    True
    """
    started = time.perf_counter()
    settings = dataclasses.replace(settings or MeasureSettings(), **overrides)
    probe, x, y, test = _prepare(model, x_train, y_train, x_test, y_test, head, settings)
    K = probe.num_classes
    lams = odd_lam_grid(settings.lam_grid)
    rng = np.random.default_rng([settings.seed, PAIR_SEED])
    labels = y.numpy()
    weight, bias = probe.weight, probe.bias

    collapse, class_means = collapse_measurement(probe, x, y)
    global_mean = class_means.mean(dim=0).cpu().numpy()
    scalars: dict[str, Any] = {
        "train_accuracy": collapse.pop("train_accuracy"),
        "train_nll": collapse.pop("train_nll"),
    }
    tables: dict[str, list[dict]] = {}
    if test is not None:
        x_test_t, y_test_t = test
        calibration = calibration_scalars(
            ((logits, y_test_t[rows].to(logits.device))
             for rows, _, logits in probe.clean(x_test_t)),
            settings.n_bins,
        )  # fmt: skip
        scalars.update(
            test_accuracy=calibration["accuracy"], nll=calibration["nll"], ece=calibration["ece"]
        )
        tables["reliability"] = calibration["reliability"]

    triple = _triple(settings, K, rng)
    i, j = class_pairs(labels, triple, settings.pairs_per_class_pair, rng)
    triple_acts = mixed_activations(probe, x, y, i, j, lams)
    W = weight.numpy()
    projections = triple_projections(
        W, triple, triple_acts["features"].astype(np.float64), global_mean
    )
    cells = measured_cells(K, settings, rng, include=triple)
    i, j = draw_pairs(labels, cells, settings.pairs_all_classes, rng)
    all_acts = mixed_activations(probe, x, y, i, j, lams)
    bias_np = None if bias is None else bias.numpy()
    compared = compare_mixed(
        as_mixed_features(all_acts, W, bias_np, global_mean), settings, triple=triple
    )

    i = rng.integers(len(labels), size=settings.linearity_pairs)
    j = rng.integers(len(labels), size=settings.linearity_pairs)
    linearity = layer_linearity(probe, x, i, j, lams)

    cost = measurement_cost(settings, K)
    scalars.update(
        {
            **collapse,
            **compared.scalars,
            "class_pairs_measured": len(cells),
            "class_pairs_total": cost["class_pairs_total"],
            "measured_at": settings.mix_at or "input",
            "head": probe.head_name,
            "linearity": linearity,
            "triple": list(triple),
        }
    )
    tables.update(compared.tables)
    tables["linearity"] = [
        {"layer": k + 1, "module": name, "nonlinearity": v}
        for k, (name, v) in enumerate(zip(settings.layers, linearity))
    ]
    classifier_arrays = {
        "weight": W,
        "bias": np.zeros(K) if bias is None else bias_np,
        "global_mean": global_mean,
    }
    measurement = Measurement(
        scalars=scalars,
        tables=tables,
        arrays={
            "activations_triple": {**triple_acts, **classifier_arrays, **projections},
            **compared.arrays,
        },
        settings=config_to_dict(settings),
    )
    if settings.mixture_points >= 3:
        add_mixture_measurement(measurement, probe, x, y, settings)
    measurement.scalars["seconds"] = time.perf_counter() - started
    return measurement


def _prepare(model, x_train, y_train, x_test, y_test, head, settings: MeasureSettings):
    """Check and convert everything before the network runs on the data: (probe, x, y, test)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")  # noqa: TRY004
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test and y_test go together: give both or neither")
    dtype = model_dtype(model)
    x = as_inputs("x_train", x_train, dtype)
    if not settings.mix_at and not x.is_floating_point():
        raise ValueError(
            f"x_train has dtype {x.dtype}: mixing at the input needs floating-point inputs "
            "(convert them as the model expects, e.g. images / 255), or mix inside the network "
            "with mix_at="
        )
    probe = NetworkProbe(
        model, x[:2], head, settings.mix_at, settings.layers, settings.batch_size
    )
    K = probe.num_classes
    settings.check_classes(K)
    y = as_labels("y_train", y_train, len(x), K)
    test = None
    if x_test is not None:
        x_test_t = as_inputs("x_test", x_test, dtype)
        if x_test_t.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"x_test samples have shape {tuple(x_test_t.shape[1:])}, x_train samples "
                f"{tuple(x.shape[1:])}"
            )
        test = (x_test_t, as_labels("y_test", y_test, len(x_test_t), K))
    counts = torch.bincount(y, minlength=K)
    if bool((counts < 2).any()):
        few = torch.nonzero(counts < 2).flatten().tolist()
        raise ValueError(
            f"y_train has fewer than two samples of class(es) {few[:8]} of K = {K} (the head's "
            "rows); the class means and the pairs need two of every class"
        )

    return probe, x, y, test


def measure(
    model: MixupNet, data: Dataset, config: TrainConfig, device, final: bool = True
) -> Measurement:
    """The measurement of ``ufm train``: :func:`measure_network` of a :class:`MixupNet` on
    ``data`` with the settings of ``config`` (:meth:`ufm.nets.TrainConfig.measure_settings`;
    light when not ``final``, unless the config's ``fits_every_measurement``), its
    ``classifier`` as the head; also ``measured_at_layer`` (the run's ``mixup_layer``).
    ``device`` is where the model already is."""
    del device  # the probe runs the model where it is
    measurement = measure_network(
        model, data.x_train, data.y_train, data.x_test, data.y_test,
        head=model.classifier, settings=config.measure_settings(model.num_blocks, final),
    )  # fmt: skip
    measurement.scalars["measured_at_layer"] = config.mixup_layer
    if "activations_mixtures3" in measurement.arrays:
        measurement.arrays["activations_mixtures3"]["layer"] = np.asarray(config.mixup_layer)
    return measurement
