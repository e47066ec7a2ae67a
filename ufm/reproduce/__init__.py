"""``ufm reproduce``: theory, UFM solver, networks, figures and a report in one folder.

configuration (:class:`ReproduceConfig`, presets "quick" and "full") -> stages
(:mod:`.theory_stage`, :mod:`.solver_stage`, :mod:`.network_stage`, figures from
:mod:`ufm.plots`, :mod:`.report`) -> the files of :mod:`ufm.layout`. Fisher, Meng & Papyan,
"Pushing Boundaries: Mixup's Influence on Neural Collapse", ICLR 2024, arXiv:2402.06171.
"""

from .config import PRESETS, ReproduceConfig, preset
from .pipeline import STAGE_NAMES, check_output, reproduce

__all__ = ["PRESETS", "STAGE_NAMES", "ReproduceConfig", "check_output", "preset", "reproduce"]
