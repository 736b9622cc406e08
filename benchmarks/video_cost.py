"""What ``cfbench-eval --videos N`` costs: the same 100-episode evaluation with and without GIFs,
side by side in one run; prints both wall times and their ratio.

The policy is the Tracker (no inference), so the ratio is an upper bound for a learned policy,
whose evaluation spends more time acting and the same time filming. Two rates: from 2.5 Hz the
Tracker fails every episode (2N short episodes filmed), from 20 Hz it never fails (N long
ones). Each mode runs ``--repeats`` times after a warm-up and keeps its best
(``timing.best_ms``).

    python benchmarks/video_cost.py [--env PassagePassing] [--source-hz 2.5 20] [--videos 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timing import best_ms

from cfbench.app.run import run
from cfbench.app.spec import RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="PassagePassing")
    parser.add_argument("--source-hz", type=float, nargs="+", default=[2.5, 20.0])
    parser.add_argument("--videos", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for hz in args.source_hz:
        with tempfile.TemporaryDirectory() as scratch:
            def evaluation(videos: int, hz: float = hz):
                return lambda: run(RunSpec("tracker", args.env, (hz,), episodes=args.episodes), videos=videos,
                                   results_dir=Path(scratch) / f"videos{videos}", progress=False)

            plain = best_ms(evaluation(0), args.repeats) / 1000
            filmed = best_ms(evaluation(args.videos), args.repeats) / 1000
            record, _ = evaluation(args.videos)()
            folder = Path(scratch) / f"videos{args.videos}"
            kilobytes = sum((folder / video).stat().st_size for video in record["videos"]) / 1024
        success = 100 * record["metrics"]["success_rate"]
        print(f"{args.env} from {hz:g} Hz, {args.episodes} episodes (Tracker, {success:.0f} % success): "
              f"without videos {plain:.1f} s, with --videos {args.videos} {filmed:.1f} s "
              f"({len(record['videos'])} GIFs, {kilobytes:.0f} kB): ratio {filmed / plain:.2f}x, "
              f"+{filmed - plain:.1f} s")


if __name__ == "__main__":
    main()
