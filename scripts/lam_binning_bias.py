"""The bias of binning lams drawn per sample, measured on features whose answer is known.

A features file from a training loop holds one lam per sample, drawn from Beta(alpha, alpha);
``ufm compare`` puts them into ``lam_bins`` bins (``ufm.nets.features_file``). Here the
features are the exact UFM optimum for a simplex ETF (``ufm.optimal_features``) at each
sample's own lam, for random ordered class pairs, with isotropic noise of standard deviation
``--noise`` per coordinate; the true amplification and lam_H are known. Over ``--seeds``
independent files per setting the script reports the relative error of the amplification
(mean and standard deviation over seeds: the bias, and the spread a rerun would show) and the
fitted lam_H over the true one, for every bin count and alpha. Prints a table and writes JSON.

    python scripts/lam_binning_bias.py [--K 10] [--d 32] [--lam-H 5e-3] [--samples 40000]
        [--bins 5 11 21] [--alphas 0.2 1 2] [--seeds 5] [--noise 0.02]
        [--out results/lam_binning_bias.json]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import ufm
from ufm.io import write_json
from ufm.theory import optimal_coefficients


def true_amplification(K: int, lam_H: float) -> float:
    (a,), (b,) = optimal_coefficients(K, [0.5], lam_H, 1.0, "ce")
    (same,), _ = optimal_coefficients(K, [1.0], lam_H, 1.0, "ce", same_class=True)
    return float((a + b) / same)


def one_file(K, d, lam_H, samples, alpha, noise, seed):
    rng = np.random.default_rng(seed)
    W = ufm.simplex_etf(K, d, scale=1.0, seed=seed)
    c, c_prime = rng.integers(K, size=samples), rng.integers(K, size=samples)
    lam = rng.beta(alpha, alpha, size=samples)
    H = ufm.optimal_features(
        W, torch.as_tensor(c), torch.as_tensor(c_prime), torch.as_tensor(lam), lam_H
    ).numpy()
    H = H + noise * rng.standard_normal(H.shape)
    return {"features": H, "c": c, "c_prime": c_prime, "lam": lam, "weight": W.numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--lam-H", type=float, default=5e-3)
    parser.add_argument("--samples", type=int, default=40000)
    parser.add_argument("--bins", type=int, nargs="+", default=[5, 11, 21])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.2, 1.0, 2.0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--out", default="results/lam_binning_bias.json")
    args = parser.parse_args()
    truth = true_amplification(args.K, args.lam_H)
    rows = []
    print(f"K = {args.K}, d = {args.d}, lam_H = {args.lam_H:g}, {args.samples} samples, noise "
          f"{args.noise:g}; true amplification {truth:.6f}; {args.seeds} seeds per row")  # fmt: skip
    print(f"{'alpha':>6} {'bins':>5} {'amplification error':>26} {'fitted/true lam_H':>22}")
    for alpha in args.alphas:
        files = [
            one_file(args.K, args.d, args.lam_H, args.samples, alpha, args.noise, seed)
            for seed in range(args.seeds)
        ]
        for bins in args.bins:
            errors, ratios = [], []
            for arrays in files:
                summary = ufm.compare_features(arrays, lam_bins=bins, exact_classifier=False).summary
                errors.append(summary["amplification"] / truth - 1.0)
                ratios.append(summary["curve_fitted_lam_H"] / args.lam_H)
            row = {
                "alpha": alpha,
                "bins": bins,
                "amplification_error_mean": float(np.mean(errors)),
                "amplification_error_sd": float(np.std(errors, ddof=1)) if len(errors) > 1 else None,
                "lam_H_ratio_mean": float(np.mean(ratios)),
                "lam_H_ratio_sd": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None,
                "amplification_errors": errors,
            }
            rows.append(row)
            sd = row["amplification_error_sd"] or 0.0
            lam_sd = row["lam_H_ratio_sd"] or 0.0
            print(f"{alpha:>6g} {bins:>5d} {row['amplification_error_mean']:>+16.4%} "
                  f"+- {sd:.4%} {row['lam_H_ratio_mean']:>14.3f} +- {lam_sd:.3f}")  # fmt: skip
    write_json(args.out, {
        "K": args.K, "d": args.d, "lam_H": args.lam_H, "samples": args.samples,
        "noise": args.noise, "seeds": args.seeds, "true_amplification": truth, "rows": rows,
        "python": platform.python_version(), "torch": torch.__version__,
    })  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
