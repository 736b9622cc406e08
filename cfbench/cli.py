"""What every cfbench command does with a mistake: one line naming it, exit code 2.

A bad config value, a corrupt file, a malformed result or an unknown name is the user's to fix,
not a bug: the commands print ``<prog>: error: <what and what to do>`` instead of a traceback
(``--debug`` shows the traceback). Ctrl-C prints one line saying what was kept (exit 130).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

#: the errors the project raises for bad input (RecordError, CheckpointError and the config and
#: rate checks are ValueErrors; missing or unreadable files and a full disk are OSErrors)
USER_ERRORS = (ValueError, OSError)


class Interrupted(Exception):
    """Ctrl-C, with the one line that says where the work will resume."""


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help and one-line errors (no usage block above them)."""

    def __init__(self, prog: str, description: str):
        super().__init__(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        self.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def command(prog: str) -> Callable:
    """Decorate a command's ``main(argv)``: user errors and Ctrl-C become one line."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None):
            argv = list(sys.argv[1:] if argv is None else argv)
            try:
                return main(argv)
            except (KeyboardInterrupt, Interrupted) as stop:
                if "--debug" in argv:
                    raise
                print(f"{prog}: interrupted{': ' + str(stop) if str(stop) else ''}", file=sys.stderr)
                raise SystemExit(130) from None
            except USER_ERRORS as error:
                if "--debug" in argv:
                    raise
                print(f"{prog}: error: {error}", file=sys.stderr)
                raise SystemExit(2) from None

        return guarded

    return wrap


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: all cores by default (small ops suffer from oversubscription)."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
