"""Old import path of :mod:`ufm.theory.asymptotics` (the asymptotic forms).

Kept so that ``import ufm.asymptotics`` and ``from ufm.asymptotics import ...`` still work:
this name is the same module object as the new one.
"""

import sys

from .theory import asymptotics as _module

sys.modules[__name__] = _module
