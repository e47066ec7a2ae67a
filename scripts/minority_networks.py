"""Minority collapse of real networks under mixup: sample against class pairing, beside the
exact reduced theory.

The UFM predicts (docs/phase_map.md, docs/theory.md section 13) that under step imbalance
mixup with partners drawn from the imbalanced training set collapses the minority rows of
the classifier *more* than plain training, and that class pairing keeps them apart by more
than its label mass explains (minority collapse: Fang, He, Long & Su, PNAS 2021). This script
runs :func:`ufm.nets.minority_study.run_study`: for a data set (digits by default, or
mnist1d), the last ``--minority`` classes keeping 1/rho of their training samples, rho in
``--rhos`` (default 1, 2, 4, ..., 64), seeds 0 .. ``--seeds`` - 1, it trains ERM, mixup with
sample pairing, mixup with class pairing and the control (sample pairing at class pairing's
label mass ratio) with the default MLP of ``ufm train``, and records per run the cosine
between the minority rows of the last layer's W, the minority and majority test accuracy,
the label mass ratio, the lam_H fits of the run's final measurement and the amplification
of its cells per group (majority-majority, minority-majority, minority-minority;
:mod:`ufm.nets.cell_groups`). Then it fits lam_H
once on the rho = 1 mixup runs, solves the exact theory at it (lam_W matched to the
networks' classifier gain; see the module), and judges the two predictions (a difference
counts beyond twice its combined standard error). It prints the table (mean +- seed
standard deviation), the fit, the verdicts and the amplification per group of cells beside
the theory's (mean +- its standard error, the seeds' and the runs' errors combined), with
where the gap between the minority-majority and the majority-majority cells is resolved,
and writes one JSON file, atomically after
every run; an existing file is refused unless ``--force`` (start again) or ``--resume``
(continue it; a finished file is analysed again, nothing trained). Each run trains in a
temporary folder unless ``--runs DIR`` keeps them. No timings are taken. ``--figure PNG
--from FILE ...`` trains nothing: it draws the network panel of each finished study file
(:func:`ufm.plots.minority.network_figure`), as in docs/phase_map.md.

    python scripts/minority_networks.py [--dataset digits|mnist1d] [--epochs 100] [--seeds 3]
        [--rhos 1 2 4 8 16 32 64] [--threads 1] [--quick] [--out FILE] [--force | --resume]
    python scripts/minority_networks.py --figure docs/minority_networks.png --from A.json B.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ufm.io import read_json
from ufm.nets.minority_study import (
    KINDS,
    RHOS,
    StudySettings,
    amplification_tables,
    amplification_texts,
    fit_text,
    run_study,
    verdict_texts,
)

QUICK_EPOCHS = 3
FIGURE_DPI = 110


def _cell(entry: dict, key: str) -> str:
    if entry[key] is None:
        return "-"
    spread = entry[f"{key}_std"]
    return f"{entry[key]:.3f}" + (f" +- {spread:.3f}" if spread is not None else "")


def print_table(table: list[dict]) -> None:
    print("mean +- standard deviation over seeds (ddof 1); rho_run: the run's imbalance_ratio")
    print(f"{'kind':<22} {'rho':>5} {'rho_run':>7} {'mass ratio':>10} {'minority cosine':>17} "
          f"{'minority acc':>15} {'majority acc':>15}")
    for entry in table:
        print(f"{entry['kind']:<22} {entry['rho']:>5g} {entry['imbalance_ratio']:>7.3g} "
              f"{entry['label_mass_ratio']:>10.3f} {_cell(entry, 'minority_cosine'):>17} "
              f"{_cell(entry, 'minority_test_accuracy'):>15} "
              f"{_cell(entry, 'majority_test_accuracy'):>15}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--rhos", type=float, nargs="+", default=list(RHOS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. SEEDS-1 per point")
    parser.add_argument("--minority", type=int, default=5, help="minority classes k (the last k)")
    parser.add_argument("--alpha", type=float, default=1.0, help="mixup's Beta(alpha, alpha)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_EPOCHS} epochs per run: checks that the study runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default="results/minority_networks.json")
    parser.add_argument("--runs", help="keep the run folders here (default: deleted)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite --out (and start again runs already in --runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue --out, written by a stopped run with the same settings")
    parser.add_argument("--figure", help="draw the network panels of the --from files to this PNG")
    parser.add_argument("--from", dest="sources", nargs="+", default=[],
                        help="finished study files for --figure")
    args = parser.parse_args(argv)
    if args.figure or args.sources:
        return draw(parser, args.figure, args.sources)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    settings = StudySettings(
        dataset=args.dataset, epochs=QUICK_EPOCHS if args.quick else args.epochs,
        seeds=list(range(args.seeds)), rhos=args.rhos, kinds=args.kinds,
        minority=args.minority, alpha=args.alpha, device=args.device, threads=args.threads)
    try:
        result = run_study(settings, args.out, runs_dir=args.runs, force=args.force,
                           resume=args.resume, log=lambda line: print(line, flush=True))
    except ValueError as error:
        parser.exit(2, f"minority_networks: {error}\n")
    print_table(result["table"])
    print(fit_text(result))
    for text in verdict_texts(result):
        print(text)
    print("\n".join(amplification_tables(result)))
    for text in amplification_texts(result):
        print(text)
    print(f"wrote {args.out}")
    return 0


def draw(parser, figure: str | None, sources: list[str]) -> int:
    """The network panel of every finished study in ``sources``, side by side, to ``figure``."""
    import matplotlib

    from ufm.io import atomic_path
    from ufm.plots.minority import network_figure
    from ufm.plots.style import RC

    if not figure or not sources:
        parser.error("--figure and --from go together")
    studies = [read_json(path) for path in sources]
    unfinished = [path for path, study in zip(sources, studies) if not study.get("complete")]
    if unfinished:
        parser.error(f"not finished (no analysis yet): {', '.join(unfinished)}")
    with matplotlib.rc_context(RC), atomic_path(Path(figure)) as tmp:
        network_figure(studies).savefig(tmp, format="png", dpi=FIGURE_DPI)
    print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
