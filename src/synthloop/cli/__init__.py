"""The `synthloop` command: one thin subcommand per stage, over library functions.

Each subcommand lives in its own module under `synthloop.cli` with a
`register(subparsers)` function that adds its parser and sets `func` (a callable taking the
parsed namespace and returning an exit code). See `synthloop.errors` for the exit-code table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

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
        "3 inconclusive (too few cases), 4 privacy gate failed; stopped by Ctrl-C 130, "
        "by SIGTERM 143",
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
        if _terminated:
            print("synthloop: terminated (SIGTERM); what was finished is kept", file=sys.stderr)
            return 128 + signal.SIGTERM
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


class _Stdout:
    """sys.stdout that drops output once its reader has gone (`synthloop ... | head`).

    Without it, the first write after the reader exits raises BrokenPipeError: a traceback,
    and the command stops halfway (a gate's exit code lost). With it, the command finishes
    its work and returns its own exit code; only the unread output is discarded.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        try:  # point the descriptor at /dev/null, so buffered bytes flush harmlessly at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill PID`) takes the Ctrl-C path: the SIGINT handler
    runs (asyncio's cancels the main task, so a replay flushes its cache and marks its run
    `interrupted`; atomic writes clean up), then `main` exits 143."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    handler(signal.SIGINT, frame)  # raises KeyboardInterrupt, or cancels asyncio's task


def entrypoint() -> None:
    # Only where Ctrl-C itself works: a process that ignores SIGINT (a background job of a
    # non-interactive shell) keeps the default SIGTERM, which ends it at once (a replay
    # still resumes from its log).
    if (signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            and callable(signal.getsignal(signal.SIGINT))):
        signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.stdout is not None and not isinstance(sys.stdout, _Stdout):
        sys.stdout = _Stdout(sys.stdout)  # type: ignore[assignment]
    code = main()
    if sys.stdout is not None:
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entrypoint()
