"""Error bars and paired tests for success rates (numpy only, deterministic).

- one training seed: the Wilson score interval on the pooled test episodes;
- several training seeds: a two-level bootstrap (resample the seeds, then each chosen seed's
  episodes), which carries the spread between training runs as well as the finite test set,
  never narrower than the Wilson interval of the pooled episodes (resampling all-fail or
  all-succeed outcomes has no spread at all: 0 of 300 is not "exactly 0 %");
- two policies on the same test episodes: McNemar's exact test on the discordant pairs of one
  training seed; over several training seeds, a paired two-level bootstrap (resample the seeds,
  then the test episodes, the same episodes for both sides), so the spread between training runs
  counts and the pairs of different seeds are not taken for independent evidence.
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


def paired_difference(first: list[np.ndarray], second: list[np.ndarray]) -> dict:
    """The success difference first - second on the same test episodes, per training seed (each
    list holds one 0/1 array per seed, the same episodes in the same order on both sides; an
    untrained side repeats its one array). Returns the mean difference over the seeds, its 95 %
    interval, a two-sided p-value and the test's name: exact McNemar for one seed, a paired
    two-level bootstrap (seeds, then episodes) for several."""
    if len(first) != len(second) or not first:
        raise ValueError("both sides need the same training seeds, at least one")
    first = [np.asarray(a, float) for a in first]
    second = [np.asarray(b, float) for b in second]
    if any(a.shape != b.shape for a, b in zip(first, second)):
        raise ValueError("both sides need the same test episodes for each training seed")
    differences = [a - b for a, b in zip(first, second)]
    mean = float(np.mean([d.mean() for d in differences]))
    if len(differences) == 1:
        only_first, only_second = int((differences[0] > 0).sum()), int((differences[0] < 0).sum())
        n = len(differences[0])
        # the interval: a bootstrap of the paired episodes (the p-value is exact)
        rng = np.random.default_rng(0)
        draws = differences[0][rng.integers(n, size=(BOOTSTRAP_SAMPLES, n))].mean(axis=1)
        low, high = np.percentile(draws, [2.5, 97.5])
        return {"difference": mean, "low": float(low), "high": float(high),
                "p": mcnemar_exact(only_first, only_second), "test": "exact McNemar"}
    rng = np.random.default_rng(0)
    k, draws = len(differences), BOOTSTRAP_SAMPLES
    seeds = rng.integers(k, size=(draws, k))
    per_seed = np.stack([d[rng.integers(len(d), size=(draws, len(d)))].mean(axis=1) for d in differences])
    estimates = per_seed[seeds, np.arange(draws)[:, None]].mean(axis=1)
    low, high = np.percentile(estimates, [2.5, 97.5])
    # the share of resampled differences on the other side of zero, doubled (ties count half)
    below, ties = float(np.mean(estimates < 0)), float(np.mean(estimates == 0))
    p = min(1.0, 2 * min(below + ties / 2, 1 - below - ties / 2))
    return {"difference": mean, "low": float(low), "high": float(high), "p": max(p, 1 / draws),
            "test": f"paired bootstrap over {k} training seeds, then episodes"}
