"""The `synthloop` command: one thin subcommand per stage, over library functions.

Each subcommand lives in its own module under `synthloop.cli` with a
`register(subparsers)` function that adds its parser and sets `func` (a callable taking the
parsed namespace and returning an exit code). See `synthloop.errors` for the exit-code table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from synthloop import __version__
from synthloop.errors import EXIT_USAGE, SynthloopError

# Command name -> the module that registers it (each defines register(subparsers)).
# Only the module of the command being run is imported, so start-up stays fast; `--help`
# imports them all to list every command.
COMMANDS: dict[str, str] = {
    "schema": "synthloop.cli._schema",
    "generate": "synthloop.cli._generate",
    "evalset": "synthloop.cli._evalset",
    "ingest": "synthloop.cli._ingest",
    "replay": "synthloop.cli._replay",
    "simulate": "synthloop.cli._simulate",
    "score": "synthloop.cli._score",
    "compare": "synthloop.cli._compare",
    "gate": "synthloop.cli._compare",
    "run": "synthloop.cli._run",
    "demo": "synthloop.cli._run",
    "feedback": "synthloop.cli._feedback",
}
COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"synthloop: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `command`, only that command's module is imported."""
    parser = _Parser(
        prog="synthloop",
        description="Synthetic interactions and feedback, replay against model versions, "
        "paired-statistics release gates.",
        epilog="exit codes: 0 success/gate passed, 1 regression, 2 usage or input error, "
        "3 inconclusive (too few cases), 4 privacy gate failed",
    )
    parser.add_argument("--version", action="version", version=f"synthloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = func(args)
    except SynthloopError as e:
        print(f"synthloop: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("synthloop: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # a path the user gave cannot be read or written (a file where a folder is needed,
        # a folder where a file is needed, no permission, disk full): their input, not a
        # bug, and an uncaught exception would exit 1, which means "regression" to CI
        if e.filename is None:
            raise
        print(f"synthloop: error: {_os_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    return int(code or 0)


def _os_error_line(e: OSError) -> str:
    # os.replace(tmp, dest) reports both paths; the destination is the one the user chose
    path = e.filename2 if e.filename2 is not None else e.filename
    reason = e.strerror or type(e).__name__
    return f"{path}: {reason.lower()} (check the path: outputs need a new or " \
           f"writable location, inputs an existing file or folder)"


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entrypoint()
