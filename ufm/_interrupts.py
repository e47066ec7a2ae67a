"""SIGTERM read as Ctrl-C: the one way a run is asked to stop, whoever asks.

A solve (:mod:`ufm.solver.run`) and a sweep's worker (:mod:`ufm.sweep.point_job`) stop on
KeyboardInterrupt and leave a checkpoint. A scheduler, ``kill`` and a sweep stopping its
workers send SIGTERM instead, whose default ends the process at once; inside
:func:`sigterm_as_interrupt` it raises KeyboardInterrupt as well.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, until the block ends (the main
    thread only: elsewhere signal handlers cannot be set, and the block changes nothing)."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not in the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
