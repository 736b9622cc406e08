"""Training speed alone and beside a busy process, for each thread setting: the measurement
behind cfbench's default thread count (``cfbench.cli.set_threads``) and the README's advice.

OpenMP threads wait for each other at every parallel region: a thread whose core another
process holds stalls the others (and spinning ones hold a core the other process needs), so a
2-thread training beside one busy process on 2 cores collapses; waiting passively or spinning
less only trades that for a slower training alone. Each setting trains DP-T (the CPU profile)
for ``--steps`` optimiser steps on PassagePassing 2.5 Hz demo windows in a fresh process (the
OpenMP variables are read when torch loads), alone and beside a busy single-thread process (a
Python loop), ``--rounds`` times alternating; the best time of each is kept and the ratios are
printed side by side.

    python benchmarks/contention.py [--steps 150] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: setting -> (torch threads or None for cfbench's default, the OpenMP variables it runs with:
#: None for cfbench's own choice, {} for the library's defaults)
SETTINGS = {
    "2 threads, library wait (before)": (2, {}),
    "2 threads, passive wait": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, spin 10k": (2, {"GOMP_SPINCOUNT": "10000"}),
    "1 thread": (1, {}),
    "cfbench default (free cores)": (None, None),
}
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def child(threads: int | None, variables: dict | None, steps: int) -> float:
    """Seconds for ``steps`` optimiser steps, in this (fresh) process."""
    if variables is not None:
        os.environ.update(variables)
        import torch  # noqa: F401  (loaded before cfbench can set its own choice)
    import policies
    from cfbench.cli import set_threads
    from cfbench.datasets import load_demos

    set_threads(threads)
    policy = policies.make("dp-t", train_steps=steps, eval_every=steps)
    tensors = policy.setup(load_demos("PassagePassing", (2.5,), n=90))
    policy.optimise(tensors, 5, progress=False)  # warm-up
    start = time.perf_counter()
    policy.optimise(tensors, steps, progress=False)
    return time.perf_counter() - start


def timed(setting: str, steps: int, busy: bool) -> float:
    threads, variables = SETTINGS[setting]
    environment = {key: value for key, value in os.environ.items() if key not in OPENMP_VARIABLES}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps([threads, variables, steps])],
                              env=environment, check=True, capture_output=True, text=True)
    finally:
        if hog:
            hog.kill()
            hog.wait()
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(*json.loads(args.child)))
        return
    import pandas as pd

    best: dict[tuple[str, bool], float] = {}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            for busy in (False, True):
                seconds = timed(setting, args.steps, busy)
                best[setting, busy] = min(seconds, best.get((setting, busy), float("inf")))
    fastest_alone = min(best[setting, False] for setting in SETTINGS)
    rows = [{"setting": setting, "alone s": round(best[setting, False], 1), "beside a busy process s":
             round(best[setting, True], 1), "alone / fastest alone": f"{best[setting, False] / fastest_alone:.2f}x",
             "busy / alone": f"{best[setting, True] / best[setting, False]:.2f}x"} for setting in SETTINGS]
    print(f"DP-T, {args.steps} optimiser steps on PassagePassing 2.5 Hz demos, {len(os.sched_getaffinity(0))} cores, "
          f"best of {args.rounds} alternating rounds")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
