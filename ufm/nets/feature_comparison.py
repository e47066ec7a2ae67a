r"""Mixed features against the theory: one comparison for networks and for features files.

:func:`compare_mixed` takes mixed samples in the form of a features file
(:class:`ufm.nets.features_file.MixedFeatures`) and gives the comparison with the
unconstrained-features model of Fisher, Meng & Papyan (ICLR 2024, arXiv:2402.06171): the
cell-mean comparison (:mod:`ufm.nets.cell_comparison`: amplification, coefficient curves,
the cross-entropy optimum and the squared-error null, the exact optimum for the network's
own W), margins and confidences (:func:`ufm.nets.ufm_comparison.sample_agreement`), and,
where the file holds them, the neural-collapse metrics of the clean features and the
calibration of the test logits. :func:`ufm.measure_network` (and so ``ufm train``) measures a
network into the same form and calls it; :func:`compare_features` (``ufm compare``) reads a
file. A file written by a measurement therefore gives back exactly its numbers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import config_to_dict
from ..losses import get_loss
from ..metrics import CalibrationAccumulator, CollapseAccumulator, NearestClassMeanAccumulator
from .cell_comparison import compare_cell_statistics
from .cell_means import CellStatistics, binned_cell_statistics, cell_statistics
from .features_file import MixedFeatures, centre_of, describe_lams, group_lams, read_features
from .measure_settings import MeasureSettings
from .measurement import Measurement, check_new_folder
from .triple_choice import choose_triple, theory_lam_H
from .triple_theory import own_classifier_triple
from .ufm_comparison import sample_agreement

__all__ = [
    "calibration_scalars",
    "collapse_scalars",
    "compare_features",
    "compare_mixed",
    "mixed_cell_statistics",
]


def collapse_scalars(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Neural collapse of clean samples (NC1-NC4, equinorm, equiangularity, bias collapse;
    :class:`ufm.metrics.CollapseAccumulator`), their accuracy and NLL, and the class means
    (K, d), float64. ``batches`` is re-iterable and yields (features, logits, labels): NC4
    needs the class means, so it is a second pass."""
    K, d = weight.shape
    collapse = CollapseAccumulator(K, d)
    calibration = CalibrationAccumulator()
    for features, logits, labels in batches:
        collapse.update(features, labels)
        calibration.update(logits, labels)
    scalars = collapse.compute(weight, bias)
    nearest = NearestClassMeanAccumulator(collapse.class_means)
    for features, logits, _ in batches:
        nearest.update(features, logits)
    train = calibration.compute()
    scalars.update(nc4=nearest.compute(), train_accuracy=train["accuracy"], train_nll=train["nll"])
    return scalars, collapse.class_means


def calibration_scalars(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_bins: int):
    """Accuracy, NLL, ECE and the reliability table of (logits, labels) batches."""
    calibration = CalibrationAccumulator(n_bins)
    for logits, labels in batches:
        calibration.update(logits, labels)
    return calibration.compute()


def compare_mixed(
    mixed: MixedFeatures, settings: MeasureSettings, triple: tuple[int, ...] = ()
) -> Measurement:
    """The comparison of the module docstring for the samples of ``mixed``.

    Returns a :class:`ufm.nets.measurement.Measurement` with scalars (the cell-mean
    comparison, the margins, ``lam_grouping``, ``samples``, ``paired``,
    ``global_mean_source``; NC metrics with clean features; accuracy, NLL and ECE with test
    logits), tables ``coefficients_vs_lam``, ``theory_vs_lam`` (and ``reliability``) and
    arrays ``cells``, ``mixed_features`` (``mixed`` itself, with its centre) and
    ``theory_triple``: the exact optimum for the file's own classifier on the cells of
    ``triple`` (default ``settings.triple``, else :func:`ufm.nets.triple_choice.choose_triple`)
    at the lam_H of :func:`ufm.nets.triple_choice.theory_lam_H`
    (:func:`ufm.nets.triple_theory.own_classifier_triple`; absent without a usable lam_H), for
    the three-class figure, which only reads it; scalars ``triple`` and
    ``theory_triple_lam_H_source`` say which.
    """
    loss = get_loss(settings.loss, **settings.loss_params)
    groups = group_lams(mixed, settings.lam_bins)
    centre, source = centre_of(mixed)
    W, bias = mixed.weight, mixed.bias
    cells = _cells_of(mixed, groups, centre)
    comparison = compare_cell_statistics(
        cells, W, centre, settings.exact_classifier, bias, settings.fit_lam_H
    )
    agreement = sample_agreement(
        mixed.features, groups.c, groups.c_prime, groups.lam_index, groups.lams, W, bias,
        centre, loss, theory_lams=groups.theory_lams, fit=settings.fit_lam_H,
    )  # fmt: skip
    scalars: dict[str, Any] = {
        **agreement.scalars,
        **comparison.scalars,
        "samples": len(mixed.features),
        "paired": groups.paired is not None,
        "pairing": _pairing(mixed, groups),
        "classes_without_samples": sorted(
            set(range(mixed.num_classes)) - set(mixed.c.tolist()) - set(mixed.c_prime.tolist())
        ),
        "lam_grouping": describe_lams(groups),
        "global_mean_source": source,
    }
    tables = {"coefficients_vs_lam": comparison.rows, "theory_vs_lam": agreement.rows}
    weight_t = torch.as_tensor(W)
    bias_t = None if bias is None else torch.as_tensor(bias)
    if mixed.clean_features is not None:
        clean = torch.as_tensor(mixed.clean_features)
        logits = clean.to(torch.float64) @ weight_t.T + (0.0 if bias_t is None else bias_t)
        labels = torch.as_tensor(mixed.clean_labels)
        collapse, _ = collapse_scalars([(clean, logits, labels)], weight_t, bias_t)
        scalars.update(collapse)
    if mixed.test_logits is not None:
        test = calibration_scalars(
            [(torch.as_tensor(mixed.test_logits), torch.as_tensor(mixed.test_labels))],
            settings.n_bins,
        )
        scalars.update(test_accuracy=test["accuracy"], nll=test["nll"], ece=test["ece"])
        tables["reliability"] = test["reliability"]
    triple = tuple(triple or settings.triple) or choose_triple(mixed.c, mixed.c_prime, mixed.num_classes)
    lam_H, source = theory_lam_H(scalars)
    scalars.update(triple=list(triple), theory_triple_lam_H_source=source or None)
    saved = dataclasses.replace(mixed, global_mean=np.asarray(centre, dtype=np.float64))
    if saved.bias is None:
        saved.bias = np.zeros(mixed.num_classes)
    arrays = {
        "cells": {
            **cells.arrays(),
            "weight": W,
            "bias": saved.bias,
            "global_mean": saved.global_mean,
        },
        "mixed_features": saved.arrays(),
    }
    if source:
        arrays["theory_triple"] = own_classifier_triple(
            W, bias, centre, triple, lam_H, groups.lams, solved=comparison.exact_optimum
        )
    return Measurement(scalars, tables, arrays, settings=config_to_dict(settings))


def mixed_cell_statistics(mixed: MixedFeatures, lam_bins: int = 11) -> CellStatistics:
    """The cell statistics :func:`compare_mixed` compares with the theory, alone: the samples
    of ``mixed`` oriented and grouped by lam (``lam_bins`` for lams drawn per sample,
    :func:`ufm.nets.features_file.group_lams`), centred where the file says
    (:func:`ufm.nets.features_file.centre_of`), paired or binned as the file allows.
    ValueError, as :func:`compare_mixed`, without a different-class cell at lam = 1/2 or a
    same-class cell with two samples."""
    groups = group_lams(mixed, lam_bins)
    centre, _ = centre_of(mixed)
    return _cells_of(mixed, groups, centre)


def _cells_of(mixed: MixedFeatures, groups, centre: np.ndarray) -> CellStatistics:
    if groups.paired is not None:
        order = groups.paired
        cells = cell_statistics(
            mixed.features[order], groups.c[order[:, 0]], groups.c_prime[order[:, 0]],
            groups.lams, mixed.weight, centre,
        )  # fmt: skip
    else:
        cells = binned_cell_statistics(
            mixed.features, groups.c, groups.c_prime, groups.lam_index, groups.lams,
            mixed.weight, centre, groups.theory_lams,
        )  # fmt: skip
    _check_enough(cells)
    return cells


def _pairing(mixed: MixedFeatures, groups) -> str:
    """How the samples' standard errors were taken, in words."""
    if groups.paired is not None:
        return "paired: standard errors over pairs, each pair measured at every lam"
    if mixed.pair is not None:
        return ("independent: the pair ids do not make a complete pair-by-lam grid, so the "
                "samples are taken as independent and standard errors may be too small")
    return "independent samples"


def _check_enough(cells) -> None:
    """Refuse samples that leave the comparison without cells of a kind at lam = 1/2."""
    present = ~np.isnan(cells.scatter)
    half = int(np.flatnonzero(cells.lam == 0.5)[0])
    different = ~cells.same
    if not present[different, half].any():
        raise ValueError(
            "the comparison needs different-class cells at lam = 1/2 with at least two samples "
            f"each; none has (counts there: {cells.counts[different, half].tolist()[:8]}); "
            "give more samples or fewer lam_bins"
        )
    if not present[cells.same].any():
        raise ValueError(
            "the comparison needs same-class cells with at least two samples at some lam; none "
            "has: give more same-class samples or fewer lam_bins"
        )


COMPARE_FIELDS = ("lam_bins", "loss", "loss_params", "exact_classifier", "n_bins")
"""The settings that apply to a features file (the rest concern running a network)."""


def compare_features(
    source: str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    settings: MeasureSettings | None = None,
    **overrides: Any,
) -> Measurement:
    """Compare a features file (:mod:`ufm.nets.features_file`) with the theory.

    Parameters
    ----------
    source : path to an ``.npz`` features file, or a mapping of its arrays.
    out : a new folder to write the measurement folder into (nothing is written if None).
    settings : :class:`ufm.nets.MeasureSettings`; ``overrides`` replace its fields. Those of
        :data:`COMPARE_FIELDS` apply: ``lam_bins``, ``loss``, ``loss_params``,
        ``exact_classifier``, ``n_bins``.

    Returns
    -------
    ufm.nets.measurement.Measurement
        ``.summary`` has the keys of a ``ufm train`` measurement that the file's arrays allow
        (module docstring): ``samples`` (N), the cell-mean comparison (``amplification``,
        ``fitted_lam_H``, the chi-squares and ``better_fit``), ...; ``.tables`` and
        ``.save(folder)``.

    Notes
    -----
    Everything (settings, the file's arrays, the output folder) is checked before any work.

    Examples
    --------
    Features at the exact cross-entropy optimum (:func:`ufm.optimal_features`) for every
    ordered class pair of K = 3 classes on five lams, two slightly noisy samples each: the
    comparison finds the ridge they were made with and prefers cross-entropy to the
    squared-error null.

    >>> import os, tempfile, numpy as np, ufm
    >>> W = ufm.simplex_etf(K=3, d=3)
    >>> grid = np.meshgrid(range(3), range(3), np.linspace(0, 1, 5), range(2), indexing="ij")
    >>> c, c_prime, lam = (axis.ravel() for axis in grid[:3])
    >>> H = ufm.optimal_features(W, c, c_prime, lam, lam_H=0.01).numpy()
    >>> H += 1e-3 * np.random.default_rng(0).standard_normal(H.shape)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "features.npz")
    ...     np.savez(path, features=H, c=c, c_prime=c_prime, lam=lam, weight=W.numpy())
    ...     m = ufm.compare_features(path)
    >>> m.summary["samples"], round(m.summary["fitted_lam_H"], 4), m.summary["better_fit"]
    (90, 0.01, 'cross_entropy')
    """
    unknown = sorted(set(overrides) - set(COMPARE_FIELDS))
    if unknown:
        raise ValueError(
            f"compare_features takes the settings {', '.join(COMPARE_FIELDS)}; got "
            f"{', '.join(unknown)}"
        )
    settings = dataclasses.replace(settings or MeasureSettings(), **overrides)
    if out is not None:
        check_new_folder(out)
    mixed = read_features(source)
    started = time.perf_counter()
    measurement = compare_mixed(mixed, settings)
    measurement.scalars["seconds"] = time.perf_counter() - started
    if out is not None:
        measurement.save(out)
    return measurement
