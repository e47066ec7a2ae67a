"""Chunks of samples spread over CPU threads, one whole chunk per thread at a time.

torch parallelises every operation over its intra-op threads and ends each one with a
barrier. A Newton pass over the features is a few hundred operations per chunk of a few
thousand samples, so one iteration of a medium problem crosses tens of thousands of
barriers. When another process takes one of the cores, each barrier waits for the thread
that lost its core, and the solve slows down several fold (issue 12: 15 s idle, 50 s beside
one busy process, on 2 cores).

:class:`ChunkThreads` removes the barriers instead: each of its threads takes whole chunks
from a shared queue and runs their operations with torch's intra-op parallelism switched off.
A thread that loses its core simply takes fewer chunks. The results come back in chunk
order, so every total formed from them is summed in the same order whatever the number of
threads and whichever thread ran which chunk.

On CUDA, with one thread, or with ``parallel="kernels"`` (torch's own parallelism inside
each operation, the behaviour before) the chunks run one after the other in the calling
thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import torch

PARALLEL = ("chunks", "kernels")

T = TypeVar("T")
R = TypeVar("R")


def _one_intra_op_thread() -> None:
    torch.set_num_threads(1)


class ChunkThreads:
    """Map a function over chunks, on ``workers`` CPU threads or serially.

    ``workers`` is torch's intra-op thread count at construction (so ``OMP_NUM_THREADS`` and
    :func:`torch.set_num_threads` choose it), or 1 on CUDA and for ``parallel="kernels"``.
    """

    def __init__(self, device: torch.device, parallel: str = "chunks"):
        if parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
        cpu = torch.device(device).type == "cpu"
        self.workers = torch.get_num_threads() if cpu and parallel == "chunks" else 1

    def map(self, function: Callable[[T], R], chunks: Iterable[T]) -> list[R]:
        """``[function(chunk) for chunk in chunks]``, the chunks shared out among the threads."""
        if self.workers == 1:
            return [function(chunk) for chunk in chunks]
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(self.workers, initializer=_one_intra_op_thread) as pool:
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
