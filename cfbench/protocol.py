"""The benchmark's vocabulary: which seeds are for what, how many demos, which rates.

Every module that needs one of these numbers reads it here (docs/design.md section 5), so the
protocol is changed in one place. Naming: a tuple of sample rates is ``rates`` (a mixed-rate
dataset has several), one rate is ``*_hz``; seed ranges are ``(start, end)`` with ``end``
exclusive.
"""

from __future__ import annotations

import re

#: the protocol version records belong to. 1: past actions before the first sample hold the
#: start pose; mixed-rate demos run at the most frequent step; training seeds in the record;
#: open-loop fidelity metrics. 2: execution is part of the protocol: every fixed-rate policy and
#: the Tracker join their actions with a curve chosen on the validation seeds (or straight lines),
#: `tracker (smooth)` beside the straight-line indicator (docs/design.md section 5). Records of
#: older protocols live in results/archive/protocol<N>/ and leave the leaderboard.
PROTOCOL = 2
#: the protocol that cuts demos into training windows, in checkpoint-cache keys: protocol 2
#: changed only how trained models are executed, so models trained under 1 stay valid
TRAINING_PROTOCOL = 1
#: demos are recorded from the expert on seeds 0, 1, ... (a seed the expert fails is skipped)
TRAIN_SEED_START = 0
#: demos per dataset: training seeds 0-89
N_DEMOS = 90
#: checkpoint selection and every setting we choose are decided on these envs only
VALIDATION_SEEDS = (10000, 10050)
#: results are reported on these envs only
TEST_SEEDS = (20000, 20100)
#: the fine control rate every policy is judged at
TARGET_HZ = 20.0
#: the demo rates of the benchmark grid (paper Fig. 8)
SOURCE_RATES = (2.5, 5.0, 10.0, 20.0)
#: the rates a dataset or a run may use: a demo needs samples in a 8-10 s episode, and no rate
#: can be finer than the physics (200 Hz)
MIN_RATE_HZ, MAX_RATE_HZ = 0.5, 200.0
#: policy and variant names: they become file names and table cells, so no "/", "|" or spaces
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


def seed_list(seed_range: tuple[int, int]) -> list[int]:
    """(start, end) -> [start, ..., end - 1]."""
    return list(range(*seed_range))


def parse_rates(text: str) -> tuple[float, ...]:
    """'2.5' -> (2.5,); '2.5+5' (or '5+2.5') -> (2.5, 5.0): a mixed-rate dataset."""
    try:
        rates = tuple(float(part) for part in str(text).split("+"))
    except ValueError:
        raise ValueError(f"bad sample rate {text!r}: use a number like 2.5 or a mix like 2.5+5") from None
    if any(not MIN_RATE_HZ <= hz <= MAX_RATE_HZ for hz in rates):  # NaN fails too
        raise ValueError(f"sample rates must lie between {MIN_RATE_HZ:g} and {MAX_RATE_HZ:g} Hz, got {text!r}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"bad sample rates {text!r}: a mixed-rate dataset names each rate once")
    return tuple(sorted(rates))  # 5+2.5 is the experiment 2.5+5


def check_name(name: str, what: str) -> str:
    """A policy or variant name that is safe as a file-name part and a table cell."""
    if not re.match(NAME_PATTERN, name):
        raise ValueError(f"bad {what} name {name!r}: use letters, digits and . _ + - (up to 64, not starting "
                         "with a symbol)")
    return name


def rates_label(rates) -> str:
    """(2.5, 5.0) -> '2.5+5': the canonical label of a (mixed) source rate, in tables and file names."""
    return "+".join(f"{hz:g}" for hz in rates)


def mix_seed(seed: int, salt: int) -> int:
    """One seed from a base seed and a salt (an episode seed, a round): distinct salts give
    unrelated generator streams for the same base seed."""
    return seed * 1_000_003 + salt
