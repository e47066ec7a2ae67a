"""Device and dtype selection. No code in ``ufm`` names a device directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``.

    ``"auto"`` picks CUDA, then MPS, then CPU. An explicit device that is not available
    raises ``ValueError`` rather than silently falling back.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(
            f"device must be one of {', '.join(map(repr, DEVICE_CHOICES))} "
            f"(optionally 'cuda:N'); got {device!r}"
        )
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available here")
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was requested but MPS is not available here")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Return the torch dtype named by ``dtype`` ("float32" or "float64")."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of 'float32', 'float64'; got {dtype!r}")
    return DTYPES[dtype]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (0: unchanged), restored after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """The threads of numpy's BLAS (OpenBLAS, MKL or BLIS, as ``threadpoolctl`` finds it)
    limited to ``threads`` inside the block (0: unchanged), restored after.

    ``torch.set_num_threads`` does not reach numpy's BLAS, which by default takes every core.
    A network's measurement does its statistics in numpy; on a loaded 2-core machine two
    BLAS threads waiting for each other made the digits MLP's measurements markedly dearer
    in CPU time than one (docs/performance.md). The thread count moves the last bits of
    BLAS's long dot products, so the measurement sums its norms without BLAS
    (:func:`ufm.nets.ufm_comparison.frobenius_norm`) and its numbers do not depend on it.
    """
    if not threads:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield
