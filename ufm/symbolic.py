"""Old import path of :mod:`ufm.theory.derivation` (the SymPy derivation).

Kept so that ``import ufm.symbolic`` and ``from ufm.symbolic import ...`` still work:
this name is the same module object as the new one.
"""

import sys

from .theory import derivation as _module

sys.modules[__name__] = _module
