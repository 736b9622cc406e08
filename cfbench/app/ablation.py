"""Ablations of a learned policy (DiSPo by default): train listed variants, measure them on the
validation seeds only, one table. How DiSPo's defaults were chosen (docs/dispo-ablation.md), and
E0's bins and PF-DAG's modes.

Each variant is a set of ``--set`` overrides of the policy's config (every DiSPo field says in its
comment whether it follows the paper or is our design); a variant named like one the config
declares (``paper``, ``no-ft``) starts from that one's overrides. For every (variant, env, source rate)
the policy is trained through the runner's checkpoint cache (checkpoint selection on the
validation seeds, as always), then measured on the validation seeds, never the test seeds:

- validation success of the selected checkpoint (the training summary's best score);
- open-loop fidelity along the expert's path (``cfbench.fidelity``): waypoint error,
  in-between error, zig-zag;
- DiSPo: pseudo-demonstration in-between error per fine-tuning multiplier (2x, 4x, ... up to the
  target rate, also for variants without fine-tuning): the selected model's pseudo demos of the
  training episodes against the training seeds' own expert at the same times;
- training time (the trained model's own) and the time the measuring took.

A variant that changes only rollout settings (``ROLLOUT_ONLY``) reuses the trained model of the
variant without them and is re-validated.

    python -m cfbench.app.ablation --variant base --variant sample prediction_type=sample \\
        --env PassagePassing ButtonTouch --source-hz 2.5 5 --out runs/dispo_ablation.md
    python -m cfbench.app.ablation --policy e0 --variant b64 bins=64 --variant b1024 bins=1024 \\
        --env PassagePassing --source-hz 20

Writes a markdown table and the same rows as JSON beside it (``.json``). Tables of separate
runs (e.g. two streams side by side) join into one, each row with its variant's overrides and
every run's command listed, numbers untouched::

    python -m cfbench.app.ablation --merge runs/a.json runs/b.json --out docs/dispo-ablation.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd

from cfbench import paths
from cfbench.app.cache import train_or_load
from cfbench.app.spec import RunSpec, Workspace, override_items, parse_overrides
from cfbench.cli import set_threads
from cfbench.evaluate import evaluate
from cfbench.fidelity import probe
from cfbench.files import atomic_write_text
from cfbench.protocol import VALIDATION_SEEDS, parse_rates, rates_label, seed_list
from policies import policy_class
from policies.dispo.config import finetune_rounds


def pseudo_inbetween_error(policy, dataset, finer: int) -> float:
    """Mean distance of the pseudo demos' in-between actions from the training expert's poses."""
    _, windows, demo_slots = policy.pseudo_windows(dataset, finer)
    n_past = policy.config.n_obs_steps - 1
    # windows.episode indexes these
    seeds = [e.seed for e in dataset.episodes if e.source_hz == policy.config.reference_hz]
    env = gym.make(dataset.env_id)
    experts = {}
    for seed in sorted(set(seeds)):
        env.reset(seed=seed)
        experts[seed] = env.unwrapped.expert_trajectory()
    env.close()
    distances = []
    in_between = np.setdiff1d(np.arange(n_past, windows.actions.shape[1]), demo_slots)
    first_step = {}
    for row, episode in enumerate(windows.episode):  # windows of an episode come in step order
        step = row - first_step.setdefault(episode, row)
        hz = windows.source_hz[row]
        times = (step + (in_between - n_past + 1) / finer) / hz
        expert = experts[seeds[episode]]
        inside = times <= expert.duration
        poses = expert(times[inside])[:, :2]
        distances.append(np.linalg.norm(windows.actions[row, in_between[inside], :2] - poses, axis=1))
    return float(np.concatenate(distances).mean())


#: settings only the rollout reads (DiSPo: with fixed step scales) beyond the configs' declared
#: rollout settings (``PolicyConfig.ROLLOUT``): a variant changing only these reuses the trained
#: model of the variant without them, set on it after loading
ROLLOUT_ONLY = {
    "dispo": ("num_inference_steps",),
    "e0": ("refinement_steps", "temperature", "detokenize"),
    "pf-dag": ("sampling_steps", "mode_margin"),
}


def measure(spec: RunSpec, workspace: Workspace | None = None) -> dict:
    """One table row: the run's model (trained through the cache without its rollout-only
    overrides, then set to them and re-validated) measured on the validation seeds."""
    rollout_only = ROLLOUT_ONLY.get(spec.policy, ()) + policy_class(spec.policy).config_class().rollout_fields()
    rollout = {k: v for k, v in spec.overrides.items() if k in rollout_only}
    trained = dataclasses.replace(spec, overrides={k: v for k, v in spec.overrides.items() if k not in rollout_only})
    workspace = workspace or Workspace()
    dataset = workspace.demos(trained)
    policy, summary = train_or_load(trained, workspace, dataset=dataset)
    start = time.perf_counter()  # measuring only: the training time is the summary's
    env = spec.env_id
    if rollout:
        if getattr(policy.config, "step_scale_mode", "fixed") != "fixed":
            raise ValueError(f"{sorted(rollout)} change what φ_r learns: train with them (adaptive step scales)")
        policy.config = dataclasses.replace(policy.config, **rollout)  # checked like any config
        outcome = evaluate(policy, env, dataset.reference_hz, seeds=seed_list(VALIDATION_SEEDS), progress=False)
        summary = {**summary, "best_score": outcome["metrics"]["success_rate"]}  # the same model, re-validated
    fidelity = probe(policy, env, dataset.reference_hz)
    row = {"variant": spec.variant, "env": spec.env, "source Hz": rates_label(spec.rates),
           "val success %": 100 * summary["best_score"] if summary["best_score"] is not None else None}
    for key in ("waypoint_error", "inbetween_error", "zigzag"):
        row[key.replace("_error", " err")] = None if fidelity[key] is None else round(fidelity[key]["mean"], 2)
    row["waypoint err at 0.2, 0.4, ... 1.6 s"] = by_horizon(fidelity["waypoint_error_by_step"], dataset.reference_hz)
    if spec.policy == "dispo":  # also without fine-tuning
        for finer in finetune_rounds(dataclasses.replace(policy.config, finetune_steps=1)):
            row[f"pseudo in-between {finer}x"] = round(pseudo_inbetween_error(policy, dataset, finer), 2)
    row["train s"] = round(summary["train_seconds"])
    row["measure s"] = round(time.perf_counter() - start)
    return row


def by_horizon(by_step: list[float], reference_hz: float, horizons: int = 8, every: float = 0.2) -> str:
    """The waypoint error at 0.2, 0.4, ... s after the query, where the rate has a waypoint ('-'
    where not): how far ahead a model's waypoints break, comparable across rates."""
    cells = []
    for n in range(1, horizons + 1):
        step = n * every * reference_hz
        k = round(step)
        cells.append(f"{by_step[k - 1]:.1f}" if abs(step - k) < 1e-6 and 1 <= k <= len(by_step) else "-")
    return " / ".join(cells)


def merge(tables: list[Path], out: Path) -> pd.DataFrame:
    """One table from the JSON rows of several runs, in the order given (a cell two runs measured,
    once: the first run's); each run's markdown header (beside its JSON) gives its command and
    its variants' overrides."""
    rows, commands = [], []
    for path in tables:
        header = path.with_suffix(".md").read_text().split("\n\n")[:2]
        commands.append(header[0].split(": ", 1)[1])
        overrides = dict(line[3:].split("`: ", 1) for line in header[1].splitlines())
        for row in json.loads(path.read_text()):
            rows.append({"variant": row["variant"], "overrides": overrides.get(row["variant"], ""),
                         **{k: v for k, v in row.items() if k != "variant"}})
    table = pd.DataFrame(rows).drop_duplicates(["variant", "overrides", "env", "source Hz"])  # the first run's
    text = ("Ablation (validation seeds only), joined from the runs of:\n\n"
            + "\n".join(f"- {command}" for command in commands) + "\n\n" + table.to_markdown(index=False) + "\n")
    atomic_write_text(out, text)
    return table


def variant_text(declared: dict, overrides: list[str]) -> str:
    """A variant's overrides as the table lists them: a declared variant's own, then the command's."""
    return " ".join(override_items(declared) + overrides) or "(defaults)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="dispo", help="the policy whose variants are measured")
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                        help="a variant: its name, then its config overrides (repeat the option per variant)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="join the tables of earlier runs (their .json rows) into --out instead of training")
    parser.add_argument("--env", nargs="+", default=["PassagePassing", "ButtonTouch"])
    parser.add_argument("--source-hz", nargs="+", default=["2.5", "5"])
    parser.add_argument("--set", dest="common", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides every variant shares (e.g. a shorter budget for a smoke run)")
    parser.add_argument("--n-demos", type=int, default=90)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: runs/<policy>_ablation.md")
    args = parser.parse_args()
    args.out = args.out or paths.runs_dir().parent / f"{args.policy}_ablation.md"
    if args.merge:
        print(merge(args.merge, args.out).to_string(index=False))
        print(f"wrote {args.out}")
        return 0
    if not args.variant:
        parser.error("name at least one --variant (or --merge earlier tables)")
    set_threads(args.threads)
    rows = []
    for name, *overrides in args.variant:
        for env in args.env:
            for text in args.source_hz:
                spec = RunSpec(args.policy, env, parse_rates(text), name, n_demos=args.n_demos,
                               overrides={**parse_overrides(args.common), **parse_overrides(overrides)})
                rows.append(measure(spec))
                print(rows[-1], file=sys.stderr)
    table = pd.DataFrame(rows)
    declared = policy_class(args.policy).config_class.variants
    command = " ".join(["python", "-m", "cfbench.app.ablation", *sys.argv[1:]])
    header = (f"{args.policy} ablation (validation seeds only): `{command}`\n\n"
              + "\n".join(f"- `{name}`: {variant_text(declared.get(name, {}), overrides)}"
                           for name, *overrides in args.variant))
    atomic_write_text(args.out, header + "\n\n" + table.to_markdown(index=False) + "\n")
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(rows, indent=1))
    print(table.to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
