"""Shared by the tests of ``scripts/``: a script loaded as a module (the scripts are not a
package, and nothing in ``ufm`` imports them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(path: Path | str):
    """The module of ``path`` (a file, or a script's name in ``scripts/``), registered in
    ``sys.modules`` under its stem, where dataclasses look their module up."""
    path = Path(path)
    if not path.is_absolute() and path.parent == Path("."):
        path = SCRIPTS / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
