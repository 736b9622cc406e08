"""Calibration: Tracker success per env and source rate over the 100 test envs.

The benchmark's defining property (docs/design.md section 3): following the env's own expert
trajectory downsampled to the source rate and linearly interpolated to 20 Hz must succeed
almost always from 20 Hz samples and almost never from 2.5 Hz samples. This script runs the
Tracker through the regular evaluator, writes the result records to ``results/``, regenerates
``leaderboard.md``, and checks: >= 95 % at 20 Hz, <= 15 % at 2.5 Hz, non-decreasing with rate.

    python benchmarks/calibration.py                  # all envs, 100 test envs each
    python benchmarks/calibration.py --env ButtonTouch --episodes 30 --no-write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

import policies
from cfbench import paths
from cfbench.envs import ENV_IDS
from cfbench.evaluate import evaluate
from cfbench.leaderboard import regenerate
from cfbench.protocol import SOURCE_RATES as RATES
from cfbench.protocol import TARGET_HZ, TEST_SEEDS, seed_list
from cfbench.runner import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", nargs="+", default=list(ENV_IDS), choices=list(ENV_IDS))
    parser.add_argument("--episodes", type=int, default=TEST_SEEDS[1] - TEST_SEEDS[0])
    parser.add_argument("--no-write", action="store_true", help="measure only: write no records")
    parser.add_argument("--results-dir", type=Path, default=paths.results_dir(), help="the published results")
    args = parser.parse_args()

    table, ok = {}, True
    start = time.perf_counter()
    for env in args.env:
        success = {}
        for hz in RATES:
            if args.no_write:
                seeds = seed_list(TEST_SEEDS)[: args.episodes]
                metrics = evaluate(policies.make("tracker"), env, hz, seeds=seeds, progress=False)["metrics"]
            else:
                record, _ = run("tracker", env, (hz,), episodes=args.episodes, results_dir=args.results_dir,
                                command=["python", "benchmarks/calibration.py", *sys.argv[1:]], progress=False)
                metrics = record["metrics"]
            success[hz] = 100 * metrics["success_rate"]
        rates = [success[hz] for hz in RATES]
        checks = {
            ">=95% at 20 Hz": success[20.0] >= 95,
            "<=15% at 2.5 Hz": success[2.5] <= 15,
            "non-decreasing": all(a <= b for a, b in zip(rates, rates[1:])),
        }
        ok &= all(checks.values())
        table[env] = {**{f"{hz:g} Hz": f"{success[hz]:.0f} %" for hz in RATES},
                      "check": "PASS" if all(checks.values())
                      else "FAIL: " + ", ".join(k for k, v in checks.items() if not v)}
    print(f"Tracker success over {args.episodes} test envs (seeds from {TEST_SEEDS[0]}), target {TARGET_HZ:g} Hz:")
    print(pd.DataFrame(table).T.to_string())
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if not args.no_write:
        print(f"wrote {regenerate(args.results_dir, args.results_dir.parent / 'leaderboard.md')}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
