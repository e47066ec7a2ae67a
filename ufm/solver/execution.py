"""How a solve may use the process it runs in: opt-in settings, and the process left as found.

Two settings make solves faster but reach beyond the solve itself, so the Python API leaves
them off and the CLI (``ufm solve``, the points of ``ufm sweep``, ``ufm reproduce``) turns
them on through :data:`CLI_EXECUTION`, where the process ends with the run:

* ``keep_freed_memory`` raises glibc's mmap and trim thresholds (:mod:`._allocator`): the
  medium feature solve ran 2.4 times faster with it. The setting lasts for the rest of the
  process (glibc has no way back to its dynamic thresholds), and the process keeps its peak
  memory instead of returning it, which a notebook or a long program may not want.
* ``pin_cpus`` keeps each chunk thread on its own CPU when there is one thread per allowed CPU
  (:mod:`.chunk_threads`): 2 to 14 % faster beside a busy process. Only the chunk threads
  are pinned, and they end with each pass over the chunks.

Whatever the settings, :func:`process_left_as_found` gives back, when the solve returns or
raises, torch's global thread count (the chunk threads switch it) and, when ``pin_cpus`` is
set, the CPU affinity of the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from . import _allocator
from .chunk_threads import allowed_cpus


@dataclass(frozen=True)
class ExecutionSettings:
    """How one solve may use the process; both off by default (see the module docstring).

    Parameters
    ----------
    keep_freed_memory : raise glibc's mmap and trim thresholds for the rest of the process,
        so large temporaries cost no page faults (Linux with glibc; elsewhere nothing).
    pin_cpus : keep each chunk thread on its own CPU when there is one per allowed CPU.
    """

    keep_freed_memory: bool = False
    pin_cpus: bool = False

    def __post_init__(self) -> None:
        for name in ("keep_freed_memory", "pin_cpus"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


# what the CLI's solves use: their process ends with the run, so both settings only help
CLI_EXECUTION = ExecutionSettings(keep_freed_memory=True, pin_cpus=True)


@contextmanager
def process_left_as_found(settings: ExecutionSettings) -> Iterator[None]:
    """Apply ``settings`` for a solve; on leaving, even by an exception, restore torch's
    thread count and (if ``pin_cpus``) the calling thread's CPU affinity."""
    threads = torch.get_num_threads()
    affinity = allowed_cpus() if settings.pin_cpus else None
    if settings.keep_freed_memory:
        _allocator.keep_freed_memory()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if affinity is not None and allowed_cpus() != affinity:
            os.sched_setaffinity(0, affinity)
