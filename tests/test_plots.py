"""ufm.plots and ufm figures: every figure is a valid, non-blank image drawn only from files."""

from __future__ import annotations

import ast
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from reproduce_support import build_tiny

from ufm import cli
from ufm.reproduce import layout
from ufm.plots import FIGURES, build_figure, check_figure_names, draw_figures

PLOTS = Path(__file__).resolve().parents[1] / "ufm" / "plots"


@pytest.fixture(scope="session")
def tiny_reproduction(tmp_path_factory):
    return build_tiny(tmp_path_factory)


def assert_valid_image(path: Path) -> None:
    """A decodable PNG of a sensible size that is not blank (a single colour)."""
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert height >= 150 and width >= 200, (path.name, image.shape)
    rgb = image[..., :3]
    assert rgb.std() > 0.05, f"{path.name} looks blank"
    not_white = (rgb < 0.9).any(axis=-1).mean()
    assert not_white > 0.02, f"{path.name}: only {not_white:.1%} of the pixels are drawn"


def test_every_figure_is_a_valid_png_and_pdf(tiny_reproduction):
    folder = layout.stage_dir(tiny_reproduction, layout.FIGURES)
    for name in FIGURES:
        assert_valid_image(folder / f"{name}.png")
        pdf = folder / f"{name}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000, name


def test_every_panel_has_data_and_labelled_axes(tiny_reproduction):
    for name in FIGURES:
        figure = build_figure(tiny_reproduction, name)
        panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
        assert panels, name
        for ax in panels:
            artists = ax.lines + ax.collections + ax.patches + ax.images
            assert artists, f"{name}: empty panel {ax.get_title()!r}"
            assert ax.get_xlabel() and ax.get_ylabel(), (
                f"{name}: unlabelled axes in {ax.get_title()!r}"
            )
            assert ax.get_title(), f"{name}: a panel without a title"
        assert figure.get_suptitle(), name
        assert figure.legends or any(ax.get_legend() for ax in panels), f"{name}: no legend"


def test_only_draws_the_named_figures_into_another_folder(tiny_reproduction, tmp_path):
    out = tmp_path / "some"
    written = draw_figures(tiny_reproduction, ["channels", "layer_linearity"], out=out, dpi=40)
    assert sorted(p.name for p in written) == [
        "channels.pdf",
        "channels.png",
        "layer_linearity.pdf",
        "layer_linearity.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)


def test_unknown_figure_names_list_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown figure 'nc'.*mixup_configuration.*layer_linearity"
    ):
        check_figure_names(["channels", "nc"])


def test_a_folder_without_results_is_refused_naming_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="not a folder of reproduction results"):
        draw_figures(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="theory/summary.json"):
        draw_figures(empty, ["channels"])
    assert not (empty / layout.FIGURES).exists()  # refused before anything is written


def test_figures_that_need_only_the_theory_stage(tiny_reproduction, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / layout.CONFIG).write_bytes((tiny_reproduction / layout.CONFIG).read_bytes())
    source = layout.stage_dir(tiny_reproduction, layout.THEORY)
    target = layout.stage_dir(partial, layout.THEORY)
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    assert [p.name for p in draw_figures(partial, ["channels"], dpi=40)] == [
        "channels.png",
        "channels.pdf",
    ]
    with pytest.raises(ValueError, match="solver/summary.json"):
        draw_figures(partial, ["learned_classifier"])


def test_cli_figures(tiny_reproduction, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        cli.main(
            [
                "figures",
                "--from",
                str(tiny_reproduction),
                "--only",
                "calibration",
                "--out",
                str(out),
                "--dpi",
                "40",
            ]
        )
        == 0
    )
    assert_valid_image(out / "calibration.png")
    assert cli.main(["figures", "--from", str(tiny_reproduction), "--only", "nope"]) == 2
    assert "known figures: mixup_configuration" in capsys.readouterr().err
    assert cli.main(["figures", "--from", str(tmp_path / "none")]) == 2
    assert "not a folder of reproduction results" in capsys.readouterr().err


def test_plotting_reads_files_and_never_computes_theory_or_trains():
    forbidden = {
        "theory",
        "asymptotics",
        "reduced",
        "solver",
        "inner",
        "convex",
        "training",
        "run",
        "measure",
        "reproduce",
        "own_classifier",
        "triple_theory",
        "feature_comparison",
        "cell_comparison",
    }
    # The one module of ufm.reproduce that plotting reads is the file layout, which itself
    # imports nothing that computes.
    layout_file = PLOTS.parent / "reproduce" / "layout.py"
    for path in [*PLOTS.glob("*.py"), layout_file]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
                if module in ("..reproduce", "reproduce") or module.endswith("reproduce.layout"):
                    names = {alias.name for alias in node.names}
                    assert module.endswith("layout") or names == {"layout"}, (
                        f"{path.name} imports {names} from {module}"
                    )
                    continue
                parts = set(module.split("."))
                assert not parts & forbidden, f"{path.name} imports {module}"


def _texts(figure):
    """Every title, axis label, annotation and legend entry of ``figure`` that is drawn."""
    texts = list(figure.texts) + [t for legend in figure.legends for t in legend.get_texts()]
    if figure._suptitle is not None:
        texts.append(figure._suptitle)
    for ax in figure.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        texts += list(ax.texts) + (ax.get_legend().get_texts() if ax.get_legend() else [])
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("name", list(FIGURES))
def test_no_text_is_cut_off_at_the_edge_of_the_canvas(tiny_reproduction, name):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = build_figure(tiny_reproduction, name)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = figure.bbox.width, figure.bbox.height
    for text in _texts(figure):
        box = text.get_window_extent(renderer)
        inside = box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1
        assert inside, f"{name}: {text.get_text()[:60]!r} reaches outside the canvas"
