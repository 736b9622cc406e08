"""The per-env plots: success against source rate, one line per policy label, with the
95 % intervals as error bars (paper Fig. 8); only ranked single-rate runs are drawn."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from cfbench.envs import short_name
from cfbench.leaderboard.standings import PRIVILEGED_MARK, cells, label_order, ranked, success_summary
from cfbench.protocol import SOURCE_RATES

#: the folder of a results folder that holds its plots, one ``<Env>.png`` per env
PLOTS = "plots"
#: a policy's variants in its plot colour: line style and marker, in label order
VARIANT_LINES = ("-", "--", ":", "-.")
VARIANT_MARKERS = ("o", "s", "^", "D", "v")


def line_styles(policy_of: dict[str, str]) -> dict[str, dict]:
    """Matplotlib styles per plotted label (``policy_of``: label -> policy): one colour per
    policy, its variants told apart by line and marker (more lines than a colour cycle has would
    otherwise repeat colours across policies); the privileged reference grey and dashed."""
    from matplotlib import colormaps

    learners = sorted({policy for label, policy in policy_of.items() if PRIVILEGED_MARK not in label})
    colours = {policy: colormaps["tab10"](i % 10) for i, policy in enumerate(learners)}
    first_variant = {policy: i // 10 for i, policy in enumerate(learners)}  # past 10 colours: other lines
    styles, drawn = {}, defaultdict(int)
    for label in sorted(policy_of):
        if PRIVILEGED_MARK in label:
            styles[label] = dict(color="0.4", linestyle="--", marker="o")
            continue
        k = first_variant[policy_of[label]] + drawn[policy_of[label]]
        drawn[policy_of[label]] += 1
        styles[label] = dict(color=colours[policy_of[label]], linestyle=VARIANT_LINES[k % len(VARIANT_LINES)],
                             marker=VARIANT_MARKERS[k % len(VARIANT_MARKERS)])
    return styles


def plot_env(records: list[dict], env_id: str) -> bytes:
    """PNG bytes: success % against source rate, one line per policy (single-rate runs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, policy_of = defaultdict(list), {}
    env_records = [r for r in filter(ranked, records) if r["env_id"] == env_id]
    target_rates = sorted({r["target_hz"] for r in env_records})
    for (label, _), group in cells([r for r in env_records if len(r["source_hz"]) == 1]).items():
        mean, low, high, _ = success_summary(group)
        policy_of[label] = group[0]["policy"]
        series[label].append((group[0]["source_hz"][0], 100 * mean, 100 * max(0.0, mean - low),
                              100 * max(0.0, high - mean)))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    styles = line_styles(policy_of)
    for label in sorted(series, key=label_order):
        points = np.array(sorted(series[label]))
        ax.errorbar(points[:, 0], points[:, 1], yerr=points[:, 2:].T, capsize=3, label=label, **styles[label])
    rates = sorted({point[0] for points in series.values() for point in points}) or list(SOURCE_RATES)
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_ylim(-3, 103)
    ax.set_xlabel("source (demonstration) rate [Hz]")
    ax.set_ylabel("success [%]")
    target = f" (target {', '.join(f'{hz:g}' for hz in target_rates)} Hz)" if target_rates else ""
    ax.set_title(short_name(env_id) + target)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
