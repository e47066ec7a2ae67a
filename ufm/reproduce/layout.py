"""The file layout of a reproduction folder: what :mod:`ufm.reproduce` writes, :mod:`ufm.plots` reads.

Data flows one way, configuration -> runs -> result files -> figures -> report, and this
module is the only contract between the writer and the readers::

    DIR/config.json                     the resolved ReproduceConfig
    DIR/theory/                         exact theory (ufm.theory, ufm.theory.asymptotics)
        curves.csv                      per (lam_H, lam): a, b, margin, norms, p_c, confidence
        channels.csv                    per (lam_H, lam): distance from the boundary, position
                                        along w_c + w_c', and their lam_H -> 0 limits
        channel_growth.csv              per (lam_H, lam): channel position, exact and asymptotic
        projection_<loss>.npz           the triple's exact features in the classifier plane
        mixture_amplification.csv       per (lam_H, m): amplification of equal-weight mixtures
        mixture_projection_theory.npz   exact mixtures of the triple over the weight simplex
        minority_collapse.csv           per (setting, kind, rho): the exact learned classifier
                                        under step imbalance (docs/theory.md section 13)
        summary.json                    written last
    DIR/solver/<run>/                   one UFM solve (ufm.solver.results layout)
    DIR/solver/curves.csv               per (run, lam): margin and relative norm of the solver
    DIR/solver/projection_<run>.npz     the triple's solved features in the classifier plane
    DIR/solver/mixture_projection_solver.npz   the 3-class run's mixtures of the triple
    DIR/solver/summary.json
    DIR/networks/<run>/                 one training run (ufm.nets.run layout), the first seed
    DIR/networks/<run>_seed<s>/         the same run with seed s (--seeds N > 1: s = seed + 1, ...)
    DIR/networks/curves_<run>.csv       per lam: network and fitted-theory margins, norms, p_c,
                                        coefficient curves beside CE theory, null and exact W
    DIR/networks/projection_<run>.npz   the triple's mixed activations in the classifier plane
    DIR/networks/mixture_projection_network.npz  3-point mixup network: mixtures of the triple
    DIR/networks/minority_networks.json the minority-collapse study of networks beside the
                                        exact theory (ufm.nets.minority_study; the full preset,
                                        minority_epochs > 0)
    DIR/networks/summary.json
    DIR/sweep/<sweep>/                  one ufm.sweep folder per grid of learned-classifier
                                        solves (docs/theory.md section 4): sweep.json, sweep.csv,
                                        points/<point>/ (each an ordinary ufm solve folder)
    DIR/sweep/summary.json
    DIR/figures/<name>.png, .pdf, summary.json   (the sweeps' as <sweep>_<figure>)
    DIR/report.md, DIR/summary.json     written last: the reproduction is complete

A projection file holds ``coordinates`` (P, L, 2) of P class pairs (c <= c') at L values of
lam, ``c``, ``c_prime`` (P,), ``lam`` (L,), ``classes`` (3,), ``classifier`` (3, 2): the
classifier rows of the triple in the plane, ``norms`` (P, L): each feature's length in the row
space of W (the plane hides part of it), and ``offsets`` (3,): the part of each logit that
does not depend on the in-plane coordinates y, so that logit_k = classifier_k . y + offsets_k
for a feature in the plane. The plane is spanned by the orthonormal basis of
span{w_c - mean of the three rows}; only differences of these logits are used, and those are
exact for any feature, since w_c - w_c' lies in the plane. A mixture projection file holds
``coordinates`` (N, 2) of N mixtures of the triple with ``weights`` (N, 3) on its classes,
and the same ``classes``, ``classifier`` and ``offsets``.
"""

from __future__ import annotations

import json
from pathlib import Path

SUMMARY = "summary.json"
CONFIG = "config.json"
REPORT = "report.md"
THEORY = "theory"
SOLVER = "solver"
NETWORKS = "networks"
SWEEP = "sweep"
FIGURES = "figures"
STAGES = (THEORY, SOLVER, NETWORKS, SWEEP, FIGURES)

# Network runs of a reproduction: (name, mixup alpha is used, classifier).
NETWORK_RUNS = (
    ("erm_learned", False, "learned"),
    ("mixup_learned", True, "learned"),
    ("erm_fixed_etf", False, "fixed_etf"),
    ("mixup_fixed_etf", True, "fixed_etf"),
)
# The network trained with 3-point mixup for the mixtures figure (fixed simplex ETF).
MIXTURE_NETWORK_RUN = "mixup3_fixed_etf"
THEORY_LOSSES = ("ce", "mse", "label_smoothing")
MIXTURE_AMPLIFICATION = "mixture_amplification.csv"
MINORITY_COLLAPSE = "minority_collapse.csv"
IMBALANCE_SWEEP = "imbalance"
MINORITY_NETWORKS = "minority_networks.json"


def stage_dir(root: str | Path, stage: str) -> Path:
    return Path(root) / stage


def stage_files(root: str | Path, stage: str) -> list[Path]:
    """Files a complete stage must hold besides its summary: those added after the first
    release, so that a folder written before them is not taken as complete."""
    if stage == THEORY:
        return [theory_file(root, MIXTURE_AMPLIFICATION), mixture_projection(root, THEORY, "theory"),
                theory_file(root, MINORITY_COLLAPSE)]
    if stage == SOLVER:
        return [mixture_projection(root, SOLVER, "solver")]
    if stage == NETWORKS:
        files = [mixture_projection(root, NETWORKS, "network")]
        return files + ([minority_networks(root)] if minority_study_planned(root) else [])
    return []


def minority_study_planned(root: str | Path) -> bool:
    """Whether the reproduction in ``root`` trains the minority study of networks: its
    ``config.json`` gives ``minority_epochs`` > 0 (a folder from before the field has none)."""
    path = Path(root) / CONFIG
    if not path.is_file():
        return False
    try:
        epochs = json.loads(path.read_text()).get("minority_epochs", 0)
    except (ValueError, AttributeError):
        return False
    return isinstance(epochs, int) and epochs > 0


def minority_networks(root: str | Path) -> Path:
    """The minority-collapse study of networks of the network stage (a JSON file)."""
    return stage_dir(root, NETWORKS) / MINORITY_NETWORKS


def stage_complete(root: str | Path, stage: str) -> bool:
    """A stage is complete once its summary.json exists (it is written last) beside the
    files of :func:`stage_files`."""
    needed = [stage_dir(root, stage) / SUMMARY, *stage_files(root, stage)]
    return all(path.is_file() for path in needed)


def theory_file(root: str | Path, name: str) -> Path:
    return stage_dir(root, THEORY) / name


def theory_projection(root: str | Path, loss: str) -> Path:
    return stage_dir(root, THEORY) / f"projection_{loss}.npz"


def mixture_projection(root: str | Path, stage: str, name: str) -> Path:
    """The projection file of a triple's mixtures over the weight simplex in ``stage``."""
    return stage_dir(root, stage) / f"mixture_projection_{name}.npz"


def solver_run(root: str | Path, name: str) -> Path:
    return stage_dir(root, SOLVER) / name


def solver_projection(root: str | Path, name: str) -> Path:
    return stage_dir(root, SOLVER) / f"projection_{name}.npz"


def sweep_dir(root: str | Path, name: str) -> Path:
    """The ufm.sweep folder of the sweep ``name`` of the sweep stage."""
    return stage_dir(root, SWEEP) / name


def phase_figure(sweep: str, figure: str) -> str:
    """The file name (without suffix) of a sweep's figure in the reproduction's figures."""
    return f"{sweep}_{figure}"


def network_run(root: str | Path, name: str) -> Path:
    return stage_dir(root, NETWORKS) / name


def network_seed_run(root: str | Path, name: str, seed: int, first: int) -> Path:
    """The folder of network run ``name`` trained with ``seed``: the run's own folder for the
    ``first`` seed (the one the figures draw), ``<name>_seed<seed>`` for the others."""
    if seed == first:
        return network_run(root, name)
    return stage_dir(root, NETWORKS) / f"{name}_seed{seed}"


def network_curves(root: str | Path, name: str) -> Path:
    return stage_dir(root, NETWORKS) / f"curves_{name}.csv"


def network_projection(root: str | Path, name: str) -> Path:
    return stage_dir(root, NETWORKS) / f"projection_{name}.npz"


def final_measurement(run_folder: str | Path, epochs: int) -> Path:
    """The measurement folder of a training run's last epoch (ufm.nets.run layout)."""
    return Path(run_folder) / "measurements" / f"epoch_{epochs:04d}"
