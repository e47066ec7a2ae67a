"""Chunks of samples spread over CPU threads, one whole chunk per thread at a time.

torch parallelises every operation over its intra-op threads and ends each one with a
barrier. A Newton pass over the features is a few hundred operations per chunk of a few
thousand samples, so one iteration of a medium problem crosses tens of thousands of
barriers. When another process takes one of the cores, each barrier waits for the thread
that lost its core, and the solve slows down several fold (the medium fixed-ETF solve of
``scripts/bench_contention.py``: 15 s idle, 50 s beside one busy process, on 2 cores).

:class:`ChunkThreads` removes the barriers instead: each of its threads takes whole chunks
from a shared queue and runs their operations with torch's intra-op parallelism switched off.
A thread that loses its core simply takes fewer chunks. The results come back in chunk
order, so every total formed from them is summed in the same order whatever the number of
threads and whichever thread ran which chunk.

The work on all n samples between the Newton passes goes through the same threads: the
anchor start, the products that carry the features to a new classifier and form
``H = X V^T``, and the distances to the theory per lam. On the calling thread, torch's
per-operation threads made that work three times slower beside a busy process (medium
fixed-ETF solve, alternating runs: 0.45-0.52 s idle against 1.19-1.58 s busy); on the chunk
threads it takes 0.15-0.20 s idle and 0.31-0.50 s busy (``scripts/bench_contention.py``).

When asked to (``pin_cpus``, on in the CLI and off in the Python API: :mod:`.execution`) and
there is one thread per CPU the process may use (Linux), each thread keeps its own CPU.
On the medium fixed-ETF solve, in three sets of 4, 5 and 8 alternating runs, the mean time
beside one busy process was 2 to 14 % lower with it (9.5 to 8.1 s, 10.6 to 10.3 s, 11.8 to
10.7 s) and the idle time the same (``scripts/bench_contention.py``). It does not confine the
busy process to one
core: the scheduler moves it between the CPUs, and the threads' own records (wall and CPU
time per chunk) show each worker running 63 to 74 % of the time beside it, near the fair
share of 2/3 that three runnable threads get on two cores, and the two taking about equal
numbers of chunks. That share is the floor of a two-thread solve: beside one busy process
its parallel part runs at best 1.5 times slower than idle. With fewer threads than CPUs
nothing is pinned, so processes that share a machine are not stacked on its first CPUs.

On CUDA, with one thread, or with ``parallel="kernels"`` (torch's own parallelism inside
each operation, the behaviour before) the chunks run one after the other in the calling
thread.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import torch

PARALLEL = ("chunks", "kernels")

T = TypeVar("T")
R = TypeVar("R")


def row_blocks(n: int, size: int) -> list[slice]:
    """The rows 0..n-1 in consecutive blocks of ``size`` (the last may be shorter)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on, or None where the platform does not say (not Linux)."""
    getter = getattr(os, "sched_getaffinity", None)
    return sorted(getter(0)) if getter is not None else None


def pin_current_thread(cpu: int) -> None:
    """Keep the calling thread (only it: pid 0 names the caller on Linux) on ``cpu``."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:  # a container may refuse; the thread then runs anywhere
        pass


def _worker_setup(cpus: list[int] | None, counter) -> None:
    """A new worker: torch's intra-op parallelism off, and its own CPU if ``cpus`` is given."""
    torch.set_num_threads(1)
    if cpus is not None:
        pin_current_thread(cpus[next(counter) % len(cpus)])


class ChunkThreads:
    """Map a function over chunks, on ``workers`` CPU threads or serially.

    ``workers`` is torch's intra-op thread count at construction (so ``OMP_NUM_THREADS`` and
    :func:`torch.set_num_threads` choose it), or 1 on CUDA and for ``parallel="kernels"``;
    ``cpus`` the CPUs its workers keep, one each (None: not pinned). They are pinned only
    when ``pin_cpus`` asks for it and there is one worker per allowed CPU; the pinned
    threads end with each :meth:`map`, so the caller's own affinity is never changed.
    """

    def __init__(self, device: torch.device, parallel: str = "chunks", pin_cpus: bool = False):
        if parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
        cpu = torch.device(device).type == "cpu"
        self.workers = torch.get_num_threads() if cpu and parallel == "chunks" else 1
        cpus = allowed_cpus() if pin_cpus and self.workers > 1 else None
        # the CPUs the workers keep, one each: only when there is one worker per CPU
        self.cpus = cpus if cpus is not None and len(cpus) == self.workers else None

    def map(self, function: Callable[[T], R], chunks: Iterable[T]) -> list[R]:
        """``[function(chunk) for chunk in chunks]``, the chunks shared out among the threads."""
        if self.workers == 1:
            return [function(chunk) for chunk in chunks]
        threads = torch.get_num_threads()
        try:
            setup = (self.cpus, itertools.count())
            with ThreadPoolExecutor(self.workers, initializer=_worker_setup, initargs=setup) as pool:
                futures = [pool.submit(function, chunk) for chunk in chunks]
                try:
                    return [future.result() for future in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            # the workers' setting is also the default of threads started later: undo it
            torch.set_num_threads(threads)
