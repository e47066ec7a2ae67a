"""Write the README's figure gallery from a reproduction: small palette PNGs in docs/gallery.

    ufm reproduce --quick --out results/quick
    python scripts/make_gallery.py results/quick          # writes docs/gallery/<figure>.png

Each figure is drawn from the reproduction's files (:func:`ufm.plots.build_figure`) at a
modest resolution and stored as an optimised palette PNG (Pillow's median-cut quantisation,
no dithering), which keeps the images to a few hundred kilobytes in git.
"""

from __future__ import annotations

import argparse
import io

from PIL import Image

from ufm.io import atomic_path, prepare_run_dir
from ufm.plots import FIGURES, build_figure, check_results


def gallery_png(figure, dpi: int, colours: int) -> Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    image = Image.open(buffer).convert("RGB")
    return image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a folder written by ufm reproduce")
    parser.add_argument("--out", default="docs/gallery", help="gallery folder")
    parser.add_argument("--dpi", type=int, default=110, help="resolution (30..300)")
    parser.add_argument("--colours", type=int, default=128, help="palette size (16..256)")
    args = parser.parse_args(argv)
    if not 30 <= args.dpi <= 300:
        parser.error(f"--dpi must lie in [30, 300], got {args.dpi}")
    if not 16 <= args.colours <= 256:
        parser.error(f"--colours must lie in [16, 256], got {args.colours}")
    check_results(args.source, None)
    out = prepare_run_dir(args.out)
    total = 0
    for name in FIGURES:
        path = out / f"{name}.png"
        with atomic_path(path) as tmp:
            gallery_png(build_figure(args.source, name), args.dpi, args.colours).save(
                tmp, format="png", optimize=True
            )
        total += path.stat().st_size
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")
    print(f"{len(FIGURES)} images, {total / 1024:.0f} KB in total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
