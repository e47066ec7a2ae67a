"""The ``ufm`` command: parses arguments and delegates to one module per subcommand.

Each module listed in :data:`COMMAND_MODULES` has ``register(subparsers)``, which adds its
parser and sets ``handler`` to a function taking the parsed arguments. A bad input
(ValueError) or an OS error while reading or writing files (a read-only folder, a full disk)
ends the command with one line ``ufm COMMAND: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings


COMMAND_MODULES = (
    "ufm.commands.theory",
    "ufm.commands.solve",
    "ufm.commands.train",
    "ufm.commands.compare",
    "ufm.commands.reproduce",
    "ufm.commands.figures",
    "ufm.commands.sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufm",
        description="Neural collapse under mixup: theory, certificate, solver, networks, figures.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the subcommands' modules are imported
        print("ufm: interrupted", file=sys.stderr)
        return 130
    try:
        with warnings.catch_warnings():
            # a job's warnings (a user matter, such as an impossible ETF) read as one line
            warnings.showwarning = lambda message, *_, **__: print(
                f"ufm {args.command}: warning: {message}", file=sys.stderr)
            return int(args.handler(args) or 0)
    except ValueError as error:
        print(f"ufm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only folder, a full disk, no permission: one line too
        from .io import os_error_text  # here: ufm.io imports torch, which start-up avoids

        print(f"ufm {args.command}: error: {os_error_text(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ufm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
