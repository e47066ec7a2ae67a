"""Minority collapse of real networks under mixup: sample against class pairing.

The UFM predicts (docs/phase_map.md) that under step imbalance mixup with partners drawn from
the imbalanced training set collapses the minority rows of the classifier *more* than plain
training, and that class pairing (the partner's class uniform over the K classes) almost
prevents it (minority collapse: Fang, He, Long & Su, PNAS 2021). This script asks the same of
networks trained by ``ufm train``: for a data set (digits by default, or mnist1d), the last
``--minority`` classes keeping 1/rho of their training samples, rho in ``--rhos`` (default 1,
2, 4, ..., 64), and ``--seeds`` seeds (default 3), it trains

* ``erm``: plain training (alpha = 0);
* ``mixup_sample``: mixup with sample pairing (partners from the imbalanced batch);
* ``mixup_class``: mixup with class pairing (``TrainConfig.pairing = "class"``);
* ``sample_at_class_mass``: the control, mixup with sample pairing at the imbalance
  rho_eff = :func:`ufm.imbalance.label_mass_ratio` (K, k, rho, "class"), the ratio of label
  mass per class that class pairing gives at rho. If class pairing helps only by moving label
  mass to the minority classes, this control matches it; if it does more (its partners are
  minority samples seen more often, its mixtures cross to the minority classes), it does not.

and records per run the mean cosine between the minority rows of the last layer's W
(:func:`ufm.imbalance.minority_cosine` on the trained classifier, read from the run's last
checkpoint: -1/(K-1) for a simplex ETF, 1 once collapsed), the minority and the majority
test accuracy (on the balanced test set), and the label mass ratio the run had. It prints a
table of mean +- standard deviation over the seeds per (kind, rho) and writes one JSON file,
atomically, after every run (a stopped study keeps what it trained); an existing file is
refused unless ``--force``. Each run trains in a temporary folder, deleted once its numbers
are read, unless ``--runs DIR`` keeps them. The measurement of each run (which the numbers do
not use) is kept small. No timings are taken.

    python scripts/minority_networks.py [--dataset digits|mnist1d] [--epochs 200] [--seeds 3]
        [--rhos 1 2 4 8 16 32 64] [--quick] [--out results/minority_networks.json] [--force]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from ufm.config import config_to_dict
from ufm.imbalance import label_mass_ratio, minority_cosine
from ufm.io import write_json
from ufm.nets import TrainConfig, load_dataset, run_training
from ufm.nets.imbalanced_data import imbalanced_dataset

KINDS = ("erm", "mixup_sample", "mixup_class", "sample_at_class_mass")
RHOS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
QUICK_EPOCHS = 3
# The final measurement of every run is not used here: a small one.
SMALL_MEASUREMENT = {"pairs_per_class_pair": 3, "pairs_all_classes": 2, "linearity_pairs": 10,
                     "exact_classifier": False}
NUMBERS = ("minority_cosine", "minority_test_accuracy", "majority_test_accuracy", "label_mass_ratio")


def run_config(kind: str, rho: float, seed: int, K: int, args) -> TrainConfig:
    """The training configuration of one run (``kind`` one of :data:`KINDS`)."""
    ratio = rho
    if kind == "sample_at_class_mass":
        ratio = label_mass_ratio(K, args.minority, rho, "class")
    return TrainConfig(
        dataset=args.dataset,
        imbalance_ratio=ratio,
        minority_classes=args.minority,
        alpha=0.0 if kind == "erm" else args.alpha,
        pairing="class" if kind == "mixup_class" else "sample",
        epochs=args.epochs,
        seed=seed,
        device=args.device,
        **SMALL_MEASUREMENT,
    )


def train(config: TrainConfig, folder: Path, force: bool) -> dict:
    """Train one run into ``folder``; its numbers, W's minority cosine from the checkpoint."""
    summary = run_training(config, folder, progress=False, force=force)
    saved = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    W = saved["model"]["classifier.weight"]
    return {
        "minority_cosine": minority_cosine(W, config.minority_classes),
        "minority_test_accuracy": summary["minority_test_accuracy"],
        "majority_test_accuracy": summary["majority_test_accuracy"],
        "test_accuracy": summary["test_accuracy"],
        "label_mass_ratio": summary["label_mass_ratio"],
        "label_mass_ratio_train": summary["label_mass_ratio_train"],
        "train_class_counts": summary["train_class_counts"],
    }


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds (ddof 1; None with one seed) per (kind, rho)."""
    table = []
    for kind in KINDS:
        for rho in sorted({row["rho"] for row in rows}):
            group = [row for row in rows if row["kind"] == kind and row["rho"] == rho]
            if not group:
                continue
            entry = {"kind": kind, "rho": rho, "seeds": len(group),
                     "imbalance_ratio": group[0]["imbalance_ratio"]}
            for key in NUMBERS:
                values = np.array([row[key] for row in group if row[key] is not None], dtype=float)
                entry[key] = float(values.mean()) if values.size else None
                entry[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else None
            table.append(entry)
    return table


def _cell(entry: dict, key: str) -> str:
    if entry[key] is None:
        return "-"
    spread = entry[f"{key}_std"]
    return f"{entry[key]:.3f}" + (f" +- {spread:.3f}" if spread is not None else "")


def print_table(table: list[dict]) -> None:
    header = (f"{'kind':<22} {'rho':>5} {'rho_run':>7} {'mass ratio':>10} {'minority cosine':>17} "
              f"{'minority acc':>15} {'majority acc':>15}")
    print("mean +- standard deviation over seeds (ddof 1); rho_run: the run's imbalance_ratio")
    print(header)
    for entry in table:
        print(f"{entry['kind']:<22} {entry['rho']:>5g} {entry['imbalance_ratio']:>7.3g} "
              f"{entry['label_mass_ratio']:>10.3f} {_cell(entry, 'minority_cosine'):>17} "
              f"{_cell(entry, 'minority_test_accuracy'):>15} {_cell(entry, 'majority_test_accuracy'):>15}")


def check_inputs(args) -> tuple[int, dict]:
    """Refuse what can be refused before the first run: the output file, every configuration,
    and imbalances that leave a class too few training samples. Returns K and the configs."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise SystemExit(f"minority_networks: {str(out)!r} exists; pass --force to overwrite it")
    if out.is_dir():
        raise SystemExit(f"minority_networks: {str(out)!r} is a folder, not a file")
    if args.seeds < 1:
        raise SystemExit("minority_networks: --seeds must be >= 1")
    data = load_dataset(args.dataset)
    K = data.num_classes
    if not 2 <= args.minority <= K - 1:
        raise SystemExit(f"minority_networks: --minority must lie in [2, {K - 1}] (the minority "
                         f"cosine needs two minority rows, and one class stays a majority)")
    try:
        configs = {(kind, rho, seed): run_config(kind, rho, seed, K, args)
                   for kind in args.kinds for rho in args.rhos for seed in range(args.seeds)}
        for config in configs.values():
            config.check_against_data(K, data.input_shape)
        for ratio in sorted({config.imbalance_ratio for config in configs.values()}):
            imbalanced_dataset(data, ratio, args.minority, seed=0)
    except ValueError as error:
        raise SystemExit(f"minority_networks: {error}") from error
    if args.runs and not args.force:
        taken = [run_name(*key) for key in configs if (Path(args.runs) / run_name(*key)).exists()]
        if taken:
            raise SystemExit(f"minority_networks: {args.runs!r} already holds {', '.join(taken[:3])}"
                             f"{' ...' if len(taken) > 3 else ''}; pass --force to train them again")
    return K, configs


def run_name(kind: str, rho: float, seed: int) -> str:
    return f"{kind}_rho{rho:g}_seed{seed}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--rhos", type=float, nargs="+", default=list(RHOS))
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. SEEDS-1 per point")
    parser.add_argument("--minority", type=int, default=5, help="minority classes k (the last k)")
    parser.add_argument("--alpha", type=float, default=1.0, help="mixup's Beta(alpha, alpha)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_EPOCHS} epochs per run: checks that the study runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/minority_networks.json")
    parser.add_argument("--runs", help="keep the run folders here (default: deleted)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite --out (and start again runs already in --runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = QUICK_EPOCHS
    K, configs = check_inputs(args)

    base = config_to_dict(next(iter(configs.values())))
    result = {
        "study": "minority collapse of networks: ERM, mixup with sample and class pairing, and "
                 "sample pairing at the label mass ratio of class pairing",
        "dataset": args.dataset, "K": K, "minority_classes": args.minority,
        "rhos": args.rhos, "kinds": args.kinds, "seeds": args.seeds, "epochs": args.epochs,
        "quick": args.quick,
        "config": {k: v for k, v in base.items()
                   if k not in ("imbalance_ratio", "alpha", "pairing", "seed")},
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "note": "no timings"},
        "complete": False,
        "runs": [],
    }
    for (kind, rho, seed), config in configs.items():
        name = run_name(kind, rho, seed)
        if args.runs:
            numbers = train(config, Path(args.runs) / name, force=args.force)
        else:
            with tempfile.TemporaryDirectory(prefix="minority_networks_") as scratch:
                numbers = train(config, Path(scratch) / name, force=False)
        result["runs"].append({"kind": kind, "rho": rho, "seed": seed,
                               "imbalance_ratio": config.imbalance_ratio,
                               "alpha": config.alpha, "pairing": config.pairing, **numbers})
        result["table"] = aggregate(result["runs"])
        write_json(args.out, result)
        print(f"{name}: minority cosine {numbers['minority_cosine']:.3f}, minority accuracy "
              f"{numbers['minority_test_accuracy']:.3f}", flush=True)
    result["complete"] = True
    write_json(args.out, result)
    print_table(result["table"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
