"""ufm reproduce: every stage and file, key numbers, reuse, resuming after an interruption,
refusals of bad input, the CLI, and the README's gallery."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from reproduce_support import TINY, build_tiny, copy_of, run_tiny, tiny_config

from ufm import cli
from ufm.reproduce import layout
from ufm.io import read_csv, read_json, write_json
from ufm.nets import run as nets_run
from ufm.plots import FIGURES
from ufm.reproduce import (
    PRESETS,
    STAGE_NAMES,
    ReproduceConfig,
    network_stage,
    pipeline,
    preset,
    solver_stage,
)

TINY_TRIPLE = tuple(tiny_config().triple)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_reproduction(tmp_path_factory):
    return build_tiny(tmp_path_factory)


def _links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown)


def _mtimes(root: Path) -> dict[str, int]:
    """Modification times of every summary.json (what marks a stage or a run complete)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob(layout.SUMMARY)}


def test_every_stage_is_complete_and_the_report_links_only_to_files_that_exist(tiny_reproduction):
    root = tiny_reproduction
    for stage in layout.STAGES:
        assert layout.stage_complete(root, stage), stage
    assert (root / layout.SUMMARY).is_file()
    report = (root / layout.REPORT).read_text()
    links = _links(report)
    assert links, "report.md has no links"
    for link in links:
        assert (root / link).is_file(), f"report.md links to {link}, which does not exist"
    for name in FIGURES:
        assert f"figures/{name}.png" in links, name
    assert report.count("**Key numbers.**") == len(FIGURES)
    for name, _, _ in layout.NETWORK_RUNS:
        assert f"networks/{name}/config.json" in links
        assert f"`{name}`" in report
    # the quick preset trains one seed per run, and the claims say what that leaves out
    claims = report.split("## The paper's claims", 1)[1].split("\n## ", 1)[0]
    assert "One seed per run (seed 0): one seed, no seed spread" in claims
    assert claims.count("(one seed, no seed spread)") >= 4  # claims 2, 4, 5, 6
    # and claims 2, 4, 5, 6, whose numbers have no error within a run, say what they rest on
    assert claims.count("Evidence: one network per run; no error within a run") == 4


def test_stage_files_hold_what_the_figures_read(tiny_reproduction):
    root = tiny_reproduction
    theory = layout.stage_dir(root, layout.THEORY)
    for name in ("curves.csv", "channels.csv", "channel_growth.csv"):
        assert (theory / name).stat().st_size > 0
    for loss in layout.THEORY_LOSSES:
        with np.load(layout.theory_projection(root, loss)) as data:
            assert data["coordinates"].shape == (6, TINY["projection_lams"], 2)
            assert data["classifier"].shape == (3, 2)
    for name, _, _ in layout.NETWORK_RUNS:
        assert layout.network_curves(root, name).is_file()
        with np.load(layout.network_projection(root, name)) as data:
            assert data["coordinates"].shape[1:] == (TINY["net_lams"], 2)


def test_the_solver_reproduces_the_exact_theory_and_learns_an_etf(tiny_reproduction):
    solver = read_json(layout.stage_dir(tiny_reproduction, layout.SOLVER) / layout.SUMMARY)
    assert solver["max_theory_distance"] < 1e-8
    learned = [r for r in solver["runs"] if r["kind"] == "learned"]
    assert [r["loss"] for r in learned] == list(TINY["learned_losses"])
    assert all(r["etf_distance_W"] < 1e-4 for r in learned)
    focal = next(r for r in solver["runs"] if r["loss"] == "focal")
    assert focal["theory_distance"] is None  # no theory for focal loss


def test_theory_projection_puts_the_half_mixture_on_the_boundary(tiny_reproduction):
    with np.load(layout.theory_projection(tiny_reproduction, "ce")) as data:
        coordinates, classifier, c, c_prime = (
            data[k] for k in ("coordinates", "classifier", "c", "c_prime")
        )
        lams, classes = data["lam"], list(data["classes"])
    half = int(np.flatnonzero(lams == 0.5)[0])
    for p in np.flatnonzero(c != c_prime):
        logits = classifier @ coordinates[p, half]
        i, j = classes.index(c[p]), classes.index(c_prime[p])
        assert abs(logits[i] - logits[j]) < 1e-10 * np.abs(logits).max()


def test_a_second_run_reuses_every_stage(tiny_reproduction, tmp_path, monkeypatch):
    root = copy_of(tiny_reproduction, tmp_path / "copy")
    before = _mtimes(root)

    def refuse(*args, **kwargs):
        raise AssertionError("a complete stage was redone")

    monkeypatch.setattr(solver_stage, "run_to_folder", refuse)
    monkeypatch.setattr(network_stage, "run_training", refuse)
    monkeypatch.setattr("ufm.solver.solve", refuse)  # the sweep stage's points
    log = []
    run_tiny(root, log)
    assert _mtimes(root) == before
    assert sum("reused" in line for line in log) == len(STAGE_NAMES), log


def test_an_interrupted_reproduction_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Interrupt the second network run right after its first checkpoint; the next call
    must reuse theory, solver and the first network run and resume the second one."""
    real_save = nets_run.save_checkpoint
    saved = {"count": 0}

    def interrupt_after_first_checkpoint(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if "mixup_learned" in str(path) and path.name.startswith("epoch_"):
            saved["count"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(nets_run, "save_checkpoint", interrupt_after_first_checkpoint)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_tiny(out)
    assert saved["count"] == 1
    assert layout.stage_complete(out, layout.SOLVER)
    assert not layout.stage_complete(out, layout.NETWORKS)
    assert not (out / layout.REPORT).exists() and not (out / layout.SUMMARY).exists()
    before = _mtimes(out)

    monkeypatch.setattr(nets_run, "save_checkpoint", real_save)
    calls = []
    real_training = network_stage.run_training

    def record(config, folder, resume=False, progress=True, check_memory=True):
        calls.append((Path(folder).name, resume))
        return real_training(config, folder, resume=resume, progress=progress)

    monkeypatch.setattr(network_stage, "run_training", record)
    monkeypatch.setattr(solver_stage, "run_to_folder", lambda *a, **k: pytest.fail("solver rerun"))
    run_tiny(out)
    assert calls == [
        ("mixup_learned", True),
        ("erm_fixed_etf", False),
        ("mixup_fixed_etf", False),
        (layout.MIXTURE_NETWORK_RUN, False),
    ]
    after = _mtimes(out)
    for key, value in before.items():
        assert after[key] == value, f"{key} was rewritten"
    assert (out / layout.REPORT).is_file() and (out / layout.SUMMARY).is_file()


def test_a_running_reproduction_locks_its_folder_and_a_stale_lock_is_taken_over(
    tiny_reproduction, tmp_path
):
    root = copy_of(tiny_reproduction, tmp_path / "copy")
    lock = root / pipeline.LOCK
    lock.write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(ValueError, match="in use by another ufm reproduce"):
        run_tiny(root)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock.write_text(finished.stdout.strip())  # its process has gone
    run_tiny(root)
    assert not lock.exists()


def test_a_network_run_interrupted_before_its_first_checkpoint_starts_again(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch\n1\n")  # what an early interruption leaves
    config = tiny_config().train_config(0.0, "learned")
    network_stage.train_run(config, folder, progress=False)
    assert (folder / layout.SUMMARY).is_file()


def test_an_output_path_that_is_a_file_is_refused_before_any_work(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="not a directory"):
        run_tiny(target)
    assert target.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_refused_before_any_folder_is_made(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        run_tiny(tmp_path / "gpu", device="cuda")
    assert not (tmp_path / "gpu").exists()


def test_another_configuration_or_a_foreign_folder_is_refused(tiny_reproduction, tmp_path):
    with pytest.raises(ValueError, match="another configuration.*epochs"):
        run_tiny(tiny_reproduction, epochs=5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty folder"):
        run_tiny(foreign)


def test_a_folder_from_before_seeds_holds_one_seed(tiny_reproduction, tmp_path):
    root = copy_of(tiny_reproduction, tmp_path / "before_seeds")
    config = read_json(root / layout.CONFIG)
    assert config.pop("seeds") == 1
    write_json(root / layout.CONFIG, config)
    log = []
    run_tiny(root, log)  # one seed, as that folder trained: every stage reused
    assert sum("reused" in line for line in log) == len(STAGE_NAMES), log
    with pytest.raises(ValueError, match="another configuration.*seeds"):
        run_tiny(root, seeds=2)


def test_a_folder_from_before_starts_solved_one_start_per_point(tiny_reproduction, tmp_path):
    root = copy_of(tiny_reproduction, tmp_path / "before_starts")
    config = read_json(root / layout.CONFIG)
    assert config.pop("starts") == 4
    write_json(root / layout.CONFIG, config)
    with pytest.raises(ValueError, match="another configuration.*starts"):
        run_tiny(root)  # four starts below d = K - 1: not what that folder solved
    log = []
    run_tiny(root, log, starts=1)  # one start, as that folder solved: every stage reused
    assert sum("reused" in line for line in log) == len(STAGE_NAMES), log


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"net_lams": 4}, "net_lams must be odd"),
        ({"triple": (0, 1, 1)}, "three distinct classes"),
        ({"triple": (0, 1, 9)}, "triple must be <= 3"),
        ({"learned_losses": ("focal",)}, "must include 'ce'"),
        ({"learned_losses": ("ce", "hinge")}, "learned_losses must be one of"),
        ({"K": 2}, "K must be >= 3"),
        ({"d": 2}, "d must be >= 3"),
        ({"dataset": "mnist"}, "give data_dir"),
        ({"measure_every": 0}, "measure_every must be >= 1"),
        ({"lam_Hs": ()}, "lam_Hs must hold at least one value"),
    ],
)
def test_bad_configurations_are_refused_with_the_allowed_range(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_presets():
    assert set(PRESETS) == {"quick", "full"}
    quick, full = preset("quick"), preset("full")
    assert quick.dataset == "digits" and full.dataset == "mnist1d"
    assert full == ReproduceConfig()
    # The full preset trains close to the paper's regime; the quick one keeps lr 0.05.
    paper = full.train_config(1.0, "learned")
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.batch_size) == (
        "sgd", 0.1, 5e-4, 128
    )  # fmt: skip
    assert paper.momentum == 0.9 and full.epochs >= 200 and full.alpha == 1.0
    assert quick.train_config(1.0, "learned").lr == 0.05
    with pytest.raises(ValueError, match="unknown ReproduceConfig field"):
        preset("quick", epoch=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("slow")


def test_cli_refuses_a_file_as_output_and_explains(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert cli.main(["reproduce", "--quick", "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_quick_preset_under_explicit_flags(tmp_path, monkeypatch):
    seen = {}

    def fake(config, out, progress=True, check_memory=True):
        seen.update(config=config, out=out, progress=progress)

    monkeypatch.setattr("ufm.commands.reproduce.reproduce", fake)
    assert (
        cli.main(
            ["reproduce", "--quick", "--epochs", "7", "--out", str(tmp_path / "r"), "--no-progress"]
        )
        == 0
    )
    config = seen["config"]
    assert config.dataset == "digits" and config.epochs == 7 and seen["progress"] is False


def test_readme_quick_start_runs_the_quick_reproduction_and_its_gallery_exists():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "ufm reproduce --quick --out results/quick" in section
    # the README shows a few figures; the docs gallery has every one (its directive draws
    # docs/gallery/<name>.png for each registered figure)
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)
    assert images and "docs/gallery.rst" in text
    for image in images:
        assert (ROOT / image).is_file(), image
    gallery = [ROOT / "docs" / "gallery" / f"{name}.png" for name in FIGURES]
    assert all(path.is_file() for path in gallery)
    assert sum(path.stat().st_size for path in gallery) < 1_600_000


def test_mixture_files_hold_the_exact_and_solved_three_class_optimum(tiny_reproduction):
    """Mixtures figure files: equal weights on every boundary (theory and solver), the
    theory's amplification starting at 1 for m = 1, and a network projection on the simplex."""
    root = tiny_reproduction
    for stage, name in ((layout.THEORY, "theory"), (layout.SOLVER, "solver")):
        with np.load(layout.mixture_projection(root, stage, name)) as data:
            coordinates, classifier, offsets, weights = (
                data[k] for k in ("coordinates", "classifier", "offsets", "weights")
            )
        assert np.abs(weights.sum(1) - 1).max() <= 1e-12 and weights.shape[1] == 3
        equal = np.flatnonzero(np.abs(weights - 1 / 3).max(1) <= 1e-12)
        assert len(equal) == 1
        logits = coordinates[equal[0]] @ classifier.T + offsets
        scale = np.abs(coordinates @ classifier.T).max()
        assert logits.max() - logits.min() <= 1e-8 * scale, (name, logits)
    rows = read_csv(layout.theory_file(root, layout.MIXTURE_AMPLIFICATION))
    first = [r for r in rows if int(r["m"]) == 1]
    assert all(abs(float(r["amplification"]) - 1) <= 1e-12 for r in first)
    assert all(abs(float(r["amplification_mse"]) - 1) <= 1e-12 for r in rows)
    with np.load(layout.mixture_projection(root, layout.NETWORKS, "network")) as data:
        projected, grid = data["coordinates"], data["weights"]
    run = layout.network_run(root, layout.MIXTURE_NETWORK_RUN)
    measurement = layout.final_measurement(run, TINY["epochs"])
    with np.load(measurement / "activations_mixtures3.npz") as data:
        features, weight, centre = (data[k] for k in ("features", "weight", "global_mean"))
        assert np.array_equal(data["weights"], grid)
    # independently: cell means over the input triples, in a QR basis of the classifier plane;
    # the two bases differ by a rotation or reflection, which keeps every pairwise distance
    rows = weight.astype(np.float64)[list(TINY_TRIPLE)]
    basis, _ = np.linalg.qr((rows - rows.mean(0)).T)
    ours = (features.astype(np.float64).mean(0) - centre) @ basis[:, :2]
    distances = lambda y: np.linalg.norm(y[:, None] - y[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(distances(projected), distances(ours), rtol=1e-9, atol=1e-9)
    networks = read_json(layout.stage_dir(root, layout.NETWORKS) / layout.SUMMARY)
    assert networks["mixture_run"]["name"] == layout.MIXTURE_NETWORK_RUN


def test_a_folder_from_before_the_mixture_runs_gains_them_and_keeps_its_other_runs(
    tiny_reproduction, tmp_path, monkeypatch
):
    """A reproduction written before the mixtures figure: its stage summaries exist but the
    mixture files do not. The stages run again, train and solve only the mixture runs, and
    figure 9 is drawn."""
    import shutil

    root = copy_of(tiny_reproduction, tmp_path / "old")
    for stage in (layout.THEORY, layout.SOLVER, layout.NETWORKS):
        for path in layout.stage_files(root, stage):
            path.unlink()
    shutil.rmtree(layout.solver_run(root, solver_stage.MIXTURE_RUN))
    shutil.rmtree(layout.network_run(root, layout.MIXTURE_NETWORK_RUN))
    (layout.stage_dir(root, layout.FIGURES) / "mixtures.png").unlink()
    trained, solved = [], []
    real_training, real_solve = network_stage.run_training, solver_stage.run_to_folder

    def record_training(config, folder, resume=False, progress=True, check_memory=True):
        trained.append(Path(folder).name)
        return real_training(config, folder, resume=resume, progress=progress)

    def record_solve(config, *args, **kwargs):
        solved.append(config.mixup_points)
        return real_solve(config, *args, **kwargs)

    monkeypatch.setattr(network_stage, "run_training", record_training)
    monkeypatch.setattr(solver_stage, "run_to_folder", record_solve)
    run_tiny(root)
    assert trained == [layout.MIXTURE_NETWORK_RUN] and solved == [3]
    for stage in (layout.THEORY, layout.SOLVER, layout.NETWORKS):
        assert layout.stage_complete(root, stage)
    assert (layout.stage_dir(root, layout.FIGURES) / "mixtures.png").is_file()
