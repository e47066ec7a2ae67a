"""The package's shape: no import cycle, plotting apart from computing, every module documented.

Modules are as long as their one idea needs: there is no line cap (a cap of 400 lines once
split classes into free functions that reached into each other's state).

The import graph is read from the source with :mod:`ast` (every ``import`` statement, those
inside functions and under ``TYPE_CHECKING`` included), not from ``sys.modules``, so a cycle
that only shows on some import order is still found.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ufm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """Edges module -> module for every import of a ufm module by a ufm module."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (
                    _resolve(name, is_package, node.level, node.module)
                    if node.level
                    else (node.module or "")
                )
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for succ in sorted(graph[node]):
            if state.get(succ) == 1:
                return stack[stack.index(succ):] + [succ]
            if succ not in state:
                found = visit(succ)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_sees_a_cycle_and_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_relative_imports():
    graph = import_graph()
    assert "ufm.theory.reduced_equations" in graph["ufm.theory.optimum"]
    assert "ufm.reproduce.layout" in graph["ufm.plots.files"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_four_parts_are_packages():
    for part in ("theory", "solver", "metrics", "nets", "reproduce", "plots"):
        assert (PACKAGE / part / "__init__.py").is_file(), part


# Which parts each part may not import: data flows from the theory and the solver to the
# networks' measurements, the reproduction and the figures, never back.
FORBIDDEN = {
    "ufm.theory": ("ufm.solver", "ufm.nets", "ufm.reproduce", "ufm.plots", "ufm.commands"),
    "ufm.solver": ("ufm.nets", "ufm.reproduce", "ufm.plots", "ufm.commands"),
    "ufm.metrics": ("ufm.theory", "ufm.solver", "ufm.nets", "ufm.reproduce", "ufm.plots"),
    # the networks' measurements may use the solver (the exact optimum for a network's own W)
    "ufm.nets": ("ufm.reproduce", "ufm.plots", "ufm.commands"),
}


def test_parts_import_only_downstream():
    graph = import_graph()
    for module, targets in graph.items():
        for part, forbidden in FORBIDDEN.items():
            if module == part or module.startswith(part + "."):
                bad = sorted(t for t in targets if t.startswith(forbidden))
                assert not bad, f"{module} imports {bad}"


def test_only_the_command_line_imports_the_commands():
    """The commands are the top of the graph: the sweep, the reproduction and the library
    take what they share with a command (the solve's execution fields, its checkpoint
    interval) from the library, never from ``ufm.commands``."""
    graph = import_graph()
    outside = {
        module: sorted(t for t in targets if t == "ufm.commands" or t.startswith("ufm.commands."))
        for module, targets in graph.items()
        if module != "ufm.cli" and module != "ufm.commands" and not module.startswith("ufm.commands.")
    }
    importers = {module: targets for module, targets in outside.items() if targets}
    assert not importers, f"modules outside the command line import ufm.commands: {importers}"
    assert "ufm.commands" in graph["ufm.commands.solve"]  # the graph does see such imports


def test_architecture_page_names_every_module():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [
        str(p.relative_to(PACKAGE.parent))
        for p in sorted(PACKAGE.rglob("*.py"))
        if f"`{p.relative_to(PACKAGE.parent)}`" not in text
        and str(p.relative_to(PACKAGE.parent)) not in text
    ]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_architecture_page_names_every_script():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    scripts = sorted((PACKAGE.parent / "scripts").glob("*.py"))
    missing = [f"scripts/{p.name}" for p in scripts if f"`scripts/{p.name}`" not in text]
    assert scripts and not missing, f"docs/architecture.md does not describe {missing}"


def test_old_import_paths_are_the_new_modules():
    import importlib

    moved = {
        "ufm.convex": "ufm.theory.certificate",
        "ufm.symbolic": "ufm.theory.derivation",
        "ufm.reduced": "ufm.theory.reduced_equations",
        "ufm.asymptotics": "ufm.theory.asymptotics",
    }
    for old, new in moved.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from ufm.convex import certify, duality_gap
    from ufm.reduced import solve_exp_linear
    from ufm.theory import gain, optimal_features
    from ufm.theory.certificate import certify as new_certify

    assert certify is new_certify and callable(duality_gap) and callable(solve_exp_linear)
    assert gain(10, 1.0) == 10 / 9 and callable(optimal_features)


def test_the_solver_and_certificate_never_ask_which_loss_it_is():
    """They dispatch on what a loss declares (ufm/losses/base.py), so adding a loss is one file
    and one registry line: no module outside ufm/losses names a loss class, and none compares
    a loss's name, except the exact theory (which has derivations for named losses)."""
    import ufm.losses

    classes = {name for name in ufm.losses.__all__
               if isinstance(getattr(ufm.losses, name), type)
               and issubclass(getattr(ufm.losses, name), ufm.losses.MixupLoss)}
    classes = (classes | {"_SoftmaxFamily"}) - {"MixupLoss"}
    places = ["solver", "theory/certificate.py", "plots", "commands", "cli.py", "config.py"]
    offenders = []
    for place in places:
        for path in [PACKAGE / place] if place.endswith(".py") else sorted((PACKAGE / place).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
            names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
            named = sorted(names & classes)
            if named:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {named}")
    assert not offenders, offenders
