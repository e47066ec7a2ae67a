r"""Reading the folder of one measured network for its figures, and the planes they are drawn in.

Two kinds of folder hold the measurements of one network (:data:`FOLDER_KINDS`):

* a **training run** (``ufm train --out DIR``): ``config.json`` with the key ``"config"`` and
  ``measurements/epoch_NNNN/``; the last epoch's measurement is drawn, with the run's
  ``summary.json`` (the final measurement's scalars) or, before the run has finished, that
  epoch's ``scalars.json``;
* a **measurement folder** (``ufm.measure_network(...).save(DIR)``, ``ufm compare --features F
  --out DIR``): ``summary.json`` or ``scalars.json`` beside ``coefficients_vs_lam.csv`` or
  ``mixed_features.npz`` at the top, and no ``measurements/``.

``mixed_features.npz`` (the features file, :mod:`ufm.nets.features_file`, schema version 1)
holds one row per mixed sample: ``features`` (N, d), the classes ``c`` and ``c_prime`` (N,),
``lam`` (N,) the weight of class c in [0, 1], and the classifier, ``weight`` (K, d), ``bias``
(K,) and ``global_mean`` (d,) :math:`\mu_G`; :func:`read_mixed_features` reads it. The
three-class figure is drawn in the
plane through the classifier rows of three classes, with the orthonormal basis of
:math:`\operatorname{span}\{w_c - \bar w\}` from :func:`ufm.etf.row_space`, the basis
:func:`ufm.nets.pairs.triple_projections` uses: :func:`network_projection` places the
centred features :math:`h - \mu_G` there, :func:`theory_projection` the exact UFM optimum for
the network's own :math:`W` and logit offset :math:`o = W\mu_G + b`, in the same basis and
so in the same orientation. The measurement computed that optimum and wrote it as
``theory_triple.npz`` (:mod:`ufm.nets.triple_theory`); the figures read it and compute
nothing. The choices both sides must share (which triple, which lam_H) are those of
:mod:`ufm.nets.triple_choice`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..etf import row_space
from ..io import read_json
from ..nets.triple_choice import (
    check_lam_H,
    check_triple,
    choose_triple,
    theory_lam_H,
    theory_lams,
)

__all__ = [
    "FOLDER_KINDS",
    "as_number",
    "check_lam_H",
    "check_triple",
    "choose_triple",
    "folder_kind",
    "measurement_folder",
    "network_projection",
    "read_mixed_features",
    "read_run_summary",
    "read_theory",
    "run_label",
    "theory_lam_H",
    "theory_lams",
    "theory_projection",
]

MIXED_FEATURES = "mixed_features.npz"
THEORY_TRIPLE = "theory_triple.npz"
COEFFICIENTS = "coefficients_vs_lam.csv"
RELIABILITY = "reliability.csv"
SUMMARY_FILES = ("summary.json", "scalars.json")
RUN_CONFIG = "config.json"
MEASUREMENTS = "measurements"
FOLDER_KINDS = {
    "run": 'a training run (ufm train --out DIR): config.json with the key "config" and '
    "measurements/epoch_NNNN/",
    "measurement": "a measurement folder: summary.json or scalars.json beside "
    f"{COEFFICIENTS} or {MIXED_FEATURES}, no measurements/",
}
_EPOCH = re.compile(r"epoch_(\d+)")


def folder_kind(folder: str | Path) -> str | None:
    """The kind of ``folder`` (a key of :data:`FOLDER_KINDS`), or None for neither."""
    folder = Path(folder)
    if (folder / RUN_CONFIG).is_file() and (folder / MEASUREMENTS).is_dir():
        try:
            config = read_json(folder / RUN_CONFIG)
        except ValueError:
            return None
        return "run" if isinstance(config, dict) and "config" in config else None
    has_summary = any((folder / name).is_file() for name in SUMMARY_FILES)
    has_data = (folder / COEFFICIENTS).is_file() or (folder / MIXED_FEATURES).is_file()
    return "measurement" if has_summary and has_data and folder.is_dir() else None


def measurement_folder(folder: str | Path) -> Path:
    """The folder whose measurement files are drawn: ``folder`` itself for a measurement
    folder, the last ``measurements/epoch_NNNN/`` of a training run; else ValueError."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind is None:
        kinds = "; ".join(FOLDER_KINDS.values())
        raise ValueError(f"{str(folder)!r} is not the folder of a measured network ({kinds})")
    if kind == "measurement":
        return folder
    epochs = [
        (int(match.group(1)), path)
        for path in (folder / MEASUREMENTS).iterdir()
        if (match := _EPOCH.fullmatch(path.name)) and (path / SUMMARY_FILES[1]).is_file()
    ]
    if not epochs:
        raise ValueError(f"the training run {str(folder)!r} holds no measurement yet (no "
                         f"{MEASUREMENTS}/epoch_NNNN/{SUMMARY_FILES[1]})")  # fmt: skip
    return max(epochs)[1]


def as_number(value: Any) -> Any:
    """``value`` with JSON's "nan", "inf", "-inf" strings (:func:`ufm.io.to_jsonable`) and
    None as floats; anything else unchanged."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def read_run_summary(folder: str | Path) -> dict[str, Any]:
    """The scalars of the measurement drawn from ``folder`` (the run's ``summary.json`` for a
    training run, else the first of ``summary.json``, ``scalars.json``), non-finite numbers as
    floats."""
    folder = Path(folder)
    measured = measurement_folder(folder)
    candidates = [folder / SUMMARY_FILES[0]] if folder_kind(folder) == "run" else []
    candidates += [measured / name for name in SUMMARY_FILES]
    path = next(p for p in candidates if p.is_file())
    return {key: as_number(value) for key, value in read_json(path).items()}


def read_mixed_features(source) -> dict[str, np.ndarray]:
    """The arrays of a features file: ``source`` is a folder (of either kind), the path of a
    ``.npz`` file, or a mapping of its arrays, checked by
    :func:`ufm.nets.features_file.read_features` (ValueError naming the first problem).

    Returns float64 ``features``, ``lam``, ``weight``, ``bias`` (zeros when absent) and
    ``global_mean`` (when absent, the centre :func:`ufm.nets.features_file.centre_of`
    estimates; a measurement folder's file always holds it), and int64 ``c``, ``c_prime``.
    """
    from ..nets.features_file import centre_of, read_features

    if not isinstance(source, Mapping):
        source = Path(source)
        if source.is_dir():
            source = measurement_folder(source) / MIXED_FEATURES
    mixed = read_features(source)
    centre, _ = centre_of(mixed)
    K = mixed.num_classes
    return {
        "features": mixed.features.astype(np.float64),
        "c": mixed.c,
        "c_prime": mixed.c_prime,
        "lam": mixed.lam,
        "weight": mixed.weight,
        "bias": np.zeros(K) if mixed.bias is None else mixed.bias,
        "global_mean": np.asarray(centre, dtype=np.float64),
    }


def _plane(arrays: dict[str, np.ndarray], triple) -> dict[str, np.ndarray]:
    rows = arrays["weight"][list(triple)]
    basis = row_space(rows - rows.mean(axis=0))
    if basis.shape[1] != 2:
        raise ValueError(f"the classifier rows of classes {list(triple)} span a plane of "
                         f"dimension {basis.shape[1]} after centring, not 2")  # fmt: skip
    offsets = (arrays["weight"] @ arrays["global_mean"] + arrays["bias"])[list(triple)]
    return {"basis": basis, "classes": np.asarray(triple), "classifier": rows @ basis,
            "offsets": offsets}  # fmt: skip


def network_projection(arrays: dict[str, np.ndarray], triple) -> dict[str, np.ndarray]:
    r"""The samples of ``arrays`` (:func:`read_mixed_features`) whose two classes lie in
    ``triple``, in the plane of its classifier rows.

    Returns a dict with ``coordinates`` (n, 2) :math:`E^\top(h - \mu_G)`, ``c``, ``c_prime``,
    ``lam`` (n,), and the plane: ``basis`` E (d, 2), ``classes`` (3,), ``classifier`` (3, 2)
    :math:`E^\top w_k` and ``offsets`` (3,) :math:`w_k^\top\mu_G + b_k`, so that the logit of
    class k of a feature at y in the plane is classifier_k . y + offsets_k.
    """
    triple = check_triple(triple, arrays["weight"].shape[0])
    inside = np.isin(arrays["c"], triple) & np.isin(arrays["c_prime"], triple)
    if not inside.any():
        raise ValueError(
            f"the features file holds no mixed sample of two classes among {list(triple)}"
        )
    plane = _plane(arrays, triple)
    centred = arrays["features"][inside] - arrays["global_mean"]
    return {"coordinates": centred @ plane["basis"], "c": arrays["c"][inside],
            "c_prime": arrays["c_prime"][inside], "lam": arrays["lam"][inside], **plane}  # fmt: skip


def read_theory(source) -> dict[str, np.ndarray] | None:
    """The theory of the three-class figure that the measurement wrote
    (``theory_triple.npz``, :func:`ufm.nets.triple_theory.own_classifier_triple`) in a folder
    of either kind, or None when it holds none (no usable fitted lam_H)."""
    path = measurement_folder(source) / THEORY_TRIPLE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def theory_projection(arrays: dict[str, np.ndarray], theory: Mapping[str, np.ndarray]):
    r"""The exact UFM optimum for the network's own classifier (``theory``, as
    :func:`ufm.nets.triple_theory.own_classifier_triple` returns it and a measurement writes
    it) in the plane of :func:`network_projection` for its triple, so in the same
    orientation. Returns the keys of :func:`network_projection` for the theory's cells, with
    ``features`` (n, d) and ``lam_H``."""
    triple = check_triple(theory["triple"], arrays["weight"].shape[0])
    plane = _plane(arrays, triple)
    features = np.asarray(theory["features"], dtype=np.float64)
    return {"coordinates": features @ plane["basis"], "c": np.asarray(theory["c"]),
            "c_prime": np.asarray(theory["c_prime"]), "lam": np.asarray(theory["lam"]),
            **plane, "features": features, "lam_H": float(theory["lam_H"])}  # fmt: skip


def run_label(folder: str | Path) -> str:
    """A short name of what ``folder`` measured, for titles: data set, model, training and
    epoch of a training run; the folder's name for a measurement folder."""
    folder = Path(folder)
    if folder_kind(folder) != "run":
        return f"folder {folder.resolve().name}"
    config = read_json(folder / RUN_CONFIG)["config"]
    alpha = float(config.get("alpha", 0.0) or 0.0)
    training = f"mixup ($\\alpha$={alpha:g})" if alpha > 0 else "ERM"
    epoch = int(_EPOCH.fullmatch(measurement_folder(folder).name).group(1))
    return (f"{config.get('dataset', '?')} {str(config.get('model', '?')).upper()}, {training}, "
            f"{str(config.get('classifier', '?')).replace('_', ' ')} W, epoch {epoch}")  # fmt: skip
