"""Old import path of :mod:`ufm.theory.certificate` (the convex certificate).

Kept so that ``import ufm.convex`` and ``from ufm.convex import ...`` still work:
this name is the same module object as the new one.
"""

import sys

from .theory import certificate as _module

sys.modules[__name__] = _module
