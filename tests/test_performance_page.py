"""docs/performance.md is written by scripts/make_performance_page.py, never by hand.

The page is its prose (``docs/performance.md.in``) with every measured number read from the
JSON files of ``benchmarks/``: a number edited on the page, or typed into the prose, fails
here, and so does a benchmark file the page does not read. A file written by a benchmark
script (the shape a rerun has) renders in place of the transcribed one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from scripts_support import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def page():
    return load_script("make_performance_page.py")


def test_the_committed_page_is_what_the_generator_renders(page):
    rendered, _ = page.render()
    committed = (ROOT / "docs" / "performance.md").read_text()
    assert committed == rendered, (
        "docs/performance.md differs from its rendering: edit docs/performance.md.in or "
        "benchmarks/*.json and run python scripts/make_performance_page.py")
    assert page.main(["--check"]) == 0


def test_every_benchmark_file_is_read_by_the_page(page):
    _, used = page.render()
    files = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.json"))
    assert files and sorted(used) == files


def test_every_benchmark_file_records_where_it_comes_from():
    for path in sorted((ROOT / "benchmarks").glob("*.json")):
        record = json.loads(path.read_text())
        assert "command" in record, path.name
        if "source" in record:  # transcribed: the machine is described, the origin noted
            assert record["source"].startswith("transcribed from docs/performance.md"), path.name
            assert record.get("machine_note"), path.name


# Numbers the prose may hold: settings, tolerances and theory, none of them measured.
SETTINGS = {"0.05", "1.04", "1.15", "1.5", "9.52"}


def test_the_prose_holds_no_measured_number(page):
    prose = page.COMMENT.sub("", page.TEMPLATE.read_text())
    prose = page.PLACEHOLDER.sub(" ", prose)
    prose = re.sub(r"`[^`]*`", " ", prose)  # commands and paths
    timed = re.findall(r"\b\d[\d.,]*\s*(?:s|MB|GB|%|minutes?|hours?)(?![\w-])", prose)
    assert not timed, f"a time, size or share typed into the prose: {timed}"
    decimals = set(re.findall(r"(?<![\w.^])\d+\.\d+(?![\w.])", prose)) - SETTINGS
    assert not decimals, f"decimals in the prose, not read from benchmarks/: {sorted(decimals)}"


def test_check_fails_on_a_hand_edited_number(page, tmp_path, monkeypatch):
    edited = (ROOT / "docs" / "performance.md").read_text().replace("| 6.1 s |", "| 5.9 s |", 1)
    assert "| 5.9 s |" in edited
    monkeypatch.setattr(page, "PAGE", tmp_path / "performance.md")
    page.PAGE.write_text(edited)
    assert page.main(["--check"]) == 1


def _render_with(page, tmp_path, replaced: dict[str, dict]) -> str:
    folder = tmp_path / "benchmarks"
    shutil.copytree(ROOT / "benchmarks", folder)
    for name, record in replaced.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    text, _ = page.render(page.TEMPLATE, folder)
    return text


def test_files_as_the_scripts_write_them_render(page, tmp_path):
    """A rerun's file (every run, medians, full precision, MB, eigenvalues in their own
    units) replaces a transcribed one; the page shows its numbers and its command."""
    rows = json.loads((ROOT / "benchmarks" / "bench_contention_mixed.json").read_text())["rows"]
    for name, row in rows.items():
        for c in ("idle", "busy"):
            row[c] = {**row[c], "seconds": row[c]["seconds"] + 0.01, "iterations": 6,
                      "stop_reason": "converged", "grad_norm": 1e-12, "theory_distance": 7.6e-15}
            row[f"{c}_seconds_all"] = [row[c]["seconds"], row[c]["seconds"] + 1]
            row[f"{c}_seconds_median"] = row[c]["seconds"] + 0.5
        rows[name] = row
    command = "python scripts/bench_contention.py --skip-adam --repeats 1 --out benchmarks/x.json"
    contention = {"command": command, "K": 100, "d": 128, "n": 210000, "seed": 0, "cores": 2,
                  "threads": 2, "steal_percent": 0.4, "sched_autogroup_enabled": "1",
                  "torch": "2.13.0", "python": "3.11.7", "machine": "x86_64", "rows": rows}
    scaling = json.loads((ROOT / "benchmarks" / "bench_scaling_mixed.json").read_text())
    scaling = {key: scaling[key] for key in ("command", "cores")}
    scaling["large_fixed"] = {"n": 200004, "K": 1000, "d": 1000, "seconds": 71.2, "iterations": 7,
                              "seconds_per_iteration": 10.2, "stop_reason": "converged",
                              "grad_norm": 8e-11, "theory_distance": 1.5e-12,
                              "etf_distance_W": 0.0, "peak_mb": 4300.0, "state_mb": 3000.0,
                              "excess_mb": 1300.0}
    hessian = json.loads((ROOT / "benchmarks" / "reduced_hessian_random50.json").read_text())
    for key in ("source", "machine_note", "note"):
        del hessian[key]
    hessian["smallest_nonzero"] = [0.00031, 0.0004]
    text = " ".join(_render_with(page, tmp_path, {"bench_contention_mixed": contention,
                                                  "bench_scaling_mixed": scaling,
                                                  "reduced_hessian_random50": hessian}).split())
    assert "| 6.1 s | 10.5 s | 1.73 |" in text  # slowdown as the script computed it
    assert f"`{command}`" in text
    assert "peak 4.2 GB" in text  # 4300 MB
    assert "0.062 lam_W" in text  # 0.00031 / lam_W = 0.005
    assert "`benchmarks/bench_contention_mixed.json`: " + f"`{command}`; cores 2" in text


def test_a_file_the_page_does_not_read_fails(page, tmp_path):
    with pytest.raises(ValueError, match="does not read: stray"):
        _render_with(page, tmp_path, {"stray": {"command": None, "seconds": 1.0}})


def test_a_missing_value_names_its_placeholder(page, tmp_path):
    record = json.loads((ROOT / "benchmarks" / "anchor_start.json").read_text())
    del record["fixed_etf_newton_passes"]["zero"]
    with pytest.raises(ValueError, match=r"fixed_etf_newton_passes.*no field 'zero'"):
        _render_with(page, tmp_path, {"anchor_start": record})


def test_formats(page):
    fmt = page.format_value
    assert fmt([0.047, 0.21, 1.7, 24.5], "list sig2") == "0.047, 0.21, 1.7, 24.5"
    assert fmt(0.10, "sig2") == "0.10" and fmt(4.5, "sig3") == "4.50"
    assert fmt(1.8e-9, ".1e") == "1.8e-9" and fmt(2.5e12, ".1e") == "2.5e12"
    assert fmt([{"between": [30, 40]}, {"between": [31, 38]}], "range .0f") == "30 to 40"
    assert fmt([1.28, 1.49, 1.5], "and .2f") == "1.28, 1.49 and 1.50"
    assert fmt([2, 3, 4], "or d") == "2, 3 or 4"
    assert fmt(0, "word") == "none" and fmt(3, "word") == "three" and fmt(17, "word") == "17"
    assert fmt(210000, ",") == "210,000" and fmt("python x.py", "code") == "`python x.py`"
    with pytest.raises(TypeError):
        fmt({"between": [30, 40]}, ".0f")
    assert page.as_unit({"value": 4.1, "unit": "GB"}, "GB", 1024) == 4.1
    assert page.as_unit(2048.0, "GB", 1024) == 2.0
    with pytest.raises(ValueError):
        page.as_unit({"value": 4.1, "unit": "GB"}, "lam_W", 0.005)


def test_reflow_keeps_markdown_meaning(page):
    words = " ".join(["word"] * 18) + " sigma^2 (I - 11^T/K) and `python scripts/x.py --a b` end"
    text = page.reflow(f"- {words}\n\n| a | b |\n|---|---|", width=100)
    lines = text.splitlines()
    assert lines[0].startswith("- ") and all(line.startswith("  ") for line in lines[1:-3])
    assert not any(re.match(r"\s*[-*+>] ", line) for line in lines[1:-3])
    assert "`python scripts/x.py --a b`" in text and text.endswith("| a | b |\n|---|---|")


def test_readme_and_home_page_quote_the_benchmark_files(page):
    records = page.load_records()
    readme, _ = page.render_text(
        "{{ bench_contention_adam.rows.chunks.idle.seconds | .1f }} s against "
        "{{ bench_contention_adam.rows.adam.idle.seconds | .0f }} s "
        "({{ bench_contention_adam.rows.chunks.speedup_vs_adam.idle | .0f }}x), within "
        "{{ fixed_etf_theory_distance.theory_distance | .1e }} of the theory", records)
    assert readme in (ROOT / "README.md").read_text()
    home, _ = page.render_text("in about {{ round(quick_start_reproduce.seconds, -1) | .0f }} s",
                               records)
    assert home in (ROOT / "docs" / "index.md").read_text()
