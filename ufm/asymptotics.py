"""Old import path of :mod:`ufm.theory.asymptotics` (the asymptotic forms), kept so that ``ufm.asymptotics`` still works."""

import sys

from .theory import asymptotics as _module

sys.modules[__name__] = _module
