"""The map of docs/theory.md section 4 on its own: when does a learned classifier become an ETF?

Runs the sweep stage of the reproduction (:mod:`ufm.reproduce.sweep_stage`) with the full
preset's grids (K = 10, d = 32, 21 lam, tolerance 1e-9: imbalance ratio x mixup or plain x
pairing, d x lam_W, loss x lam_H, lam_W x lam_H, Beta draws x number of random pairs) into
``--out``, without the networks, and writes the report's section on it to
``OUT/sweep_section.md``. ``ufm figures --from OUT/sweep/<grid>`` then draws its phase
figures. Complete points are reused when run again. About a minute on 2 CPU cores.

    python scripts/phase_map.py [--out results/phase_map] [--grid full|quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ufm.reproduce import sweep_stage
from ufm.reproduce.config import ReproduceConfig
from ufm.reproduce.sweep_report import sweep_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/phase_map")
    parser.add_argument("--grid", default="full", choices=("full", "quick"))
    args = parser.parse_args()
    config = ReproduceConfig(sweep_grid=args.grid)
    started = time.perf_counter()
    summary = sweep_stage.run(config, args.out, progress=False)
    print(f"{time.perf_counter() - started:.1f} s")
    for name, sweep in summary["sweeps"].items():
        print(f"  {name}: {sweep['points']} points {sweep['counts']} in {sweep['seconds']:.1f} s")
    section = Path(args.out) / "sweep_section.md"
    section.write_text("\n".join(sweep_section(args.out)) + "\n")
    print(f"wrote {section}")


if __name__ == "__main__":
    main()
