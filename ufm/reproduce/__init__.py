"""``ufm reproduce``: theory, UFM solver, networks, figures and a report in one folder.

configuration (:class:`ReproduceConfig`, presets "quick" and "full") -> stages
(:mod:`.theory_stage`, :mod:`.solver_stage`, :mod:`.network_stage`, figures from
:mod:`ufm.plots`, :mod:`.report`) -> the files of :mod:`.layout`. Fisher, Meng & Papyan,
"Pushing Boundaries: Mixup's Influence on Neural Collapse", ICLR 2024, arXiv:2402.06171.

The names below are imported on first use, so that :mod:`ufm.plots` can read
:mod:`.layout` without importing the stages that compute theory or train.
"""

from importlib import import_module

_EXPORTS = {
    "PRESETS": ".config",
    "ReproduceConfig": ".config",
    "preset": ".config",
    "STAGE_NAMES": ".pipeline",
    "check_output": ".pipeline",
    "reproduce": ".pipeline",
}

__all__ = ["PRESETS", "STAGE_NAMES", "ReproduceConfig", "check_output", "preset", "reproduce"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
