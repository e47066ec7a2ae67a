r"""Step class imbalance of a training set, and what a run reports about it.

With ``imbalance_ratio`` :math:`\rho \ge 1` and ``minority_classes`` :math:`k`
(:mod:`ufm.imbalance`), the last :math:`k` classes keep :math:`\max(1,
\operatorname{round}(n_c/\rho))` of their :math:`n_c` *training* samples and the others keep
all (step imbalance, Fang et al., PNAS 2021, the minority-collapse study). The samples kept
are drawn from a generator seeded with the run's seed, so a run and its resumption see the
same set. The test set is never touched: it stays balanced, so per-class test accuracy
measures what the imbalance did to each class. The subsampling comes after the
standardisation of :mod:`ufm.nets.data`, so the kept samples are bit-identical to the
balanced run's and only their number differs; :math:`\rho = 1` or :math:`k = 0` returns the
data set itself.

By default mixup pairing stays sample-proportional (``pairing = "sample"``):
:func:`ufm.nets.training.train_epoch` shuffles the imbalanced training set and
:class:`ufm.nets.mixup.Mixup` draws each sample's partner from the same batch, so a mixture of
classes :math:`(c, c')` occurs with frequency proportional to :math:`n_c n_{c'}` and
minority-minority mixtures are rare (:math:`1/\rho^2`). With ``pairing = "class"`` the
partner's class is uniform over the K classes (:class:`ufm.nets.mixup.ClassPool`), so a
mixture occurs in proportion to :math:`n_c` and the minority classes get much more of the
label mass; the summary records the pairing and that ratio of label mass
(:func:`ufm.imbalance.label_mass_ratio`), the quantity a study of minority collapse against
the imbalance plots its results against.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from .._checks import preview
from ..imbalance import (
    class_sizes,
    classifier_imbalance,
    is_balanced,
    label_mass_ratio,
    label_masses,
)
from .data import Dataset
from .measure import clean_outputs

IMBALANCE_SEED = 1011
"""Second word of the subsampling generator's seed ``[seed, IMBALANCE_SEED]``: a stream of
its own, apart from the training generator seeded with the run's seed alone."""

MIN_PER_CLASS = 2
"""Training samples a class must keep: the measurements draw pairs of distinct samples of
one class (:func:`ufm.nets.measure.class_pairs`)."""


def kept_counts(counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Samples kept per class: ``max(1, round(n_c * size_c))`` (all of a class of size 1)."""
    counts = np.asarray(counts, dtype=np.int64)
    kept = [max(1, round(int(n) * float(s))) for n, s in zip(counts, sizes)]
    return np.minimum(np.asarray(kept, dtype=np.int64), counts)


def subsample_classes(labels, sizes, seed: int) -> np.ndarray:
    """Sorted indices (int64) of the samples kept when class c keeps ``sizes[c]`` of its own.

    ``labels`` (N,) holds class indices 0..K-1 (numpy or torch); ``sizes`` (K,) relative
    sizes in (0, 1] (:func:`ufm.imbalance.class_sizes`). Class c keeps
    :func:`kept_counts` of its samples, chosen by a permutation from
    ``numpy.random.default_rng([seed, IMBALANCE_SEED])``, class by class in order; a class
    of size 1 keeps all of them, so all sizes 1 give ``arange(N)``.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    sizes = np.asarray(sizes.cpu() if isinstance(sizes, torch.Tensor) else sizes, np.float64)
    if labels.ndim != 1 or sizes.ndim != 1:
        raise ValueError(
            f"labels and sizes must be 1-D, got shapes {labels.shape} and {sizes.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(sizes)):
        raise ValueError(
            f"labels must lie in [0, {len(sizes) - 1}] (one size per class), found "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    if not np.all((sizes > 0) & (sizes <= 1)):
        raise ValueError(f"sizes must lie in (0, 1], got {preview(sizes)}")
    rng = np.random.default_rng([int(seed), IMBALANCE_SEED])
    counts = np.bincount(labels, minlength=len(sizes))
    keep = []
    for c, n_keep in enumerate(kept_counts(counts, sizes)):
        members = np.flatnonzero(labels == c)
        keep.append(members if n_keep == len(members) else rng.permutation(members)[:n_keep])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def imbalanced_dataset(data: Dataset, ratio: float, minority: int, seed: int) -> Dataset:
    """``data`` with its training split subsampled to the step imbalance (ratio, minority).

    The test split is the very same tensors. Returns ``data`` itself when the imbalance is
    none (:func:`ufm.imbalance.is_balanced`). Raises ValueError, naming the ratio and the
    largest one allowed, if a class would keep fewer than :data:`MIN_PER_CLASS` samples.
    """
    K = data.num_classes
    sizes = class_sizes(K, ratio, minority)  # validates ratio and minority against K
    if is_balanced(float(ratio), int(minority)):
        return data
    counts = torch.bincount(data.y_train, minlength=K).numpy()
    kept = kept_counts(counts, sizes.numpy())
    if kept.min() < MIN_PER_CLASS:
        c = int(np.argmin(kept))
        raise ValueError(
            f"imbalance_ratio={ratio:g} leaves class {c} of {data.name!r} with {int(kept[c])} "
            f"training sample(s) of {int(counts[c])}; the measurements need at least "
            f"{MIN_PER_CLASS} per class: allowed imbalance_ratio <= "
            f"{counts[K - minority :].min() / MIN_PER_CLASS:g} here"
        )
    keep = torch.as_tensor(subsample_classes(data.y_train, sizes, seed))
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def per_class_accuracy(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, K: int, batch_size: int, device
) -> tuple[list[float | None], np.ndarray, np.ndarray]:
    """Per-class accuracy (K,) on clean data (None for a class without samples), and the
    per-class counts of correct predictions and of samples."""
    correct = np.zeros(K, dtype=np.int64)
    for rows, _, logits in clean_outputs(model, x, batch_size, device):
        labels = y[rows]
        hits = (logits.argmax(dim=1).cpu() == labels).to(torch.int64)
        correct += torch.bincount(labels, weights=hits, minlength=K).to(torch.int64).numpy()
    total = torch.bincount(y, minlength=K).numpy()
    accuracy = [float(h / n) if n else None for h, n in zip(correct, total)]
    return accuracy, correct, total


def label_mass_entries(
    counts, ratio: float, minority: int, pairing: str, mixes: bool
) -> dict[str, Any]:
    """``mixup_pairing`` and the majority-to-minority label mass of a run (None for k = 0).

    (Named ``mixup_pairing`` because a measurement's summary already has a ``pairing``: how
    its standard errors pair the samples.)

    ``label_mass_ratio`` is :func:`ufm.imbalance.label_mass_ratio` of the configured step
    imbalance; ``label_mass_ratio_train`` the same from the training set's class ``counts``
    (:func:`ufm.imbalance.label_masses`, the mean over the majority classes over the mean
    over the minority classes), which differs by the rounding of the kept counts and the
    data set's own unequal classes. Without mixup (``mixes`` false) there is no partner, and
    the label mass is the class frequency, as under sample pairing.
    """
    effective = pairing if mixes else "sample"
    if not minority:
        return {"mixup_pairing": pairing, "label_mass_ratio": None, "label_mass_ratio_train": None}
    K = len(counts)
    masses = label_masses(torch.as_tensor(counts, dtype=torch.float64), effective)
    return {
        "mixup_pairing": pairing,
        "label_mass_ratio": label_mass_ratio(K, minority, ratio, effective),
        "label_mass_ratio_train": float(masses[: K - minority].mean() / masses[K - minority :].mean()),
    }


def imbalance_summary(
    model: torch.nn.Module,
    data: Dataset,
    minority: int,
    batch_size: int,
    device,
    ratio: float = 1.0,
    pairing: str = "sample",
    mixes: bool = True,
) -> dict[str, Any]:
    """The summary entries of a run under step imbalance (``minority`` = k last classes,
    ``ratio`` rho, mixup ``pairing``, ``mixes``: whether the run mixes at all).

    ``per_class_test_accuracy`` (K), ``majority_test_accuracy`` and
    ``minority_test_accuracy`` (pooled over the test samples of the first K - k and the last
    k classes; the latter None for k = 0), ``train_class_counts`` (K, of the training set
    the network saw), the pairing and label mass ratios of :func:`label_mass_entries`, and
    :func:`ufm.imbalance.classifier_imbalance` of the last layer's W.
    """
    K = data.num_classes
    accuracy, correct, total = per_class_accuracy(
        model, data.x_test, data.y_test, K, batch_size, device
    )

    def pooled(classes: slice) -> float | None:
        n = int(total[classes].sum())
        return float(correct[classes].sum() / n) if n else None

    weight = model.classifier.weight.detach()
    counts = torch.bincount(data.y_train, minlength=K).tolist()
    return {
        "per_class_test_accuracy": accuracy,
        "majority_test_accuracy": pooled(slice(0, K - minority)),
        "minority_test_accuracy": pooled(slice(K - minority, K)) if minority else None,
        "train_class_counts": counts,
        **label_mass_entries(counts, ratio, minority, pairing, mixes),
        **classifier_imbalance(weight, minority),
    }
