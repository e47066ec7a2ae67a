"""The API pages a reader can follow (issue 24): every public name of :mod:`ufm` shows a
runnable example, every public function its parameters and what it returns, and the figure
count that ``ufm reproduce --help`` and the README state is the one of :data:`ufm.plots.FIGURES`.

The examples run here with the standard library's doctest, exactly as a reader would type
them, so an example that no longer runs, or prints something else, fails this file.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import inspect
import io
import itertools
import re
from pathlib import Path

import pytest

import ufm

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]


def _defining_module(name: str):
    """The module that defines the public name (the package imports it from there)."""
    return importlib.import_module(ufm._SOURCES[name], "ufm")


def _attribute_docstring(name: str) -> tuple[str, int] | None:
    """The docstring of a module-level constant and its line (0-based): the string that
    follows its assignment, as Sphinx's autodoc reads it (a dict such as LOSSES cannot carry
    a ``__doc__`` of its own)."""
    module = _defining_module(name)
    body = ast.parse(Path(inspect.getsourcefile(module)).read_text()).body
    for statement, following in itertools.pairwise(body):
        targets = (statement.targets if isinstance(statement, ast.Assign)
                   else [statement.target] if isinstance(statement, ast.AnnAssign) else [])
        if (any(isinstance(t, ast.Name) and t.id == name for t in targets)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            return inspect.cleandoc(following.value.value), following.lineno - 1
    return None


def _is_constant(obj) -> bool:
    return not (inspect.isclass(obj) or callable(obj))


def _doctests(name: str) -> list[doctest.DocTest]:
    """The doctests of a public name; a class's include those of its methods."""
    obj = getattr(ufm, name)
    globs = {"__name__": f"ufm_docstring_{name}"}
    if _is_constant(obj):
        text, line = _attribute_docstring(name) or ("", None)
        module = _defining_module(name)
        return [doctest.DocTestParser().get_doctest(
            text, globs, f"ufm.{name}", inspect.getsourcefile(module), line)]
    return doctest.DocTestFinder().find(obj, f"ufm.{name}", globs=globs)


def _docstring(name: str) -> str:
    obj = getattr(ufm, name)
    if _is_constant(obj):
        return (_attribute_docstring(name) or ("", None))[0]
    return inspect.getdoc(obj) or ""


def _has_section(text: str, title: str) -> bool:
    """A numpydoc section: the title on its own line, underlined by dashes of its length."""
    return re.search(rf"^{title}\n-{{{len(title)}}}$", text, re.MULTILINE) is not None


@pytest.mark.parametrize("name", ufm.__all__)
def test_public_name_has_a_passing_example(name):
    tests = _doctests(name)
    assert sum(len(test.examples) for test in tests) > 0, f"ufm.{name} shows no >>> example"
    assert _has_section(_docstring(name), "Examples"), f"ufm.{name} has no Examples section"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


FUNCTIONS = [name for name in ufm.__all__
             if callable(getattr(ufm, name)) and not inspect.isclass(getattr(ufm, name))]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_documents_parameters_and_returns(name):
    text = _docstring(name)
    for section in ("Parameters", "Returns"):
        assert _has_section(text, section), f"ufm.{name} has no {section} section"


DATACLASSES = [name for name in ufm.__all__ if dataclasses.is_dataclass(getattr(ufm, name))]
FIELD_SECTIONS = ("Parameters", "Attributes")


def _section_names(text: str, title: str) -> set[str]:
    """The names a numpydoc section lists: the section runs from ``title`` over its line of
    dashes to the next such header; each entry starts a line (at the section's indentation)
    as ``name : type``, and ``K, d : int`` names both K and d."""
    lines = text.splitlines()
    names: set[str] = set()
    for i, line in enumerate(lines[:-1]):
        if line.strip() != title or lines[i + 1].strip() != "-" * len(title):
            continue
        indent = len(line) - len(line.lstrip())
        for j in range(i + 2, len(lines)):
            entry = lines[j]
            if j + 1 < len(lines) and re.fullmatch(r"\s*-{3,}", lines[j + 1]) and entry.strip():
                break  # the next section's header
            if entry.strip() and len(entry) - len(entry.lstrip()) == indent:
                head = re.match(r"\s*([\w\s,*]+?)\s*:(\s|$)", entry)
                if head:
                    names.update(n.strip().lstrip("*") for n in head.group(1).split(","))
    return names


def test_section_names_reads_headers_and_combined_entries():
    text = "Intro.\n\nParameters\n----------\nK, d : int\n    Sizes.\nloss : str\n" \
           "    A name: with a colon.\n\nExamples\n--------\nx : not a field\n"
    assert _section_names(text, "Parameters") == {"K", "d", "loss"}
    assert _section_names(text, "Attributes") == set()


@pytest.mark.parametrize("name", DATACLASSES)
def test_public_dataclass_documents_every_field(name):
    cls = getattr(ufm, name)
    text = _docstring(name)
    assert any(_has_section(text, title) for title in FIELD_SECTIONS), (
        f"ufm.{name} has no Parameters or Attributes section")
    documented = set().union(*(_section_names(text, title) for title in FIELD_SECTIONS))
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented]
    assert not missing, f"ufm.{name} does not document the fields {missing}"


def test_every_public_name_has_a_docstring_of_its_own():
    for name in ufm.__all__:
        text = _docstring(name)
        assert text, f"ufm.{name} has no docstring"
        obj = getattr(ufm, name)
        if _is_constant(obj):
            assert text != inspect.getdoc(type(obj)), f"ufm.{name} shows its type's docstring"


def _figure_counts(text: str) -> list[int]:
    """Every count stated as '<number> figures' (digits or a word), as numbers."""
    words = "|".join(NUMBER_WORDS)
    found = re.findall(rf"\b(\d+|{words})\s+figures\b", text, re.IGNORECASE)
    return [int(n) if n.isdigit() else NUMBER_WORDS.index(n.lower()) for n in found]


def test_reproduce_help_states_the_number_of_figures(capsys):
    from ufm import cli
    from ufm.plots import FIGURES

    with pytest.raises(SystemExit) as stop:
        cli.main(["reproduce", "--help"])
    assert stop.value.code == 0
    counts = _figure_counts(capsys.readouterr().out)
    assert counts == [len(FIGURES)], counts


def test_readme_figure_counts_match_the_figures():
    from ufm.plots import FIGURES

    counts = _figure_counts((ROOT / "README.md").read_text())
    assert counts, "the README states no figure count"
    assert set(counts) == {len(FIGURES)}, counts
