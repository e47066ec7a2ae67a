"""One module per ``ufm`` subcommand, each with ``register(subparsers)`` (see :mod:`ufm.cli`).

A subcommand that runs a job builds its parser with :func:`add_job_parser` and its
configuration with :func:`job_config`: every field of the job's configuration dataclass is a
flag, ``--config FILE.toml`` gives a file of fields, and flags override the file.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from ..config import add_config_arguments, load_config, overrides_from_args


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that states a flag's default once: appended where argparse has a real default,
    left out where the help already says it or the flag defaults to "not given" (None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def add_job_parser(
    subparsers,
    name: str,
    config_cls: type,
    handler: Callable[[argparse.Namespace], int],
    own_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``: ``--config``, its own flags, one flag per field.

    ``own_arguments(parser)`` adds the subcommand's own flags (``--out`` and the like), listed
    before the fields of ``config_cls``; ``parser_kwargs`` go to ``add_parser`` (``help``,
    ``description``, ...).
    """
    parser_kwargs.setdefault("formatter_class", HelpFormatter)
    parser = subparsers.add_parser(name, **parser_kwargs)
    parser.add_argument("--config", help=f"TOML file with {config_cls.__name__} fields")
    if own_arguments is not None:
        own_arguments(parser)
    add_config_arguments(parser, config_cls)
    parser.set_defaults(handler=handler)
    return parser


def job_config(args: argparse.Namespace, config_cls: type, preset: dict | None = None):
    """``config_cls`` from the ``--config`` file, then ``preset``, then explicit flags."""
    overrides = {**(preset or {}), **overrides_from_args(args, config_cls)}
    return load_config(config_cls, args.config, overrides)


def summary_text(value) -> str:
    """A summary value as a command prints it: numbers to 6 digits, "-" for none or NaN,
    anything else (a verdict, a status) as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, ".6g")
    return str(value)
