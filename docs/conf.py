"""Sphinx configuration of the ufm documentation site.

Build it (warnings are errors) with::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The notebooks (``docs/notebooks`` is a link to ``notebooks/``) are executed at build time and
their outputs cached in ``docs/_build/.jupyter_cache``: a notebook runs again only when its
code changes. Formulas are typeset by a copy of MathJax 3 that ships with the
``sphinx-mathjax-offline`` package and is copied into ``_static/mathjax``, so the site needs
no internet. The command-line page and the gallery are written by ``docs/_ext/ufm_docs.py``
from the parsers and the figure registry.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

import ufm  # noqa: E402  (after the path)

# The notebooks draw with matplotlib's inline backend, which ipykernel only selects when
# MPLBACKEND is unset; CI exports MPLBACKEND=Agg, under which plt.show() would draw nothing.
os.environ.pop("MPLBACKEND", None)

project = "ufm"
author = "ufm developers"
copyright = "2026, ufm developers"
release = ufm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "sphinx-mathjax-offline",
    "ufm_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "_templates", "_ext"]

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False
# classes of ufm.__all__ that are defined elsewhere: their page is ufm.<name> (package.rst)
autosummary_context = {
    "ufm_classes": [
        name
        for name in ufm.__all__
        if isinstance(getattr(ufm, name), type) and getattr(ufm, name).__module__ != "ufm"
    ]
}
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False
add_module_names = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- MyST and the notebooks --------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# -- Gallery (docs/_ext/ufm_docs.py) ------------------------------------------------------------
# A figure of ufm.plots.FIGURES without its image docs/gallery/<name>.png fails the build;
# redraw the gallery with: python scripts/make_gallery.py results/quick
ufm_gallery_missing_ok = False

# -- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
# curly quotes, but no dashes: "--config" stays two hyphens in prose and headings
smartquotes_action = "qe"
html_title = f"ufm {release}"
html_static_path: list[str] = []
html_show_sourcelink = True
html_copy_source = True
# the copy of MathJax 3 that sphinx-mathjax-offline puts into _static/mathjax
mathjax_path = "mathjax/tex-chtml.js"


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant without a doc comment would show its type's docstring (str, tuple): drop it."""
    if what in ("data", "attribute") and lines:
        type_doc = inspect.getdoc(type(obj))
        if type_doc and lines[0].strip() == type_doc.splitlines()[0].strip():
            lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_type_docstrings, priority=100)  # before numpydoc
