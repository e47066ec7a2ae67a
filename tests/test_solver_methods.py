"""The registry of solver methods: the configuration's choices, the CLI's, and what one line adds."""

import pytest
import torch

from ufm.cli import build_parser
from ufm.solver import UFMConfig, solve
from ufm.solver.methods import METHODS, method_factory
from ufm.solver.problem import build_problem
from ufm.solver.state import Method, RunState

SMALL = {"K": 4, "d": 5, "num_lams": 5, "classifier": "learned"}
# what the driver calls on a method (the protocol's members)
PROTOCOL = [name for name in vars(Method) if not name.startswith("_")]


def test_the_choices_of_method_are_the_registry():
    assert UFMConfig.CHOICES["method"] == tuple(METHODS) == ("auto", "newton", "newton_cg", "newton_gram", "gd")
    solve_parser = build_parser()._subparsers._group_actions[0].choices["solve"]
    (action,) = [a for a in solve_parser._actions if a.dest == "method"]
    assert action.help.startswith("one of auto, newton, newton_cg, newton_gram, gd;")  # the flag lists them in its help
    with pytest.raises(ValueError, match="method must be one of 'auto', 'newton', 'newton_cg', 'newton_gram', 'gd'; got 'adam'"):
        UFMConfig(method="adam")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_factory_makes_a_method(name):
    assert len(PROTOCOL) == 9 and {"step", "step_record"} <= set(PROTOCOL)
    state = RunState(build_problem(UFMConfig(**SMALL, method=name)))
    method = method_factory(name)(state)
    missing = [member for member in PROTOCOL if not callable(getattr(method, member, None))]
    assert not missing, f"{name}: {missing}"
    # the name it reports is one a user could ask for, never "auto" (SMALL learns W at K = 4)
    assert method.name == (name if name != "auto" else "newton_gram")


def test_the_default_picks_newton_gram_up_to_its_size_bound_and_l_bfgs_above():
    from ufm.solver.methods import AUTO_GRAM_MAX_K
    from ufm.solver.newton import FixedClassifierNewton, ReducedNewton
    from ufm.solver.newton_cg import GramNewtonCG

    def made(**fields):
        return type(method_factory("auto")(RunState(build_problem(UFMConfig(**fields)))))

    assert UFMConfig().method == "auto"
    assert made(**SMALL) is GramNewtonCG
    large = {"d": 4, "pairs": "random", "num_pairs": 300, "num_lams": 2, "classifier": "learned"}
    assert made(K=AUTO_GRAM_MAX_K, **large) is GramNewtonCG
    assert made(K=AUTO_GRAM_MAX_K + 1, **large) is ReducedNewton
    assert made(K=4, d=5, num_lams=5) is FixedClassifierNewton
    assert made(K=4, d=5, num_lams=5, bias=True, lam_b=1e-2) is GramNewtonCG  # the bias alone


@pytest.mark.parametrize("fields, used", [
    (SMALL, "newton_gram"), ({"K": 4, "d": 5, "num_lams": 5}, "newton"), ({**SMALL, "method": "gd"}, "gd")])
def test_the_summary_says_which_method_ran(fields, used):
    """"auto" is recorded as asked (so the configuration reruns as it was) and the method it
    chose beside it."""
    summary = solve(UFMConfig(**fields, max_iters=2, device="cpu")).summary
    assert summary["method"] == fields.get("method", "auto")
    assert summary["method_used"] == used


def test_an_unknown_name_is_refused_by_the_registry():
    with pytest.raises(ValueError, match="unknown method 'adam'; known methods: 'auto', 'newton', 'newton_cg', 'newton_gram', 'gd'"):
        method_factory("adam")


def test_one_registry_line_adds_a_method(monkeypatch):
    """A second name for heavy-ball momentum: accepted by the configuration, run by solve,
    and its results those of "gd" to the bit."""
    monkeypatch.setitem(METHODS, "heavy_ball", "ufm.solver.gd:HeavyBall")
    fields = {**SMALL, "max_iters": 30}
    added = solve(UFMConfig(**fields, method="heavy_ball"))
    gd = solve(UFMConfig(**fields, method="gd"))
    assert added.summary["method"] == "heavy_ball"
    assert torch.equal(added.H, gd.H) and torch.equal(added.W, gd.W)
    assert [row["loss"] for row in added.history] == [row["loss"] for row in gd.history]
