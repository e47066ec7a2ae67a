"""Old import path of :mod:`ufm.theory.derivation` (the SymPy derivation), kept so that ``ufm.symbolic`` still works."""

import sys

from .theory import derivation as _module

sys.modules[__name__] = _module
