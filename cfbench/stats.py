"""Error bars and paired tests for success rates (numpy only, deterministic).

- one training seed: the Wilson score interval on the pooled test episodes;
- several training seeds: a two-level bootstrap (resample the seeds, then each chosen seed's
  episodes), which carries the spread between training runs as well as the finite test set,
  never narrower than the Wilson interval of the pooled episodes (resampling all-fail or
  all-succeed outcomes has no spread at all: 0 of 300 is not "exactly 0 %");
- two policies on the same test episodes: McNemar's exact test on the discordant pairs.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 4000


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends (the formula leaves rounding dust there: 3e-18 above 0 for 0 of 100)
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def success_interval(per_seed: list[np.ndarray]) -> tuple[float, float, float]:
    """Mean success over training seeds and its 95 % interval; ``per_seed`` holds each seed's
    per-episode successes (0/1)."""
    means = [float(np.mean(outcomes)) for outcomes in per_seed]
    if len(per_seed) == 1:
        low, high = wilson(int(np.sum(per_seed[0])), len(per_seed[0]))
        return means[0], low, high
    rng = np.random.default_rng(0)  # the same table every time it is drawn
    k, draws = len(per_seed), BOOTSTRAP_SAMPLES
    seeds = rng.integers(k, size=(draws, k))  # level 1: which training seeds each draw takes
    # level 2: for every slot of a draw, each seed's episodes resampled: (slot, seed, draw) means
    resampled = np.stack([np.stack([np.asarray(o, float)[rng.integers(len(o), size=(draws, len(o)))].mean(axis=1)
                                    for o in per_seed]) for _ in range(k)])
    estimates = resampled[np.arange(k)[None, :], seeds, np.arange(draws)[:, None]].mean(axis=1)
    low, high = np.percentile(estimates, [2.5, 97.5])
    pooled_low, pooled_high = wilson(int(sum(np.sum(o) for o in per_seed)), sum(len(o) for o in per_seed))
    return float(np.mean(means)), float(min(low, pooled_low)), float(max(high, pooled_high))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (A succeeds where B fails, and
    the other way round): a binomial test of only_a against Binomial(only_a + only_b, 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
