"""Old import path of :mod:`ufm.theory.certificate` (the convex certificate), kept so that ``ufm.convex`` still works."""

import sys

from .theory import certificate as _module

sys.modules[__name__] = _module
