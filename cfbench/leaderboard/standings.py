"""Which records are on the leaderboard and what their cells say: one row per policy label,
one column per source rates; success (with the gain over the smooth indicator), fidelity and
compute tables. Only runs over the whole test-seed range are ranked; shorter runs (smoke tests)
are listed apart."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from cfbench.protocol import TEST_SEEDS, rates_label
from cfbench.results import format_label
from cfbench.stats import paired_difference, success_interval

PRIVILEGED_MARK = "†"
#: the smooth indicator (policy, variant): a spline through the test env's own exact samples,
#: the bar a coarse-to-fine learner has to clear; every cell says how far above or below it is
INDICATOR = ("tracker", "smooth")


def row_label(record: dict) -> str:
    """A record's row on the page and line in the plots: its policy label, marked when privileged."""
    label = format_label(record["policy"], record["variant"])
    return label + (f" {PRIVILEGED_MARK}" if record.get("privileged") else "")


def label_order(label: str) -> tuple[bool, str]:
    """Sort key of rows and plot lines: learned policies alphabetically, privileged reference
    policies (the Tracker) last."""
    return PRIVILEGED_MARK in label, label


def ranked(record: dict) -> bool:
    """Whether a record is on the leaderboard: evaluated on every test seed."""
    return tuple(record["provenance"]["test_seeds"]) == TEST_SEEDS


def _sorted_rates(labels) -> list[str]:
    return sorted(labels, key=lambda label: ("+" in label, [float(x) for x in label.split("+")]))


def _sorted_labels(records: list[dict]) -> list[str]:
    return sorted({row_label(r) for r in records}, key=label_order)


def cells(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(row label, rates label) -> that cell's records, one per training seed."""
    by_cell = defaultdict(list)
    for record in sorted(records, key=lambda r: r["train_seed"]):
        by_cell[row_label(record), rates_label(record["source_hz"])].append(record)
    return by_cell


def _table(records: list[dict], cell) -> pd.DataFrame:
    """Rows: policies; columns: source rates; ``cell(records of one cell)`` -> text."""
    rates = _sorted_rates({rates_label(r["source_hz"]) for r in records})
    table = pd.DataFrame(index=_sorted_labels(records), columns=[f"{rate} Hz" for rate in rates], dtype=object)
    for (policy, rate), group in cells(records).items():
        table.loc[policy, f"{rate} Hz"] = cell(group)
    return table.fillna("–")


def success_summary(group: list[dict]) -> tuple[float, float, float, float]:
    """Mean success over the training seeds, its 95 % interval, and the mean collision rate."""
    mean, low, high = success_interval([outcomes(r) for r in group])
    return mean, low, high, float(np.mean([r["metrics"]["collision_rate"] for r in group]))


def success_table(records: list[dict]) -> pd.DataFrame:
    """Cells: 'success % [95 % interval] (collision %) ×training seeds', then, where the smooth
    indicator ran from the same source rates, 'Δ' the gain over it in points and the paired test's p."""
    indicator = {rates_label(r["source_hz"]): r for r in records if (r["policy"], r["variant"]) == INDICATOR}

    def cell(group):
        mean, low, high, collision = success_summary(group)
        text = f"{100 * mean:.0f} [{100 * low:.0f}–{100 * high:.0f}] ({100 * collision:.0f}) ×{len(group)}"
        bar = indicator.get(rates_label(group[0]["source_hz"]))
        if bar is None or (group[0]["policy"], group[0]["variant"]) == INDICATOR:
            return text
        gain = gain_over(group, bar)
        return text + f"; Δ {100 * gain['difference']:+.0f} (p {gain['p']:.2g})"

    return _table(records, cell)


def outcomes(record: dict) -> np.ndarray:
    """Success per test episode, in the record's episode order."""
    return np.array([row["success"] for row in record["episodes"]])


def gain_over(group: list[dict], reference: dict) -> dict:
    """A cell's success minus an untrained reference's (the indicator) on the same test
    episodes, paired per training seed (``cfbench.stats.paired_difference``)."""
    return paired_difference([outcomes(r) for r in group], [outcomes(reference)] * len(group))


def fidelity_table(records: list[dict]) -> pd.DataFrame:
    """Cells: 'waypoint / in-between error / zig-zag' (means over the training seeds, world units)."""

    def mean_of(group, key):
        values = [r["fidelity"][key]["mean"] for r in group if r["fidelity"][key] is not None]
        return np.mean(values) if values else None

    def cell(group):
        waypoint, between, zigzag = (mean_of(group, key) for key in ("waypoint_error", "inbetween_error", "zigzag"))
        return " / ".join("–" if v is None else f"{v:{'+.1f' if i == 2 else '.1f'}}"
                          for i, v in enumerate((waypoint, between, zigzag)))

    return _table(records, cell)


def compute_table(records: list[dict]) -> pd.DataFrame:
    """Per policy: records, and the hours their training and testing took (as each record
    measured it, on whatever machine and threads it names), with the total last."""
    rows = defaultdict(lambda: [0, 0.0, 0.0])
    for record in records:
        row = rows[row_label(record)]
        row[0] += 1
        row[1] += (record["metrics"]["train_wall_s"] or 0.0) / 3600
        row[2] += record["metrics"]["eval_wall_s"] / 3600
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["records", "train h", "test h"])
    table = table.loc[_sorted_labels(records)]
    table.loc["total"] = table.sum()
    table["records"] = table["records"].astype(int)
    return table.round(2)


def repeated_training_hours(records: list[dict]) -> float:
    """Hours of training that more than one record counts: the records of one model (variants that
    only execute it differently load it from the checkpoint cache: one ``run_dir``) each count all
    of its training, and models that differ only in fine-tuning share one pretraining (the phase's
    ``dir``), which each of them includes (all but the longest of such counts are repeats)."""
    models = defaultdict(list)
    for record in records:
        models[(record.get("training") or {}).get("run_dir") or id(record)].append(record)
    counts = defaultdict(list)
    for model, group in models.items():
        counts["model", model] = [record["metrics"]["train_wall_s"] or 0.0 for record in group]
        for phase in (group[0].get("training") or {}).get("phases", []):
            if "dir" in phase:
                counts["pretraining", phase["dir"]].append(phase["train_seconds"])
    return sum(sum(seconds) - max(seconds) for seconds in counts.values()) / 3600
