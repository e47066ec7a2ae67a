"""Sphinx directives that write pages of the site from the package itself, so they cannot drift.

* ``.. ufm-cli::`` renders every subcommand of :func:`ufm.cli.build_parser`: its usage line,
  description and every option of every argument group, with its default.
* ``.. ufm-gallery::`` renders the figures of :data:`ufm.plots.FIGURES` in their order, each
  image ``docs/gallery/<name>.png`` with the registry's caption. A figure without an image is
  a warning, so an error under ``-W`` (``ufm_gallery_missing_ok = True`` in ``conf.py`` makes
  it a note on the page instead).

The text is made by the pure functions :func:`cli_rst` and :func:`gallery_rst`, which need
neither Sphinx nor docutils (``tests/test_docs.py`` calls them); only :func:`setup` imports
Sphinx.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import textwrap
from pathlib import Path

_RST_SPECIAL = re.compile(r"([\\`*|_<>\[\]])")


def rst_escape(text: str) -> str:
    """``text`` with the characters reStructuredText would read as markup backslash-escaped."""
    return _RST_SPECIAL.sub(r"\\\1", text)


def _heading(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _option_signature(action: argparse.Action) -> str:
    """``--flag METAVAR`` the way ``--help`` writes it (all option strings, comma separated)."""
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    formatter = argparse.HelpFormatter("ufm")
    default = action.dest.upper()
    args = formatter._format_args(action, default)
    return ", ".join(f"{option} {args}" for option in action.option_strings)


def _option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help of ``action`` as ``--help`` prints it, with the formatter's default appended.

    Choices hidden by a metavar (so absent from the signature) are appended to the help.
    """
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""
    if action.choices is not None and action.metavar is not None:
        choices = ", ".join(str(c) for c in action.choices)
        text = f"{text} (one of: {choices})" if text else f"one of: {choices}"
    return " ".join(text.split())


def _positional_signature(action: argparse.Action) -> str:
    return action.metavar or action.dest


def parser_rst(parser: argparse.ArgumentParser, program: str, level: str = "-") -> list[str]:
    """The reStructuredText of one parser: usage, description, one ``.. option::`` per flag."""
    lines = _heading(program, level)
    usage = parser.format_usage().strip()
    lines += [".. code-block:: text", ""]
    lines += ["   " + line for line in usage.splitlines()]
    lines += [""]
    if parser.description:
        lines += [rst_escape(" ".join(parser.description.split())), ""]
    lines += [f".. program:: {program}", ""]
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        title = group.title or "arguments"
        lines += [f".. rubric:: {rst_escape(title[0].upper() + title[1:])}", ""]
        if group.description:
            lines += [rst_escape(" ".join(group.description.split())), ""]
        for action in actions:
            if action.option_strings:
                signature = _option_signature(action)
            else:
                signature = _positional_signature(action)
            help_text = _option_help(parser, action) or "(no description)"
            lines += [f".. option:: {signature}", ""]
            lines += ["   " + line for line in textwrap.wrap(rst_escape(help_text), 92)]
            lines += [""]
    return lines


@contextlib.contextmanager
def _columns(width: int):
    """Fix ``$COLUMNS``, where argparse wraps usage lines, so the page needs no terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_rst(parser: argparse.ArgumentParser | None = None, width: int = 92) -> str:
    """The command-line reference: the ``ufm`` command, then one section per subcommand."""
    with _columns(width):
        if parser is None:
            from ufm.cli import build_parser

            parser = build_parser()
        return _cli_rst(parser)


def _cli_rst(parser: argparse.ArgumentParser) -> str:
    program = parser.prog
    lines = [".. code-block:: text", ""]
    lines += ["   " + line for line in parser.format_usage().strip().splitlines()]
    lines += [""]
    if parser.description:
        lines += [rst_escape(" ".join(parser.description.split())), ""]
    subcommands = _subcommands(parser)
    summaries = _subcommand_help(parser)
    if subcommands:
        lines += ["Subcommands:", ""]
        for name in subcommands:
            summary = rst_escape(" ".join((summaries.get(name) or "").split()))
            item = f"* :ref:`{program} {name} <cli-{name}>`"
            lines += [item + (f": {summary}" if summary else "")]
        lines += [""]
    for name, sub in subcommands.items():
        lines += [f".. _cli-{name}:", ""]
        lines += parser_rst(sub, f"{program} {name}")
    return "\n".join(lines) + "\n"


def gallery_rst(
    figures: dict, folder: str | Path, image_prefix: str = "gallery"
) -> tuple[str, list[str]]:
    """The gallery page's figures and the names whose image ``folder/<name>.png`` is missing.

    ``figures`` maps a figure's name to an object with a ``caption`` (:data:`ufm.plots.FIGURES`);
    images are referred to as ``<image_prefix>/<name>.png`` relative to the page.
    """
    folder = Path(folder)
    lines: list[str] = []
    missing = []
    for number, (name, spec) in enumerate(figures.items(), start=1):
        title = f"{number}. {name.replace('_', ' ').capitalize()}"
        lines += [f".. _figure-{name}:", ""]
        lines += _heading(title, "-")
        if not (folder / f"{name}.png").is_file():
            missing.append(name)
            lines += [f"(no image ``{image_prefix}/{name}.png``)", ""]
            continue
        alt = name.replace("_", " ")
        lines += [f".. figure:: {image_prefix}/{name}.png", f"   :alt: {alt}", ""]
        caption = " ".join(spec.caption.split())
        lines += ["   " + line for line in textwrap.wrap(rst_escape(caption), 92)]
        lines += ["", f"   ``ufm figures --from results/quick --only {name}``", ""]
    return "\n".join(lines) + "\n", missing


def setup(app):
    """Register the ``ufm-cli`` and ``ufm-gallery`` directives."""
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    logger = logging.getLogger(__name__)

    class _Generated(SphinxDirective):
        has_content = False

        def text(self) -> str:  # pragma: no cover - overridden
            raise NotImplementedError

        def run(self):
            node = nodes.container()
            source = self.get_source_info()[0]
            nested_parse_with_titles(
                self.state, StringList(self.text().splitlines(), source=source), node
            )
            return node.children

    class CliDirective(_Generated):
        def text(self) -> str:
            import importlib

            import ufm.cli

            for module in ("ufm.cli", "ufm.config", "ufm.commands", *ufm.cli.COMMAND_MODULES):
                self.env.note_dependency(importlib.import_module(module).__file__)
            return cli_rst()

    class GalleryDirective(_Generated):
        def text(self) -> str:
            from ufm.plots import FIGURES

            page_dir = Path(self.env.doc2path(self.env.docname)).parent
            text, missing = gallery_rst(FIGURES, page_dir / "gallery")
            report = logger.info if self.config.ufm_gallery_missing_ok else logger.warning
            for name in missing:
                report(
                    "gallery: no image gallery/%s.png for figure %r "
                    "(python scripts/make_gallery.py results/quick)",
                    name,
                    name,
                    location=self.get_location(),
                )
            return text

    app.add_config_value("ufm_gallery_missing_ok", False, "env", bool)
    app.add_directive("ufm-cli", CliDirective)
    app.add_directive("ufm-gallery", GalleryDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
