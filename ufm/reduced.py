"""Old import path of :mod:`ufm.theory.reduced_equations` (the root-finder for the reduced equations), kept so that ``ufm.reduced`` still works."""

import sys

from .theory import reduced_equations as _module

sys.modules[__name__] = _module
