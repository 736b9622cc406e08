"""The benchmarks' one timing rule: the best of ``repeats`` runs after one warm-up, the least
disturbed measurement on a machine where something else may take a core for a moment."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:])
