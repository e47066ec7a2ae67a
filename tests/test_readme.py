"""The README's quick start is what CI runs, and its commands exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_two_commands_and_ci_runs_the_test_command():
    commands = _quick_start_commands()
    assert len(commands) == 2
    main_job, test_command = commands
    assert "pytest" in test_command and "ufm " in main_job
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_readme_cli_flags_exist():
    from ufm.cli import build_parser

    text = (ROOT / "README.md").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command, flags in re.findall(r"`ufm (\w+) ([^`]*)`", text):
        assert command in subparsers, command
        known = {s for a in subparsers[command]._actions for s in a.option_strings}
        for flag in re.findall(r"--[A-Za-z][A-Za-z-]*", flags):
            assert flag in known, f"README mentions ufm {command} {flag}, which does not exist"
