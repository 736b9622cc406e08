"""Calibration: both indicators' success per env and source rate over the 100 test envs.

The benchmark's defining property (docs/design.md section 3): following the env's own expert
trajectory downsampled to the source rate and linearly interpolated to 20 Hz (``tracker``, the
paper's indicator) must succeed almost always from 20 Hz samples and almost never from 2.5 Hz
samples; checked: >= 95 % at 20 Hz, <= 15 % at 2.5 Hz, non-decreasing with rate. The smooth
indicator (``tracker (smooth)``: the curve the validation seeds chose per env and rate through
the same samples) is the bar a coarse-to-fine learner has to clear; checked: never below the
straight lines by more than the noise of 100 episodes (5 points), >= 95 % at 20 Hz. This
script runs both through the regular evaluator, writes the result records to ``results/`` and
regenerates ``leaderboard.md``.

    python benchmarks/calibration.py                  # all envs, 100 test envs each
    python benchmarks/calibration.py --env ButtonTouch --episodes 30 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import pandas as pd

from cfbench import paths
from cfbench.app.run import run
from cfbench.app.spec import RunSpec
from cfbench.envs import ENV_IDS
from cfbench.evaluate import evaluate
from cfbench.leaderboard.regenerate import regenerate
from cfbench.protocol import SOURCE_RATES as RATES
from cfbench.protocol import TARGET_HZ, TEST_SEEDS, seed_list
from cfbench.results import format_label

#: (policy, variant) of the two indicators
INDICATORS = (("tracker", ""), ("tracker", "smooth"))


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
        for (policy, variant), hz in itertools.product(INDICATORS, RATES):
            spec = RunSpec(policy, env, (hz,), variant, episodes=args.episodes)
            if args.no_write:
                seeds = seed_list(TEST_SEEDS)[: args.episodes]
                metrics = evaluate(spec.make_policy(), env, hz, seeds=seeds, progress=False)["metrics"]
            else:
                record, _ = run(spec, results_dir=args.results_dir,
                                command=["python", "benchmarks/calibration.py", *sys.argv[1:]], progress=False)
                metrics = record["metrics"]
            success[variant, hz] = 100 * metrics["success_rate"]
        straight = [success["", hz] for hz in RATES]
        checks = {
            ">=95% at 20 Hz": success["", 20.0] >= 95 and success["smooth", 20.0] >= 95,
            "<=15% at 2.5 Hz (straight)": success["", 2.5] <= 15,
            "non-decreasing (straight)": all(a <= b for a, b in zip(straight, straight[1:])),
            "smooth >= straight - 5": all(success["smooth", hz] >= success["", hz] - 5 for hz in RATES),
        }
        ok &= all(checks.values())
        for variant in ("", "smooth"):
            name = f"{env} {format_label('tracker', variant)}"
            table[name] = {f"{hz:g} Hz": f"{success[variant, hz]:.0f} %" for hz in RATES}
            if variant == "smooth":
                curves = [RunSpec("tracker", env, (hz,), "smooth").make_policy().config.interpolation for hz in RATES]
                table[name]["curve (validation)"] = " / ".join(curves)
        table[f"{env} tracker (smooth)"]["check"] = ("PASS" if all(checks.values())
                                                     else "FAIL: " + ", ".join(k for k, v in checks.items() if not v))
    print(f"Indicator success over {args.episodes} test envs (seeds from {TEST_SEEDS[0]}), target {TARGET_HZ:g} Hz:")
    print(pd.DataFrame(table).T.fillna("").to_string())
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if not args.no_write:
        print(f"wrote {regenerate(args.results_dir)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
