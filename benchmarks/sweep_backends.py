"""cfbench-sweep on this machine: the same 4-cell sweep with 1 job x all threads, with jobs x 1
thread, and with the Ray backend, side by side in one run; prints the wall times and ratios.

Every mode trains from scratch in its own checkpoints folder (the demos are generated once
before the clock starts and shared). The cells are DP-T on PassagePassing at the four source
rates with a short training budget: long enough that training, not start-up, dominates.

    python benchmarks/sweep_backends.py                     # 2 cores: --jobs 1 --threads 2 vs 2 x 1
    python benchmarks/sweep_backends.py --train-steps 500 --no-ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cfbench.datasets import load_demos
from cfbench.protocol import SOURCE_RATES


def sweep(home: Path, demos: Path, extra: list[str], train_steps: int) -> float:
    (home / "demos").symlink_to(demos, target_is_directory=True)
    command = ["cfbench-sweep", "--policy", "dp-t", "--env", "PassagePassing", "--source-hz",
               *[f"{hz:g}" for hz in SOURCE_RATES], "--set", f"train_steps={train_steps}",
               f"eval_every={train_steps}", "--val-episodes", "10", "--results-dir", str(home / "results"),
               "--no-leaderboard", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "CFBENCH_HOME": str(home)})
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    modes = {f"local --jobs 1 --threads {cores}": ["--jobs", "1", "--threads", str(cores)],
             f"local --jobs {cores} --threads 1": ["--jobs", str(cores), "--threads", "1"]}
    if not args.no_ray:
        modes["ray --threads 1"] = ["--backend", "ray", "--threads", "1"]
    root = Path(tempfile.mkdtemp(prefix="cfbench-sweep-bench-"))
    try:
        for hz in SOURCE_RATES:  # generated once, outside the timing
            load_demos("PassagePassing", (hz,), demos_dir=root / "demos")
        seconds = {}
        for k, (name, extra) in enumerate(modes.items()):
            home = root / f"home{k}"
            home.mkdir()
            seconds[name] = sweep(home, root / "demos", extra, args.train_steps)
        baseline = next(iter(seconds.values()))
        print(f"\n4 cells (DP-T, PassagePassing 2.5/5/10/20 Hz, {args.train_steps} training steps), {cores} cores:")
        for name, value in seconds.items():
            print(f"  {name:<28} {value:7.1f} s   throughput x{baseline / value:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
