"""``leaderboard.md`` and the per-env plots, regenerated from ``results/`` and nothing else.

``cfbench-leaderboard`` reads every record (each is validated; a malformed file or two records
of the same experiment stop it with a message naming the files), writes one table per env and
target rate, and a success-vs-source-rate plot per env (paper Fig. 8). Only runs over the whole
test-seed range are ranked and plotted; shorter runs (smoke tests) are listed apart. Output is
deterministic, so regenerating an unchanged ``results/`` changes no file.
``cfbench-leaderboard --submit FILE...`` validates result files and adds them to ``results/``:
all of them, or none when one is bad. The command itself lives in ``cfbench.runner`` (it can
re-run a record's episodes, which needs the zoo; this module does not know it).
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.files import atomic_write_bytes, atomic_write_text, exclusive
from cfbench.protocol import PROTOCOL, SOURCE_RATES, TARGET_HZ, TEST_SEEDS, rates_label
from cfbench.results import (
    RecordError,
    archive_dir,
    read_all,
    read_record,
    read_verified,
    record_filename,
    run_key,
)
from cfbench.stats import paired_difference, success_interval

PLOTS = "plots"
PRIVILEGED_MARK = "†"
#: the smooth indicator (policy, variant): a spline through the test env's own exact samples,
#: the bar a coarse-to-fine learner has to clear; every cell says how far above or below it is
INDICATOR = ("tracker", "smooth")


def _label(record: dict) -> str:
    name = record["policy"] + (f" ({record['variant']})" if record["variant"] else "")
    return name + (f" {PRIVILEGED_MARK}" if record.get("privileged") else "")


def ranked(record: dict) -> bool:
    """Whether a record is on the leaderboard: evaluated on every test seed."""
    return tuple(record["provenance"]["test_seeds"]) == TEST_SEEDS


def _sorted_rates(labels) -> list[str]:
    return sorted(labels, key=lambda label: ("+" in label, [float(x) for x in label.split("+")]))


def _sorted_policies(records: list[dict]) -> list[str]:
    """Learned policies alphabetically, privileged reference policies (the Tracker) last."""
    return sorted({_label(r) for r in records}, key=lambda label: (PRIVILEGED_MARK in label, label))


def _cells(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(policy label, rates label) -> that cell's records, one per training seed."""
    cells = defaultdict(list)
    for record in sorted(records, key=lambda r: r["train_seed"]):
        cells[_label(record), rates_label(record["source_hz"])].append(record)
    return cells


def _table(records: list[dict], cell) -> pd.DataFrame:
    """Rows: policies; columns: source rates; ``cell(records of one cell)`` -> text."""
    rates = _sorted_rates({rates_label(r["source_hz"]) for r in records})
    table = pd.DataFrame(index=_sorted_policies(records), columns=[f"{rate} Hz" for rate in rates], dtype=object)
    for (policy, rate), group in _cells(records).items():
        table.loc[policy, f"{rate} Hz"] = cell(group)
    return table.fillna("–")


def success_summary(group: list[dict]) -> tuple[float, float, float, float]:
    """Mean success over the training seeds, its 95 % interval, and the mean collision rate."""
    mean, low, high = success_interval([np.array([row["success"] for row in r["episodes"]]) for r in group])
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


def _outcomes(record: dict) -> np.ndarray:
    return np.array([row["success"] for row in record["episodes"]])


def gain_over(group: list[dict], reference: dict) -> dict:
    """A cell's success minus an untrained reference's (the indicator) on the same test
    episodes, paired per training seed (``cfbench.stats.paired_difference``)."""
    return paired_difference([_outcomes(r) for r in group], [_outcomes(reference)] * len(group))


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
        row = rows[_label(record)]
        row[0] += 1
        row[1] += (record["metrics"]["train_wall_s"] or 0.0) / 3600
        row[2] += record["metrics"]["eval_wall_s"] / 3600
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["records", "train h", "test h"])
    table = table.loc[_sorted_policies(records)]
    table.loc["total"] = table.sum()
    table["records"] = table["records"].astype(int)
    return table.round(2)


def repeated_pretraining_hours(records: list[dict]) -> float:
    """Hours of training that more than one record counts: runs that differ only in fine-tuning
    share one pretraining (the phase's ``dir``), and each of their records includes its time
    (all but the longest of a shared pretraining's counts are repeats)."""
    counts = defaultdict(list)
    for record in records:
        for phase in (record.get("training") or {}).get("phases", []):
            if "dir" in phase:
                counts[phase["dir"]].append(phase["train_seconds"])
    return sum(sum(seconds) - max(seconds) for seconds in counts.values()) / 3600


def render_markdown(records: list[dict], plots_link: str = f"results/{PLOTS}", protocol: int = PROTOCOL,
                    archive_link: str | None = None, verified: dict[str, dict] | None = None) -> str:
    """The leaderboard page; ``plots_link`` is the plots folder relative to the page,
    ``archive_link`` the previous protocol's page (the paper's straight-line execution) and
    ``verified`` the folder's verifications (``cfbench-leaderboard --verify``)."""
    lines = [
        "# cfbench leaderboard",
        "",
        "Generated by `cfbench-leaderboard` from `results/`; do not edit by hand.",
        f"Protocol v{protocol}. Cells: task success % [95 % interval] (collision %) ×training seeds, over the",
        "test episodes (one seed: Wilson interval; several: a bootstrap over seeds, then episodes); policies are",
        "trained on demos at the source rate and run at the target rate. Fidelity tables: open-loop waypoint /",
        "in-between error / zig-zag against the expert (world units, validation seeds; docs/design.md section 7).",
        f"{PRIVILEGED_MARK} = privileged reference (the Tracker follows the test env's own expert trajectory,",
        "downsampled): the benchmark's difficulty indicator, not a baseline.",
    ]
    if protocol >= 2:
        lines += [
            "Fixed-rate policies run their actions along the curve (and with the actions per prediction) the",
            "validation seeds chose for the cell (`policies/rollout_choices.json`); `tracker` joins the expert's",
            "samples with straight lines (the paper's indicator), `tracker (smooth)` with the smooth curve",
            "validation chose: the bar a coarse-to-fine learner has to clear. Δ: gain over `tracker (smooth)`",
            "from the same source rates, in points, with the paired test's p (exact McNemar for one training",
            "seed; a paired bootstrap over training seeds, then episodes, for several).",
        ]
    if archive_link:
        lines += [f"The paper's protocol (straight lines for every fixed-rate policy): [protocol v{protocol - 1}]"
                  f"({archive_link})."]
    lines.append("")
    by_setting = defaultdict(list)
    for record in filter(ranked, records):
        by_setting[record["env_id"], record["target_hz"]].append(record)
    env_order = {env_id: i for i, env_id in enumerate(ENV_IDS.values())}
    for env_id, target_hz in sorted(by_setting, key=lambda s: (env_order[s[0]], s[1])):
        group = by_setting[(env_id, target_hz)]
        name = short_name(env_id)
        lines += [
            f"## {name}" + ("" if target_hz == TARGET_HZ else f" at {target_hz:g} Hz"),
            "",
            f"Target {target_hz:g} Hz, test seeds {TEST_SEEDS[0]}–{TEST_SEEDS[1] - 1} "
            f"({group[0]['metrics']['episodes']} episodes).",
            "",
            success_table(group).to_markdown(),
            "",
            f"![{name}: success vs source rate]({plots_link}/{name}.png)",
            "",
            f"### {name}: fidelity (waypoint / in-between error / zig-zag)",
            "",
            fidelity_table(group).to_markdown(),
            "",
        ]
    partial = [record for record in records if not ranked(record)]
    if partial:
        lines += ["## Partial runs (not ranked)", "",
                  "Evaluated on part of the test seeds only; not comparable with the tables above.", "",
                  "| record | success % (collision %) | episodes |", "|---|---|---|"]
        for record in sorted(partial, key=record_filename):
            m = record["metrics"]
            lines.append(f"| `{record_filename(record)}` | {100 * m['success_rate']:.0f} "
                         f"({100 * m['collision_rate']:.0f}) | {m['episodes']} |")
        lines.append("")
    ranked_records = list(filter(ranked, records))
    if ranked_records:
        lines += ["## Compute", "", "Wall time each ranked record measured for training and testing (its own machine",
                  "and threads; runs that shared a machine ran side by side, so the sum is more than the",
                  "elapsed time).", "", compute_table(ranked_records).to_markdown(), ""]
        repeated = repeated_pretraining_hours(ranked_records)
        if repeated:
            lines += ["Runs that differ only in fine-tuning share one pretraining, which each of their records",
                      f"counts: {repeated:.2f} h of the train total is such a pretraining counted again.", ""]
    lines += ["## Provenance", "",
              "Verified: the record's test episodes were re-run with the checkpoint it names by SHA-256 and came",
              "out identical (`cfbench-leaderboard --verify RECORD --checkpoint DIR`).", "",
              "| record | commit | command | verified |", "|---|---|---|---|"]
    for record in sorted(records, key=record_filename):
        p = record["provenance"]
        commit = p["git_commit"][:10] + ("+dirty" if p["git_dirty"] else "")
        check = (verified or {}).get(record_filename(record))
        mark = (f"✓ {check['date']}" if check and check.get("weights_sha256") == (record.get("training") or {}).get(
            "weights_sha256") else "")
        lines.append(f"| `{record_filename(record)}` | {commit} | `{p['command'].replace('|', '&#124;')}` | {mark} |")
    return "\n".join(lines) + "\n"


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
    for (label, _), group in _cells([r for r in env_records if len(r["source_hz"]) == 1]).items():
        mean, low, high, _ = success_summary(group)
        policy_of[label] = group[0]["policy"]
        series[label].append((group[0]["source_hz"][0], 100 * mean, 100 * max(0.0, mean - low),
                              100 * max(0.0, high - mean)))
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    styles = line_styles(policy_of)
    for label in sorted(series, key=lambda s: (PRIVILEGED_MARK in s, s)):
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


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_plots(results_dir: Path, records: list[dict]) -> list[Path]:
    """Redraw ``results_dir/plots/<Env>.png`` for every env that has ranked results."""
    written = []
    for env_id in sorted({r["env_id"] for r in filter(ranked, records)}):
        path = Path(results_dir) / PLOTS / f"{short_name(env_id)}.png"
        _write_if_changed(path, plot_env(records, env_id))
        written.append(path)
    return written


def archived_page(results_dir: Path, protocol: int = PROTOCOL) -> Path:
    """Where the previous protocol's records and page are kept."""
    return archive_dir(results_dir, protocol) / "leaderboard.md"


def regenerate(results_dir: Path, output: Path, protocol: int = PROTOCOL) -> Path:
    """Redraw ``output`` and the plots from ``results_dir`` (records of ``protocol``), under the
    folder's lock, so that the last of several runs writing one folder leaves a leaderboard of
    every record; the page links the previous protocol's page where the folder archives one."""
    results_dir, output = Path(results_dir), Path(output)
    read_all(results_dir, protocol=protocol)  # a missing or empty folder is an error, before anything is written
    with exclusive(results_dir):
        records = read_all(results_dir, protocol=protocol)
        _write_if_changed(output, page(records, results_dir, output, protocol).encode())
        write_plots(results_dir, records)
    return output


def page(records: list[dict], results_dir: Path, output: Path, protocol: int = PROTOCOL) -> str:
    """The page ``regenerate`` writes to ``output`` for these records of ``results_dir``."""
    page_dir = Path(output).absolute().parent
    plots_link = Path(os.path.relpath(Path(results_dir) / PLOTS, page_dir)).as_posix()
    archive = archived_page(results_dir, protocol)
    archive_link = Path(os.path.relpath(archive, page_dir)).as_posix() if archive.is_file() else None
    return render_markdown(records, plots_link, protocol, archive_link, read_verified(results_dir))


def submit(files: list[Path], results_dir: Path) -> list[Path]:
    """Validate result files and copy them (with the GIFs they list) into ``results_dir`` under
    their canonical names: all, or (when any is malformed or duplicates an experiment) none."""
    results_dir = Path(results_dir)
    if not files:
        return []
    published = read_all(results_dir, allow_empty=True) if results_dir.is_dir() else []
    existing = {run_key(r): record_filename(r) for r in published}
    incoming = {}
    for path in files:
        record = read_record(path)
        if run_key(record) in existing:
            raise RecordError(f"{path} duplicates an experiment already in {results_dir} "
                              f"({existing[run_key(record)]}); re-run cfbench-eval to replace it instead")
        if run_key(record) in incoming:
            raise RecordError(f"{path} and {incoming[run_key(record)][0]} record the same experiment")
        missing = [video for video in record.get("videos", []) if not (Path(path).parent / video).is_file()]
        if missing:
            raise RecordError(f"{path} lists videos that are not beside it: {', '.join(missing[:3])}")
        linked = [video for video in record.get("videos", []) if _linked(Path(path).parent, video)]
        if linked:
            raise RecordError(f"{path} lists videos that are links, not files: {', '.join(linked[:3])}; "
                              "copy the GIFs themselves beside it")
        incoming[run_key(record)] = (path, record)
    written: list[Path] = []
    with exclusive(results_dir):
        try:
            for path, record in incoming.values():
                for video in record.get("videos", []):  # the GIFs first, so a listed file always exists
                    (results_dir / video).parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(results_dir / video, (Path(path).parent / video).read_bytes())
                    written.append(results_dir / video)
                target = results_dir / record_filename(record)
                atomic_write_text(target, json.dumps(record, indent=1, sort_keys=True) + "\n")
                written.append(target)
        except BaseException:
            for target in written:
                target.unlink(missing_ok=True)
            raise
    return written


def _linked(folder: Path, video: str) -> bool:
    """Whether a listed video, or a folder on its way from the record's folder, is a symbolic
    link (a submission copies only regular files from the record's own video folder)."""
    path = Path(folder)
    for part in Path(video).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def compare(records: list[dict], first: str, second: str, env: str, rates: tuple[float, ...]) -> str:
    """A paired comparison of two policies (``policy`` or ``policy-variant``, e.g.
    ``tracker-smooth``) on the same test episodes, per training seed both have (a privileged
    side, an indicator, pairs with every seed of the other), as a sentence a reader can quote
    (``cfbench.stats.paired_difference``: exact McNemar for one seed, else a paired bootstrap)."""
    env_id = resolve_env(env)

    def by_seed(name: str) -> dict[int, dict]:
        chosen = [r for r in filter(ranked, records) if r["env_id"] == env_id and tuple(r["source_hz"]) == rates
                  and r["policy"] + (f"-{r['variant']}" if r["variant"] else "") == name]
        if not chosen:
            raise RecordError(f"no ranked record of {name!r} on {short_name(env_id)} from {rates_label(rates)} Hz")
        return {r["train_seed"]: r for r in chosen}

    a, b = by_seed(first), by_seed(second)
    untrained = [len(side) == 1 and next(iter(side.values())).get("privileged", False) for side in (a, b)]
    if untrained[0] and not untrained[1]:
        a = dict.fromkeys(b, next(iter(a.values())))
    elif untrained[1] and not untrained[0]:
        b = dict.fromkeys(a, next(iter(b.values())))
    seeds = sorted(a.keys() & b.keys())
    if not seeds:
        raise RecordError(f"{first} and {second} share no training seed on these test episodes")
    pairs = [(a[s], b[s]) for s in seeds]
    if any([row["seed"] for row in x["episodes"]] != [row["seed"] for row in y["episodes"]] for x, y in pairs):
        raise RecordError(f"{first} and {second} were not tested on the same episodes")
    test = paired_difference([_outcomes(x) for x, _ in pairs], [_outcomes(y) for _, y in pairs])
    rate_a, rate_b = (100 * np.mean([_outcomes(r).mean() for r in side]) for side in zip(*pairs))
    episodes = sum(len(x["episodes"]) for x, _ in pairs)
    verdict = (f"{first if test['difference'] > 0 else second} is better" if test["p"] < 0.05
               else "the difference is not significant at the 5 % level")
    return (f"On {short_name(env_id)} from {rates_label(rates)} Hz demos ({episodes} paired test episodes, "
            f"{len(seeds)} training seed{'s' * (len(seeds) > 1)}), {first} succeeds in {rate_a:.0f} % and {second} "
            f"in {rate_b:.0f} %: a difference of {100 * test['difference']:+.0f} points [95 % interval "
            f"{100 * test['low']:+.0f} to {100 * test['high']:+.0f}]; {verdict} ({test['test']}, p = {test['p']:.3g}).")
