"""Memory a job will need, the memory the machine has, and the check between them.

A job too large for the machine (``ufm solve --K 1000 --d 1000`` asks for hundreds of GB)
would otherwise fail deep inside its first allocation with a traceback, or be killed by the
operating system, after its folder was made. Each job estimates its own needs
(:func:`ufm.solver.solve_memory`, :func:`ufm.nets.training_memory`) as a
:class:`MemoryEstimate`; :func:`check_memory` compares it with the memory available on the
device that will hold it, before any allocation, and refuses with a ValueError that gives
both numbers. The estimates are of the large arrays, an order of magnitude and not a promise:
``check_memory=False`` (``--ignore-memory-check``) runs anyway.

Available memory: on CUDA the free memory of the device (``torch.cuda.mem_get_info``);
elsewhere (CPU, and MPS, whose memory is the machine's) the machine's available memory, from
psutil when it is installed, else from ``/proc/meminfo``; None where neither says (then
nothing is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1e9
OVERRIDE_HINT = "--ignore-memory-check (check_memory=False in Python) runs it anyway"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job needs, by what holds them (``{"features H (n x d)": 168e9, ...}``)."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self, largest: int = 3) -> str:
        """``about 336.0 GB (features H 168.0 GB, ...)``: the total and its largest parts."""
        parts = sorted(self.parts.items(), key=lambda item: -item[1])[:largest]
        listed = ", ".join(f"{name} {_gb(size)}" for name, size in parts if size > 0)
        return f"about {_gb(self.total)}" + (f" ({listed})" if listed else "")


def _gb(size: float) -> str:
    return f"{size / GB:,.1f} GB" if size >= 0.05 * GB else f"{size / 1e6:.1f} MB"


def available_memory(device: torch.device) -> int | None:
    """Bytes that ``device`` can still allocate, or None if this machine does not say."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:
        return _meminfo_available()
    return int(psutil.virtual_memory().available)


def _meminfo_available(path: str | Path = "/proc/meminfo") -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), or None."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            fields = line.split()
            return int(fields[1]) * 1024  # the file counts kB
    return None


def check_memory(estimate: MemoryEstimate, device: torch.device, what: str, smaller: str) -> None:
    """Refuse ``what`` ("the solve") when its ``estimate`` exceeds the memory available on
    ``device``; ``smaller`` says how to make it fit ("lower K or d"). Nothing is refused
    where the available memory is unknown."""
    available = available_memory(device)
    if available is None or estimate.total <= available:
        return
    where = "on this machine" if device.type != "cuda" else f"on {device}"
    raise ValueError(
        f"{what} needs {estimate.describe()} of memory, but {_gb(available)} is available "
        f"{where}; {smaller}, or {OVERRIDE_HINT}"
    )
