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
import time
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
    """Torch intra-op threads: by default the cores nothing else is busy on when the command
    starts. OpenMP threads wait for each other at every parallel region, so a thread whose core
    another process holds stalls the rest: DP-T training at 2 threads beside one busy process ran
    7x slower than at 1 thread, while alone 2 threads were 1.4x faster (benchmarks/contention.py).
    The count a run used is in its record (``provenance.torch_threads``): actions round
    differently at another count. An install without the policy zoo has no torch, and nothing to set."""
    try:
        import torch
    except ModuleNotFoundError:
        return threads or 1
    threads = threads or free_cores()
    torch.set_num_threads(threads)
    return threads


def free_cores(sample_seconds: float = 0.25) -> int:
    """Cores this process may use that nothing else is busy on, at least one: the machine's idle
    share over a short sample (Linux's /proc/stat; elsewhere the 1-minute load average)."""
    usable = len(os.sched_getaffinity(0))
    try:
        idle = idle_cores(sample_seconds)
    except OSError:
        idle = (os.cpu_count() or usable) - os.getloadavg()[0]
    return max(1, min(usable, round(idle)))


def idle_cores(sample_seconds: float) -> float:
    """How many of the machine's cores were idle over ``sample_seconds`` (Linux)."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]  # user .. steal
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    idle, total = times()
    time.sleep(sample_seconds)
    idle_after, total_after = times()
    return (os.cpu_count() or 1) * (idle_after - idle) / max(1, total_after - total)
