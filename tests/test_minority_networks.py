"""The minority study of networks (ufm.nets.minority_study) and where the reproduction shows it:
the lam_H fit chosen from the run records, the verdict rule on seed numbers with a known
answer, the theory's lam_W, the study file (a stand-in trains), the network stage's file, the
report's section and figure 11 with and without networks."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from ufm import imbalance_theory
from ufm.etf import simplex_etf
from ufm.nets import minority_study as study
from ufm.nets.cell_groups import GROUPS, cell_groups, group_amplification
from ufm.nets.cell_means import cell_statistics
from ufm.nets.coefficient_curves import coefficient_curves
from ufm.nets.features_file import read_features
from ufm.nets.minority_study import (
    PREDICTIONS,
    StudySettings,
    aggregate,
    amplification_gaps,
    compare,
    fit_lam_H,
    gain_matched_lam_W,
    run_study,
    side,
    theory_lams,
)
from ufm.nets.run import measurement_dir
from ufm.plots.minority import minority_collapse, network_figure
from ufm.reproduce import layout, network_stage, preset
from ufm.reproduce.figure_numbers import Summaries
from ufm.reproduce.figure_numbers import minority_collapse as minority_numbers
from ufm.reproduce.pipeline import check_output
from ufm.reproduce.report import minority_networks_section
from ufm.seeds import RESOLUTION


@pytest.fixture(autouse=True)
def small_theory(monkeypatch):
    """A coarser theory than the study's (5 lams, 3 ratios of rho): the same code, faster."""
    monkeypatch.setattr(study, "THEORY_LAMS", 5)
    monkeypatch.setattr(study, "THEORY_RATIOS", 3)


def _fit_row(seed, curve, status, margin, gain=3.0, kind="mixup_sample", rho=1.0):
    return {"kind": kind, "rho": rho, "seed": seed, "curve_fitted_lam_H": curve,
            "curve_fitted_lam_H_status": status, "fitted_lam_H": margin, "classifier_gain": gain}


def test_lam_H_is_the_curve_fit_when_every_seed_fitted_it_as_a_geometric_mean():
    rows = [_fit_row(0, 0.01, "fitted", 0.5, 2.0), _fit_row(1, 0.1, "fitted", 0.5, 4.0),
            _fit_row(2, 5.0, "fitted", 0.5, 3.0, rho=2.0),  # not balanced: not used
            _fit_row(3, 7.0, "fitted", 0.5, 3.0, kind="erm")]  # not mixup: not used
    fit = fit_lam_H(rows)
    assert fit["status"] == "fitted" and fit["source"] == "curve_fitted_lam_H"
    assert fit["lam_H"] == pytest.approx(math.sqrt(0.01 * 0.1), rel=1e-12)
    assert fit["log10_sd"] == pytest.approx(math.sqrt(0.5), rel=1e-12)  # logs -2, -1
    assert (fit["low"], fit["high"], fit["gain"]) == (0.01, 0.1, 3.0)
    assert [s["seed"] for s in fit["seeds"]] == [0, 1]


def test_a_curve_fit_at_its_bound_falls_back_to_the_margins_and_is_never_called_fitted():
    rows = [_fit_row(0, 1e4, "at_bound", 0.02), _fit_row(1, 0.3, "fitted", 0.08)]
    fit = fit_lam_H(rows)
    assert fit["source"] == "fitted_lam_H" and fit["curve_statuses"] == ["at_bound", "fitted"]
    assert fit["lam_H"] == pytest.approx(0.04, rel=1e-12)
    # Both fits at the bound (a record from before the status key: its status is computed).
    bounded = fit_lam_H([_fit_row(0, 1e4, None, 1e4), _fit_row(1, 1e4, "at_bound", 0.1)])
    assert bounded["status"] == "at_bound" and bounded["lam_H"] is None
    assert bounded["source"] is None and bounded["curve_statuses"] == ["at_bound", "at_bound"]
    assert fit_lam_H([])["status"] == "not_fitted"


def _rows(values: dict[tuple[str, float], list[float]]) -> list[dict]:
    return [{"kind": kind, "rho": rho, "seed": seed, "imbalance_ratio": rho,
             "minority_cosine": value, "minority_test_accuracy": 0.5,
             "majority_test_accuracy": 0.9, "label_mass_ratio": rho}
            for (kind, rho), seeds in values.items() for seed, value in enumerate(seeds)]


def _judge(sample: dict[float, list[float]], erm: dict[float, list[float]]) -> dict:
    values = {**{("mixup_sample", r): v for r, v in sample.items()},
              **{("erm", r): v for r, v in erm.items()}}
    return compare(aggregate(_rows(values)), PREDICTIONS[0])


def test_the_verdict_counts_a_difference_only_beyond_twice_its_combined_standard_error():
    # Three seeds at +-d around each mean: sd = d, se = d/sqrt(3), combined se = d sqrt(2/3).
    def seeds(mean, d=0.01):
        return [mean - d, mean, mean + d]

    error = 0.01 * math.sqrt(2 / 3)
    just_over, just_under = (RESOLUTION + 0.1) * error, (RESOLUTION - 0.1) * error
    holds = _judge({8.0: seeds(just_over), 64.0: seeds(0.3)}, {8.0: seeds(0.0), 64.0: seeds(0.1)})
    assert holds["verdict"] == "holds"
    assert [p["outcome"] for p in holds["points"]] == ["as_predicted", "as_predicted"]
    assert holds["points"][0]["combined_se"] == pytest.approx(error, rel=1e-12)
    unresolved = _judge({64.0: seeds(just_under)}, {64.0: seeds(0.0)})
    assert unresolved["verdict"] == "not_resolved"
    assert unresolved["points"][0]["in_se"] == pytest.approx(RESOLUTION - 0.1, rel=1e-9)
    against = _judge({8.0: seeds(0.0), 64.0: seeds(0.0)}, {8.0: seeds(0.0), 64.0: seeds(0.2)})
    assert against["verdict"] == "contradicted"
    # Reversed at one rho, not resolved at the others: contradicted, not "not resolved".
    reversed_once = _judge({8.0: seeds(-0.1), 64.0: seeds(just_under)},
                           {8.0: seeds(0.0), 64.0: seeds(0.0)})
    assert reversed_once["verdict"] == "contradicted"
    assert [p["outcome"] for p in reversed_once["points"]] == ["against", "not_resolved"]
    mixed = _judge({8.0: seeds(-0.2), 64.0: seeds(0.2)}, {8.0: seeds(0.0), 64.0: seeds(0.0)})
    assert mixed["verdict"] == "mixed"
    # rho = 1 is no test of the prediction; one seed cannot be judged.
    assert [p["rho"] for p in _judge({1.0: seeds(0.9), 2.0: seeds(0.0)},
                                     {1.0: seeds(0.0), 2.0: seeds(0.0)})["points"]] == [2.0]
    assert _judge({64.0: [0.5]}, {64.0: [0.0]})["verdict"] == "no_spread"
    # Class pairing is predicted *below* its control: the sign is the prediction's.
    values = {("mixup_class", 64.0): seeds(-0.1), ("sample_at_class_mass", 64.0): seeds(0.0)}
    assert compare(aggregate(_rows(values)), PREDICTIONS[1])["verdict"] == "holds"


def test_the_gain_matched_lam_W_gives_the_networks_gain_and_only_the_product_matters():
    lams = theory_lams(1.0, 5)
    assert lams == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9], abs=1e-12)
    lam_W = gain_matched_lam_W(4, 0.05, 2.5, lams)
    balanced = imbalance_theory(4, 1, 1.0, 0.05, lam_W, lams)
    assert balanced.eigenvalues["between"] == pytest.approx(2.5, rel=1e-9)
    a = imbalance_theory(4, 2, 16.0, 0.05, lam_W, lams).minority_cosine
    b = imbalance_theory(4, 2, 16.0, 0.05 * 4, lam_W / 4, lams).minority_cosine
    assert a == pytest.approx(b, abs=1e-9)
    with pytest.raises(ValueError, match="finite and positive"):
        gain_matched_lam_W(4, math.nan, 2.5, lams)


class StandIn:
    """Trains nothing: a minority cosine that grows with the run's label mass, sample pairing
    above plain training, class pairing below its control, with a seed spread; lam_H fitted."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, folder, force):
        self.calls.append(folder.name)
        ratio, seed = config.imbalance_ratio, config.seed
        mixup = config.alpha > 0
        shift = (0.05 if mixup and config.pairing == "sample" else 0.0) - (
            0.05 if config.pairing == "class" else 0.0)
        return {"minority_cosine": -1 / 9 + 0.03 * math.log2(ratio) + shift * (ratio > 1)
                + 0.002 * (seed - 1),
                "minority_test_accuracy": 0.9, "majority_test_accuracy": 0.95,
                "test_accuracy": 0.93, "label_mass_ratio": ratio, "label_mass_ratio_train": ratio,
                "train_class_counts": [], "curve_fitted_lam_H": 0.05 * (1 + 0.1 * seed),
                "curve_fitted_lam_H_status": "fitted", "fitted_lam_H": 0.01,
                "classifier_gain": 3.0, "measurement": "default",
                **_stand_in_amplification(ratio, seed, mixup)}


def _stand_in_amplification(ratio, seed, mixup):
    """Group amplifications whose minority-majority cells fall below the majority-majority
    ones as the ratio grows (mixup), with a seed spread and errors within each run."""
    values = {"majority_majority": 1.8, "minority_majority": 1.8 - 0.1 * math.log2(ratio) * mixup,
              "minority_minority": 1.5}
    numbers = {"amplification": 1.7, "amplification_error": 0.05}
    for group, value in values.items():
        numbers[f"amplification_{group}"] = value + 0.01 * (seed - 1)
        numbers[f"amplification_{group}_error"] = 0.03
    return numbers


SMALL = {"dataset": "digits", "epochs": 1, "seeds": [0, 1, 2], "rhos": [1.0, 4.0]}


def test_the_study_file_holds_runs_fit_theory_and_verdicts_and_resumes(tmp_path):
    out, train = tmp_path / "study.json", StandIn()
    result = run_study(StudySettings(**SMALL), out, log=lambda line: None, train=train)
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["runs"] == result["runs"] and len(saved["runs"]) == 24
    # The rho = 1 control is the rho = 1 sample-pairing run: copied, not trained again.
    assert len(train.calls) == 21
    control = next(r for r in saved["runs"] if r["name"] == "sample_at_class_mass_rho1_seed0")
    assert control["same_run_as"] == "mixup_sample_rho1_seed0"
    fit = saved["lam_H_fit"]
    assert fit["status"] == "fitted" and fit["lam_H"] == pytest.approx(
        0.05 * (1.0 * 1.1 * 1.2) ** (1 / 3), rel=1e-12)
    assert saved["lam_W"]["choice"] == "gain_matched" and saved["lam_W"]["weight_decay"] == 5e-4
    kinds = {row["kind"] for row in saved["theory"]}
    assert kinds == set(study.KINDS)
    verdicts = {p["name"]: p["verdict"] for p in saved["predictions"]}
    assert verdicts == {"sample_collapses_more_than_erm": "holds",
                        "class_beyond_label_mass": "holds"}
    # The gap of the amplification: each seed's falls by 0.2 from rho 1 to 4 under mixup.
    gaps = {g["kind"]: g["points"] for g in saved["amplification_gaps"]}
    assert set(gaps) == set(study.KINDS)
    top = gaps["mixup_sample"][-1]
    assert top["gap"] == pytest.approx(-0.2, abs=1e-12) and top["side"] == "below"
    assert top["change_side"] == "below" and top["theory_gap"] is not None
    assert gaps["erm"][-1]["side"] == "not_resolved" and gaps["erm"][-1]["theory_gap"] is None
    theory_rows = [r for r in saved["theory"] if r["lam_W_choice"] == "gain_matched"]
    assert all((r["amplification_minority_majority"] is None) == (r["kind"] == "erm")
               for r in theory_rows)
    table = "\n".join(study.amplification_tables(saved))
    assert "| mixup, sample pairing: gap | +0.000 +- " in table and "**-0.200 +- " in table
    assert table.count("| theory gap |") == 3  # the three mixup kinds, not ERM
    # A second call continues the file: nothing trains; without resume or force it is refused.
    again = StandIn()
    run_study(StudySettings(**SMALL), out, resume=True, log=lambda line: None, train=again)
    assert again.calls == [] and json.loads(out.read_text())["runs"] == saved["runs"]
    with pytest.raises(ValueError, match="exists"):
        run_study(StudySettings(**SMALL), out, train=again)
    with pytest.raises(ValueError, match="other settings"):
        run_study(StudySettings(**{**SMALL, "epochs": 2}), out, resume=True, train=again)
    assert again.calls == []


@pytest.mark.parametrize("change, message", [
    ({"kinds": ["erm", "nonsense"]}, "kinds must be among"),
    ({"minority": 1}, r"minority must lie in \[2, 9\]"),
    ({"seeds": [0, 0]}, "seeds must be distinct"),
    ({"rhos": [0.5]}, r"imbalance_ratio must lie in \[1, inf\)"),
])
def test_bad_settings_are_refused_before_any_run(tmp_path, change, message):
    train = StandIn()
    with pytest.raises(ValueError, match=message):
        run_study(StudySettings(**{**SMALL, **change}), tmp_path / "s.json", train=train)
    assert train.calls == [] and not (tmp_path / "s.json").exists()


def _theory_stage(root):
    """The two files of the theory stage figure 11 reads, with made-up curves."""
    folder = layout.stage_dir(root, layout.THEORY)
    folder.mkdir(parents=True)
    with open(layout.theory_file(root, layout.MINORITY_COLLAPSE), "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["setting", "kind", "imbalance_ratio", "minority_cosine"])
        for setting in ("reproduction", "sweep"):
            for kind in ("sample", "class", "plain"):
                for rho in (1.0, 10.0, 100.0):
                    writer.writerow([setting, kind, rho, -1 / 3 + 0.1 * math.log10(rho)])
    numbers = {"K": 4, "minority_classes": 2, "lam_H": 5e-3, "lam_W": 5e-3, "num_lams": 5,
               **{kind: {"label": kind, "threshold": None, "exact_collapse": None,
                         "limit_cosine": 0.5} for kind in ("sample", "class", "plain")}}
    summary = {"minority_collapse": {"reproduction": numbers, "sweep": numbers}}
    (folder / layout.SUMMARY).write_text(json.dumps(summary))
    return numbers


def test_the_stage_writes_the_study_and_the_report_and_figure_show_it(tmp_path, monkeypatch):
    config = preset("full", minority_epochs=1, seeds=2)
    monkeypatch.setattr(study, "train_one", StandIn())
    monkeypatch.setattr(study, "RHOS", (1.0, 8.0))  # the settings' default rhos
    root = tmp_path / "reproduction"
    lines = []
    summary = network_stage.minority_study(config, root, lines.append)
    path = layout.minority_networks(root)
    assert json.loads(path.read_text())["complete"] and summary["file"] == path.name
    assert summary["lam_H_fit"]["status"] == "fitted" and set(summary["verdicts"]) == {
        p["name"] for p in PREDICTIONS}
    assert any("minority study: digits, 1 epochs, 2 seed(s)" in line for line in lines)

    text = "\n".join(minority_networks_section(root))
    assert "## Minority collapse of networks" in text and "gain-matched" in text
    assert text.count("The prediction **") == 2
    assert "| mixup, class pairing | " in text
    assert "| mixup, class pairing: minority-majority | " in text
    assert text.count("the minority-majority cells' amplification minus") == 4  # one a kind

    given = _theory_stage(root)
    assert len(minority_collapse(root).axes) == 3  # (c): the networks
    theory = json.loads((layout.stage_dir(root, layout.THEORY) / layout.SUMMARY).read_text())
    words = minority_numbers(Summaries(root, {}, theory, {}, {}))
    assert "Networks (panel c; digits, 1 epochs, 2 seeds): lam_H fitted" in words
    assert given["K"] == 4
    path.unlink()
    assert len(minority_collapse(root).axes) == 2 and minority_networks_section(root) == []


def test_network_figure_draws_without_a_fitted_lam_H_and_says_why(tmp_path):
    train = StandIn()
    result = run_study(StudySettings(**{**SMALL, "kinds": ["erm", "mixup_sample"]}),
                       tmp_path / "s.json", log=lambda line: None, train=train)
    unfitted = {**result, "theory": [], "lam_W": None,
                "lam_H_fit": {**result["lam_H_fit"], "lam_H": None, "status": "at_bound"}}
    figure = network_figure([result, unfitted])
    fitted_axis, unfitted_axis = figure.axes
    assert len(fitted_axis.lines) > len(unfitted_axis.lines)
    assert "not fitted (at_bound)" in unfitted_axis.get_legend().get_title().get_text()
    assert "gain-matched" in fitted_axis.get_legend().get_title().get_text()
    assert all(np.isfinite(line.get_xdata()).all() for line in fitted_axis.lines)


def test_layout_and_output_check_know_the_minority_study(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    old = preset("quick").__dict__.copy()
    old.pop("minority_dataset"), old.pop("minority_epochs")
    (root / layout.CONFIG).write_text(json.dumps(json.loads(json.dumps(old, default=list))))
    assert not layout.minority_study_planned(root)
    assert layout.minority_networks(root) not in layout.stage_files(root, layout.NETWORKS)
    check_output(root, preset("quick"))  # a folder from before the study: minority_epochs = 0
    with pytest.raises(ValueError, match="minority_dataset, minority_epochs"):
        check_output(root, preset("quick", minority_epochs=5))
    (root / layout.CONFIG).write_text(json.dumps({**old, "minority_epochs": 5}))
    assert layout.minority_networks(root) in layout.stage_files(root, layout.NETWORKS)


# -- the amplification per group of cells (ufm.nets.cell_groups) -------------------------------


def test_cell_groups_count_the_minority_classes_of_each_cell():
    # K = 5, the last two classes the minority; cells in either order, same-class cells too.
    c = np.array([0, 0, 3, 3, 1, 4, 2])
    c_prime = np.array([1, 3, 4, 3, 1, 0, 4])
    assert cell_groups(c, c_prime, 5, 2).tolist() == [0, 1, 2, 2, 0, 1, 1]
    for minority, message in ((0, "minority must be >= 1"), (5, "minority must be <= 4")):
        with pytest.raises(ValueError, match=message):
            cell_groups(c, c_prime, 5, minority)
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 5\)"):
        cell_groups(np.array([5]), np.array([0]), 5, 2)


def _known_cells(K=6, minority=2, pairs=3, lams=5):
    """Cell statistics of made-up features whose amplification per group is known: on a
    simplex ETF, a clean feature of a majority (minority) class is 1.0 (0.5) times its row,
    and a different-class mixture at lam = 1/2 is t (w_c + w_c'), t = 0.6, 0.7, 0.9 for the
    majority-majority, minority-majority and minority-minority cells; pairs scatter about
    the cell mean by +-0.05 w_c."""
    W = simplex_etf(K, K).numpy()
    grid = np.linspace(0.0, 1.0, lams)
    first = K - minority
    t = {0: 0.6, 1: 0.7, 2: 0.9}
    features, c, c_prime = [], [], []
    for k in range(K):
        for kp in range(k, K):
            count = (k >= first) + (kp >= first)
            for p in range(pairs):
                noise = 0.05 * (p - (pairs - 1) / 2) * W[k]
                if k == kp:
                    rows = [(1.0 if k < first else 0.5) * W[k] + noise for _ in grid]
                else:
                    rows = [2 * t[count] * (lam * W[k] + (1 - lam) * W[kp]) + noise
                            for lam in grid]
                features.append(rows)
                c.append(k)
                c_prime.append(kp)
    return cell_statistics(np.array(features), np.array(c), np.array(c_prime), grid, W,
                           np.zeros(K))


def test_group_amplification_of_features_whose_answer_is_known():
    cells = _known_cells()
    found = group_amplification(cells, 6, 2)
    # normalisers: 1.0 (majority), 0.5 (minority), (4 * 1.0 + 2 * 0.5) / 6 (all classes)
    expected = {"majority_majority": 1.2 / 1.0, "minority_majority": 1.4 / (5 / 6),
                "minority_minority": 1.8 / 0.5}
    counts = {"majority_majority": (6, 4), "minority_majority": (8, 6),
              "minority_minority": (1, 2)}
    for group in GROUPS:
        entry = found[group]
        assert entry["amplification"] == pytest.approx(expected[group], rel=1e-12), group
        assert (entry["cells"], entry["same_cells"]) == counts[group]
        assert entry["se"] > 0 and entry["error"] == pytest.approx(
            max(entry["se"], entry["se_cells"]) if math.isfinite(entry["se_cells"])
            else entry["se"])
    # one minority-minority cell: no jackknife over its cells, the pairs' error is quoted
    assert math.isnan(found["minority_minority"]["se_cells"])
    # a group's numbers are those of its cells alone: the whole run's curves on the subset
    alone = coefficient_curves(cells.select(cell_groups(cells.c, cells.c_prime, 6, 2) == 0))
    assert alone.amplification == pytest.approx(expected["majority_majority"], rel=1e-12)
    with pytest.raises(ValueError, match="mask of the 21 cells"):
        cells.select(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="minority must be <= 5"):
        group_amplification(cells, 6, 6)


def _amplification_rows(values, errors):
    """Rows of one (kind, rho) with given majority-majority and minority-majority values
    per seed and one within-run error for every number."""
    return [{"kind": "mixup_sample", "rho": 4.0, "seed": seed, "imbalance_ratio": 4.0,
             "minority_cosine": 0.0, "minority_test_accuracy": 0.5,
             "majority_test_accuracy": 0.9, "label_mass_ratio": 4.0,
             "amplification_majority_majority": high, "amplification_minority_majority": low,
             "amplification_majority_majority_error": errors,
             "amplification_minority_majority_error": errors}
            for seed, (high, low) in enumerate(values)]


def test_seed_aggregation_combines_the_seed_spread_with_the_runs_errors():
    rows = _amplification_rows([(1.8, 1.5), (1.9, 1.5), (2.0, 1.8)], errors=0.06)
    entry = aggregate(rows)[0]
    key = "amplification_majority_majority"
    assert entry[key] == pytest.approx(1.9, rel=1e-12)
    assert entry[f"{key}_seed_se"] == pytest.approx(0.1 / math.sqrt(3), rel=1e-12)
    assert entry[f"{key}_within"] == pytest.approx(0.06 / math.sqrt(3), rel=1e-12)
    assert entry[f"{key}_se"] == pytest.approx(math.sqrt(0.01 / 3 + 0.0036 / 3), rel=1e-12)
    # the gap is paired within each run: -0.3, -0.4, -0.2, its error the two groups' combined
    assert entry["amplification_gap"] == pytest.approx(-0.3, rel=1e-12)
    assert entry["amplification_gap_within"] == pytest.approx(0.06 * math.sqrt(2 / 3), rel=1e-12)
    assert entry["amplification_gap_se"] == pytest.approx(
        math.sqrt(0.01 / 3 + 0.0072 / 3), rel=1e-12)
    # no group numbers (a study file from before they were measured): None, not an error
    bare = aggregate([{k: v for k, v in row.items() if "amplification" not in k}
                      for row in rows])[0]
    assert bare["amplification_gap"] is None and bare["amplification_gap_se"] is None
    # one seed: a mean but no error of it; a run without its error: no error either
    single = aggregate(rows[:1])[0]
    assert single["amplification_gap"] == pytest.approx(-0.3) and single["amplification_gap_se"] is None
    rows[1]["amplification_minority_majority_error"] = float("nan")
    assert aggregate(rows)[0]["amplification_gap_se"] is None


def test_the_gap_is_judged_against_its_error_and_against_the_balanced_runs():
    def entry(rho, gap, se):
        return {"kind": "mixup_class", "rho": rho, "amplification_gap": gap,
                "amplification_gap_se": se}

    table = [entry(1.0, -0.1, 0.05), entry(4.0, -0.15, 0.05), entry(64.0, -0.5, 0.1)]
    (found,) = amplification_gaps(table)
    assert found["from_rho"] == 1.0
    assert [p["side"] for p in found["points"]] == ["not_resolved", "below", "below"]
    assert [p["change_side"] for p in found["points"]] == [None, "not_resolved", "below"]
    assert found["points"][-1]["change_se"] == pytest.approx(math.hypot(0.1, 0.05))
    assert side(0.3, None) == "no_spread" and side(0.3, 0.1) == "above"


def test_a_real_run_measures_the_amplification_of_each_group(tmp_path):
    settings = StudySettings(dataset="digits", epochs=1, seeds=[0], rhos=[4.0])
    config = study.run_config(settings, "mixup_sample", 4.0, 0, 10)
    config.width, config.depth, config.feature_dim = 32, 1, 16
    numbers = study.train_one(config, tmp_path / "run")
    assert [numbers[f"amplification_{group}_cells"] for group in GROUPS] == [10, 25, 10]
    for group in GROUPS:
        assert math.isfinite(numbers[f"amplification_{group}"])
        assert numbers[f"amplification_{group}_error"] == max(
            numbers[f"amplification_{group}_se"], numbers[f"amplification_{group}_se_cells"])
    # the same numbers from the run's saved features, read again
    mixed = read_features(measurement_dir(tmp_path / "run", 1) / "mixed_features.npz")
    again = study.run_amplification(mixed, 5)
    assert all(again[key] == numbers[key] for key in again)
    assert math.isfinite(numbers["amplification"]) and numbers["measurement"] == "small"
