"""Old import path of :mod:`ufm.theory.reduced_equations` (the root-finder for the reduced equations).

Kept so that ``import ufm.reduced`` and ``from ufm.reduced import ...`` still work:
this name is the same module object as the new one.
"""

import sys

from .theory import reduced_equations as _module

sys.modules[__name__] = _module
