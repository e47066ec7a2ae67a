"""``--loss-param NAME=VALUE``: a loss's parameters (label smoothing's eps, focal's gamma) from
the command line of every command whose configuration has ``loss_params``."""

from __future__ import annotations

import json

import pytest

from ufm import losses
from ufm.cli import build_parser, main
from ufm.commands import job_config
from ufm.config import parse_loss_params
from ufm.nets import TrainConfig
from ufm.solver import UFMConfig, solve

SMALL = ["--K", "3", "--d", "2", "--num-lams", "3", "--tol", "1e-12", "--no-progress"]


def test_solve_writes_and_uses_the_given_parameter(tmp_path):
    out = tmp_path / "run"
    assert main(["solve", *SMALL, "--loss", "label_smoothing", "--loss-param", "eps=0.2",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["loss_params"] == {"eps": 0.2}
    loss = json.loads((out / "summary.json").read_text())["loss"]
    fields = {"K": 3, "d": 2, "num_lams": 3, "tol": 1e-12, "loss": "label_smoothing"}
    given = solve(UFMConfig(**fields, loss_params={"eps": 0.2})).summary["loss"]
    default = solve(UFMConfig(**fields)).summary["loss"]  # eps = 0.1
    assert loss == pytest.approx(given, rel=1e-12) and abs(loss - default) > 1e-3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--loss", "label_smoothing", "--loss-param", "epsilon=0.2"],
         ("ufm solve: error: bad parameters {'epsilon': 0.2} for loss 'label_smoothing'; "
          "allowed parameters: ['eps']")),
        (["--loss", "label_smoothing", "--loss-param", "eps=1.5"],
         "ufm solve: error: eps must lie in [0, 1), got 1.5"),
        (["--loss", "focal", "--loss-param", "gamma"],
         "ufm solve: error: --loss-param 'gamma': give NAME=VALUE, e.g. eps=0.2"),
        (["--loss", "focal", "--loss-param", "gamma=1", "--loss-param", "gamma=2"],
         "ufm solve: error: --loss-param gamma is given twice"),
    ],
)
def test_a_bad_parameter_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["solve", *SMALL, *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert not out.exists()


def test_values_are_numbers_strings_or_lists():
    assert parse_loss_params(["eps=0.2", "gamma=3", "form=pair", "priors=0.5, 0.3,0.2"]) == {
        "eps": 0.2, "gamma": 3, "form": "pair", "priors": (0.5, 0.3, 0.2)}
    assert isinstance(parse_loss_params(["gamma=3"])["gamma"], int)
    with pytest.raises(ValueError, match="an empty item in the list"):
        parse_loss_params(["priors=0.5,,0.5"])
    with pytest.raises(ValueError, match="give NAME=VALUE"):
        parse_loss_params(["=0.2"])


def test_a_list_value_becomes_the_logit_adjusted_priors():
    args = build_parser().parse_args(["solve", "--out", "x", "--K", "3", "--loss",
                                      "logit_adjusted", "--loss-param", "priors=0.5,0.3,0.2",
                                      "--loss-param", "tau=0.5"])
    config = job_config(args, UFMConfig)
    assert config.loss_params == {"priors": (0.5, 0.3, 0.2), "tau": 0.5}
    loss = config.make_loss()
    assert loss.priors == pytest.approx((0.5, 0.3, 0.2)) and loss.tau == 0.5


def test_train_and_the_config_file_take_it_too(tmp_path):
    """``ufm train`` builds its TrainConfig with the flag; the flag replaces the file's
    loss_params (as every flag replaces the file's value of its field)."""
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "t"), "--loss", "focal",
                                      "--loss-param", "gamma=1.5"])
    assert job_config(args, TrainConfig).loss_params == {"gamma": 1.5}
    file = tmp_path / "solve.toml"
    file.write_text('loss = "label_smoothing"\nloss_params = {eps = 0.3}\n')
    args = build_parser().parse_args(["solve", "--config", str(file), "--out", "x"])
    assert job_config(args, UFMConfig).loss_params == {"eps": 0.3}
    args = build_parser().parse_args(["solve", "--config", str(file), "--out", "x",
                                      "--loss-param", "eps=0.05"])
    assert job_config(args, UFMConfig).loss_params == {"eps": 0.05}


def test_compare_refuses_a_bad_parameter_before_reading_the_file(tmp_path, capsys):
    code = main(["compare", "--features", str(tmp_path / "none.npz"), "--loss", "focal",
                 "--loss-param", "gamma=-1"])
    assert code == 2
    assert capsys.readouterr().err.startswith("ufm compare: error: gamma must")


def test_help_lists_the_parameters_of_every_registered_loss(monkeypatch, capsys):
    """Read from the registry when the parser is built: a loss added to it lists itself."""

    class Tempered(losses.CrossEntropy):
        name = "tempered"

        def __init__(self, temperature: float = 1.5, shift: float = 0.0) -> None:
            super().__init__()

    monkeypatch.setitem(losses.LOSSES, "tempered", Tempered)
    for command in ("solve", "train", "theory", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # the help's line breaks undone
        assert "--loss-param NAME=VALUE" in text, command
        for expected in ("ce: form='soft'", "label_smoothing: eps=0.1", "focal: gamma=2.0",
                         "tempered: temperature=1.5, shift=0.0"):
            assert expected in text, (command, expected)
