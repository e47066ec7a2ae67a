"""A solve leaves its process as it found it: torch's thread count, the CPU affinity and glibc's
allocator. The allocator setting and the pinning of threads to CPUs happen only when asked for
(the CLI asks), and the thread count and affinity come back even when the solve raises."""

import os

import pytest
import torch

from ufm.cli import main
from ufm.solver import CLI_EXECUTION, ExecutionSettings, UFMConfig, _allocator, chunk_threads, solve
from ufm.solver.feature_newton import FeatureSolver

pytestmark = pytest.mark.skipif(chunk_threads.allowed_cpus() is None,
                                reason="the platform has no CPU affinity (not Linux)")


@pytest.fixture
def watched(monkeypatch):
    """Two torch threads on "two CPUs" (the first allowed CPU twice, so that a solve that
    pins would pin on any machine), and a record of every allocator setting and pinning."""
    previous_threads, previous_affinity = torch.get_num_threads(), os.sched_getaffinity(0)
    torch.set_num_threads(2)
    first = chunk_threads.allowed_cpus()[0]
    monkeypatch.setattr(chunk_threads, "allowed_cpus", lambda: [first, first])
    record = {"allocator": 0, "pinned": [], "first": first}

    def allocator() -> bool:
        record["allocator"] += 1
        return True

    real_pin = chunk_threads.pin_current_thread

    def pin(cpu: int) -> None:
        record["pinned"].append(cpu)
        real_pin(cpu)

    monkeypatch.setattr(_allocator, "keep_freed_memory", allocator)
    monkeypatch.setattr(chunk_threads, "pin_current_thread", pin)
    yield record
    torch.set_num_threads(previous_threads)
    os.sched_setaffinity(0, previous_affinity)  # whatever a failing test left behind


def _raise_midway(monkeypatch, pin_caller_to: int | None = None):
    """Make the first Newton pass over the features leave one torch thread (and, if given,
    the calling thread on one CPU) and then raise, as a failure deep in a solve would."""

    def failing_pass(self, tol):
        torch.set_num_threads(1)
        if pin_caller_to is not None:
            os.sched_setaffinity(0, {pin_caller_to})
        raise RuntimeError("failed midway")

    monkeypatch.setattr(FeatureSolver, "newton_pass", failing_pass)


FIXED = {"K": 4, "d": 5, "num_lams": 5, "tol": 1e-11}
LEARNED = {"K": 4, "d": 5, "num_lams": 5, "classifier": "learned", "tol": 1e-8}


@pytest.mark.parametrize("fields", [FIXED, LEARNED], ids=["fixed_etf", "learned"])
def test_a_solve_from_python_changes_nothing_in_its_process(watched, fields):
    affinity = os.sched_getaffinity(0)
    result = solve(UFMConfig(**fields))
    assert result.stop_reason == "converged"
    assert torch.get_num_threads() == 2
    assert os.sched_getaffinity(0) == affinity
    assert watched["allocator"] == 0 and watched["pinned"] == []


def test_a_solve_that_raises_midway_leaves_the_threads_as_they_were(watched, monkeypatch):
    affinity = os.sched_getaffinity(0)
    _raise_midway(monkeypatch)
    with pytest.raises(RuntimeError, match="failed midway"):
        solve(UFMConfig(**FIXED))
    assert torch.get_num_threads() == 2
    assert os.sched_getaffinity(0) == affinity
    assert watched["allocator"] == 0 and watched["pinned"] == []


def test_asked_for_the_allocator_setting_and_pinning_are_applied_and_undone(watched):
    affinity = os.sched_getaffinity(0)
    settings = ExecutionSettings(keep_freed_memory=True, pin_cpus=True)
    result = solve(UFMConfig(**FIXED), execution=settings)
    assert result.stop_reason == "converged"
    assert watched["allocator"] == 1
    assert watched["pinned"] and set(watched["pinned"]) == {watched["first"]}
    assert torch.get_num_threads() == 2
    assert os.sched_getaffinity(0) == affinity


def test_with_pinning_a_solve_that_raises_gives_back_the_callers_affinity(watched, monkeypatch):
    affinity = os.sched_getaffinity(0)
    _raise_midway(monkeypatch, pin_caller_to=watched["first"])
    with pytest.raises(RuntimeError, match="failed midway"):
        solve(UFMConfig(**FIXED), execution=ExecutionSettings(pin_cpus=True))
    assert os.sched_getaffinity(0) == affinity
    assert torch.get_num_threads() == 2
    assert watched["allocator"] == 0


def test_the_cli_solve_asks_for_both_settings(watched, tmp_path, capsys):
    assert CLI_EXECUTION == ExecutionSettings(keep_freed_memory=True, pin_cpus=True)
    affinity = os.sched_getaffinity(0)
    code = main(["solve", "--out", str(tmp_path / "run"), "--K", "4", "--d", "5",
                 "--num-lams", "5", "--no-progress"])
    assert code == 0
    assert watched["allocator"] == 1 and watched["pinned"]
    assert torch.get_num_threads() == 2 and os.sched_getaffinity(0) == affinity


def test_execution_settings_take_only_true_or_false():
    with pytest.raises(ValueError, match="pin_cpus must be True or False, got 'yes'"):
        ExecutionSettings(pin_cpus="yes")
    with pytest.raises(ValueError, match="keep_freed_memory must be True or False, got 1"):
        ExecutionSettings(keep_freed_memory=1)
