"""The documentation site's own code, without building it (and without Sphinx installed).

The page generators of ``docs/_ext/ufm_docs.py`` and the offline link check
``scripts/check_docs.py`` are plain functions; CI builds the site itself (``.ci/run``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from scripts_support import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ufm_docs():
    return load_script(ROOT / "docs" / "_ext" / "ufm_docs.py")


@pytest.fixture(scope="module")
def check_docs():
    return load_script(ROOT / "scripts" / "check_docs.py")


# -- the command-line page -----------------------------------------------------------------------


def test_cli_page_has_every_subcommand_and_every_flag(ufm_docs):
    from ufm.cli import build_parser

    text = ufm_docs.cli_rst()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices, "no subcommands"
    options = re.findall(r"^\.\. option:: (.*)$", text, flags=re.M)
    for name, sub in subparsers.choices.items():
        assert f".. program:: ufm {name}\n" in text, name
        assert f"\nufm {name}\n{'-' * len(f'ufm {name}')}\n" in text, name
        assert f":ref:`ufm {name} <cli-{name}>`" in text, name
        section = text.split(f".. program:: ufm {name}\n", 1)[1].split(".. program::", 1)[0]
        documented = {
            flag.strip().split()[0]
            for line in re.findall(r"^\.\. option:: (.*)$", section, flags=re.M)
            for flag in line.split(", ")
        }
        for action in sub._actions:
            if action.help is argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                assert flag in documented, f"ufm {name} {flag} missing from the CLI page"
    assert len(options) >= len(subparsers.choices)


def test_cli_page_does_not_depend_on_the_terminal(ufm_docs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = ufm_docs.cli_rst()
    monkeypatch.setenv("COLUMNS", "300")
    assert ufm_docs.cli_rst() == narrow
    import os

    assert os.environ["COLUMNS"] == "300"


def test_cli_page_of_a_small_parser(ufm_docs):
    parser = argparse.ArgumentParser(prog="tool", description="Does *things*.")
    subparsers = parser.add_subparsers(dest="command")
    run = subparsers.add_parser("run", help="run it", description="Run `it`.")
    run.add_argument("--n-items", type=int, default=3, help="how many (default: %(default)s)")
    run.add_argument("--mode", choices=["a", "b"], default="a", help="the mode")
    run.add_argument("--flag", action="store_true", help="a_flag")
    run.add_argument("--hidden", help=argparse.SUPPRESS)
    run.add_argument("path", help="where")
    text = ufm_docs.cli_rst(parser)
    assert "Does \\*things\\*." in text and "Run \\`it\\`." in text
    assert ".. option:: --n-items N_ITEMS\n\n   how many (default: 3)" in text
    assert ".. option:: --mode {a,b}\n\n   the mode" in text
    assert ".. option:: --flag\n\n   a\\_flag" in text
    assert ".. option:: path\n\n   where" in text
    assert "--hidden" not in text
    assert "* :ref:`tool run <cli-run>`: run it" in text


def test_rst_escape(ufm_docs):
    assert ufm_docs.rst_escape("w_c *x* `y` |z| \\") == "w\\_c \\*x\\* \\`y\\` \\|z\\| \\\\"


# -- the gallery page ----------------------------------------------------------------------------


def test_gallery_page_from_a_registry(ufm_docs, tmp_path):
    (tmp_path / "first.png").write_bytes(b"png")
    figures = {
        "first": SimpleNamespace(caption="The first figure, with  w_c\nand *stars*."),
        "second_one": SimpleNamespace(caption="Not drawn yet."),
    }
    text, missing = ufm_docs.gallery_rst(figures, tmp_path)
    assert missing == ["second_one"]
    assert "1. First\n--------" in text and "2. Second one\n" in text
    assert ".. figure:: gallery/first.png" in text
    assert "The first figure, with w\\_c and \\*stars\\*." in text
    assert ".. figure:: gallery/second_one.png" not in text


def test_gallery_page_names_every_registered_figure(ufm_docs):
    from ufm.plots import FIGURES

    text, _ = ufm_docs.gallery_rst(FIGURES, ROOT / "docs" / "gallery")
    for name in FIGURES:
        assert f".. _figure-{name}:" in text


# -- the offline link check ----------------------------------------------------------------------


def _site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>")
    return root


GOOD = {
    "index.html": (
        '<a href="api/page.html#ufm.solve">solve</a> <a href="#top" id="top">top</a>'
        '<a href="https://example.org/x">outside</a> <a href="mailto:a@b.c">mail</a>'
        '<img src="_images/plot.png" srcset="_images/plot.png 1x, _images/plot.png 2x">'
        '<link rel="stylesheet" href="_static/site.css"><script src="_static/x.js"></script>'
        '<a href="api/">folder</a> <a href="notes%20page.html">spaces</a>'
    ),
    "api/page.html": '<dt id="ufm.solve">solve</dt><a href="../index.html#top">up</a>',
    "api/index.html": "<p>folder page</p>",
    "notes page.html": '<a href="/index.html">root</a>',
}


def _assets(root: Path) -> None:
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "plot.png").write_bytes(b"png")
    (root / "_static").mkdir()
    (root / "_static" / "site.css").write_text("")
    (root / "_static" / "x.js").write_text("")


def test_link_check_passes_a_good_site(check_docs, tmp_path):
    _assets(_site(tmp_path, GOOD))
    problems, local, external = check_docs.check_site(tmp_path)
    assert problems == []
    assert local == 11 and external == 1
    assert check_docs.main([str(tmp_path), "--images", "index.html"]) == 0


def test_link_check_finds_each_kind_of_problem(check_docs, tmp_path, capsys):
    pages = dict(GOOD)
    pages["broken.html"] = (
        '<a href="missing.html">gone</a> <a href="api/page.html#nowhere">bad anchor</a>'
        '<img src="_images/absent.png"> <script src="https://cdn.example.org/mathjax.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/css"> <a href="#">empty fragment</a>'
    )
    _assets(_site(tmp_path, pages))
    problems, _, _ = check_docs.check_site(tmp_path)
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    assert "broken.html: <a href='missing.html'> points to a missing file" in joined
    assert "has no anchor #nowhere" in joined
    assert "<img src='_images/absent.png'> points to a missing file" in joined
    assert "loads https://cdn.example.org/mathjax.js from the internet" in joined
    assert "loads //fonts.example.org/css from the internet" in joined
    assert check_docs.main([str(tmp_path)]) == 1
    assert "5 problems in" in capsys.readouterr().err


def test_image_and_api_page_requirements(check_docs, tmp_path):
    import ufm

    pages = {"index.html": "<p>home</p>", "notebooks/a.html": "<p>no output</p>"}
    pages["notebooks/b.html"] = '<img src="../x.png">'
    pages.update({f"api/generated/ufm.{name}.html": "<p></p>" for name in ufm.__all__[1:]})
    _site(tmp_path, pages)
    assert check_docs.check_images(tmp_path, ["notebooks/*.html"]) == [
        "notebooks/a.html: shows no image"
    ]
    assert check_docs.check_images(tmp_path, ["nothing/*.html"]) == [
        "nothing/*.html: no page matches"
    ]
    assert check_docs.check_api_pages(tmp_path, "ufm") == [
        f"api/generated/ufm.{ufm.__all__[0]}.html: missing (a name of ufm.__all__)"
    ]


def test_link_check_refuses_a_folder_without_a_site(check_docs, tmp_path):
    assert check_docs.main([str(tmp_path)]) == 1


# -- CI and the README agree ---------------------------------------------------------------------


def test_ci_builds_the_docs_with_the_readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    commands = block.splitlines()
    assert any("python -m sphinx -W -b html docs docs/_build/html" in c for c in commands)
    assert any(c.startswith("python scripts/check_docs.py docs/_build/html") for c in commands)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, command
    assert "pip install -e \".[docs]\"" in block
    extras = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    assert "\ndocs = [" in extras


def test_docs_sources_exist():
    docs = ROOT / "docs"
    for name in ("conf.py", "index.md", "model.md", "theory.md", "notebooks.md", "gallery.rst",
                 "cli.rst", "cite.md", "architecture.md", "api/index.rst"):
        assert (docs / name).is_file(), name
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (docs / "notebooks" / notebook.name).is_file(), notebook.name
        assert f"notebooks/{notebook.stem}" in (docs / "notebooks.md").read_text(), notebook.stem


# -- the theory ships with the repository --------------------------------------------------------

# The specification once lived in a file outside the repository, and some docstrings cited an
# internal tracker by number: readers could follow neither. The page docs/theory.md keeps the
# specification's section numbers, so every reference now points into the repository.
STALE_REFERENCES = (
    re.compile(r"THEORY\.md"),
    re.compile(r"\bissues?\s*#?\d+", flags=re.IGNORECASE),
)


def _shipped_text_files():
    paths = [ROOT / "README.md"]
    for folder in ("ufm", "notebooks", "docs", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if not path.is_file() or "__pycache__" in parts or ".ipynb_checkpoints" in parts:
                continue
            if parts[:2] in (("docs", "_build"), ("docs", "notebooks")):  # output; a link
                continue
            paths.append(path)
    for path in paths:
        try:
            yield path, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images and other binary files
            continue


def test_no_reference_to_a_theory_file_or_tracker_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}"
        for path, text in _shipped_text_files()
        for pattern in STALE_REFERENCES
        for match in pattern.finditer(text)
    ]
    assert not found, "cite docs/theory.md (or say what is meant) instead of:\n" + "\n".join(found)
    scanned = {path.relative_to(ROOT).as_posix() for path, _ in _shipped_text_files()}
    assert {"README.md", "docs/theory.md", "ufm/__init__.py"} <= scanned
    assert any(name.startswith("notebooks/") and name.endswith(".ipynb") for name in scanned)


def test_theory_page_has_the_numbered_sections_the_code_cites():
    text = (ROOT / "docs" / "theory.md").read_text()
    headings = re.findall(r"^## (\d+)\. (.+)$", text, flags=re.MULTILINE)
    assert [int(number) for number, _ in headings] == list(range(1, 14)), headings
    titles = dict(headings)
    for number, word in (("1", "Setting"), ("2", "optimum"), ("3", "losses"),
                         ("4", "classifier"), ("5", "claims"), ("6", "Metric"),
                         ("7", "Pitfalls"), ("8", "network"), ("9", "Mixtures"),
                         ("10", "Asymptotics"), ("11", "imbalance"), ("12", "features file"),
                         ("13", "Minority collapse")):
        assert word.lower() in titles[number].lower(), (number, titles[number])
    assert re.search(r"^theory$", (ROOT / "docs" / "index.md").read_text(), flags=re.MULTILINE)
