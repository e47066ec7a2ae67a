"""Results of a UFM solve: the object :func:`ufm.solve` returns, and its files.

A result folder holds ``config.json``, ``arrays.npz`` (H, W, b, c, c_prime, lam; for
mixtures of ``mixup_points`` = m > 2 classes H, W, b, classes, weights),
``history.csv`` and ``summary.json``; ``summary.json`` is written last, so a folder without
it is not a complete result. ``checkpoint.pt`` (when present) lets ``--resume`` continue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import config_from_dict, config_to_dict
from ..io import SUMMARY, is_complete, prepare_run_dir, read_csv, read_json, write_csv, write_json, write_npz
from .problem import UFMConfig

STOP_REASONS = (
    "converged", "rounding", "max_iters", "time_limit", "diverged", "stalled", "interrupted"
)


@dataclass
class UFMResult:
    """Solved features and classifier, the samples, the history and a summary.

    The samples are ``c``/``c_prime``/``lam`` for pairs (``mixup_points`` = 2), or
    ``classes`` and ``weights`` for m-class mixtures (then ``c``, ``c_prime`` and ``lam`` are
    None). :meth:`save` writes the result folder that :func:`load_result` reads.

    Attributes
    ----------
    config : UFMConfig
        The problem solved.
    H : torch.Tensor
        (n, d) the features, one row per sample.
    W : torch.Tensor
        (K, d) the classifier.
    b : torch.Tensor or None
        (K,) the bias, or None without one.
    c : torch.Tensor or None
        (n,) the first class of each pair; None for m-class mixtures.
    c_prime : torch.Tensor or None
        (n,) the second class of each pair; None for m-class mixtures.
    lam : torch.Tensor or None
        (n,) the weight of the first class of each pair, in [0, 1]; None for m-class mixtures.
    history : list of dict
        One dict per iteration.
    stop_reason : str
        Why the solve stopped, one of :data:`STOP_REASONS` ("converged", "rounding",
        "max_iters", "time_limit", "diverged", "stalled", "interrupted").
    seconds : float
        The time the solve took.
    device : str
        Where the solve ran.
    summary : dict, default {}
        The final numbers (see :func:`ufm.solve`).
    classes : torch.Tensor or None, default None
        (n, m) the classes of each m-class mixture; None for pairs.
    weights : torch.Tensor or None, default None
        (n, m) the weights of those classes, on the simplex; None for pairs.
    converged : bool
        Property: whether ``stop_reason`` is "converged".

    Examples
    --------
    >>> import ufm
    >>> result = ufm.solve(ufm.UFMConfig(K=3, d=3, num_lams=3, device="cpu"))
    >>> tuple(result.H.shape), tuple(result.c.shape), result.b is None, result.classes is None
    ((27, 3), (27,), True, True)
    >>> result.converged, result.stop_reason in ufm.solver.results.STOP_REASONS
    (True, True)
    >>> result.summary["n"], result.summary["method"]
    (27, 'auto')
    """

    config: UFMConfig
    H: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor | None
    c: torch.Tensor | None
    c_prime: torch.Tensor | None
    lam: torch.Tensor | None
    history: list[dict[str, Any]]
    stop_reason: str
    seconds: float
    device: str
    summary: dict[str, Any] = field(default_factory=dict)
    classes: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    @property
    def converged(self) -> bool:
        """Whether the solve stopped at gradient norm <= ``tol`` (``stop_reason`` "converged")."""
        return self.stop_reason == "converged"

    def save(self, out: str | Path) -> Path:
        """Write the result folder (summary.json last)."""
        out = prepare_run_dir(out)
        write_json(out / "config.json", config_to_dict(self.config))
        if self.classes is None:
            arrays = {"H": self.H, "W": self.W, "c": self.c, "c_prime": self.c_prime, "lam": self.lam}
        else:
            arrays = {"H": self.H, "W": self.W, "classes": self.classes, "weights": self.weights}
        if self.b is not None:
            arrays["b"] = self.b
        write_npz(out / "arrays.npz", **arrays)
        write_csv(out / "history.csv", self.history)
        write_json(out / SUMMARY, self.summary)
        return out


def load_result(folder: str | Path) -> UFMResult:
    """Read a complete result folder written by :meth:`UFMResult.save`.

    A folder without ``summary.json`` (written last) is an interrupted save and is refused,
    so what is loaded is always a whole result.

    Parameters
    ----------
    folder : the result folder (``config.json``, ``arrays.npz``, ``history.csv``,
        ``summary.json``), as ``ufm solve --out`` or :meth:`UFMResult.save` write it.

    Returns
    -------
    UFMResult
        The saved result: the same config, the arrays as CPU tensors of their saved
        dtype (``H`` (n, d), ``W`` (K, d), ...), the history (numbers as int or float,
        words such as ``step_kind`` as text, "" where a row lacks a column) and the summary.

    Examples
    --------
    >>> import tempfile, torch, ufm
    >>> result = ufm.solve(ufm.UFMConfig(K=3, d=3, num_lams=3, device="cpu"))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = result.save(f"{tmp}/run")
    ...     loaded = ufm.load_result(folder)
    >>> loaded.config == result.config, torch.equal(loaded.H, result.H), loaded.stop_reason
    (True, True, 'converged')
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ufm.load_result(tmp)
    Traceback (most recent call last):
        ...
    ValueError: ... holds no complete UFM result (expected summary.json, ...)
    """
    folder = Path(folder)
    if not is_complete(folder):
        raise ValueError(
            f"{str(folder)!r} holds no complete UFM result (expected {SUMMARY}, config.json, "
            "arrays.npz, history.csv)"
        )
    config = config_from_dict(UFMConfig, read_json(folder / "config.json"))
    summary = read_json(folder / SUMMARY)
    with np.load(folder / "arrays.npz") as data:
        arrays = {k: torch.from_numpy(data[k]) for k in data.files}
    history = [{k: _number(v) for k, v in row.items()} for row in read_csv(folder / "history.csv")]
    return UFMResult(
        config=config,
        H=arrays["H"],
        W=arrays["W"],
        b=arrays.get("b"),
        c=arrays.get("c"),
        c_prime=arrays.get("c_prime"),
        lam=arrays.get("lam"),
        history=history,
        stop_reason=summary["stop_reason"],
        seconds=summary["seconds"],
        device=summary["device"],
        summary=summary,
        classes=arrays.get("classes"),
        weights=arrays.get("weights"),
    )


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value
