"""Choose a policy's rollout settings per env and source rate on the validation seeds only.

How a trained model is executed is a hyperparameter like any other (protocol v2,
docs/design.md section 5): for fixed-rate policies the curve through their source-rate actions
(``interpolation``) and whether to ensemble their knots at every control step instead
(``ensemble_knots``), and for every chunking policy the actions run per prediction
(``n_action_steps``); the smooth indicator ``tracker (smooth)`` picks its curve the same way.
For every (env, source rates) this script takes the cell's model (training seed 0, through the
runner's checkpoint cache: trained once, with the rollout settings at their defaults), runs
candidate settings on the validation seeds 10000-10049, keeps the best (ties: the default, then
the earlier candidate) and writes it to ``policies/rollout_choices.json``, where a plain
``cfbench-eval`` finds it; ``docs/rollout-choices.md`` is regenerated from that file.

``--search grid`` runs every combination of curve and actions per prediction;
``--search coordinate`` (the default) runs every curve at the default actions per prediction,
then every actions-per-prediction with the best curve (8 for DP-T against 18), then every
ensemble size with the best of both: on DP-T PassagePassing 5 Hz grid and coordinate search chose
the same (``docs/rollout-choices.md`` lists every setting run).

    python benchmarks/rollout_choice.py --policy tracker --variant smooth --env all \\
        --source-hz 2.5 5 10 20 2.5+5
    python benchmarks/rollout_choice.py --policy dp-t --env all --source-hz 2.5 5 2.5+5 --threads 1

The test seeds are never touched.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cfbench import paths
from cfbench.app.run import trained_policy
from cfbench.app.spec import RunSpec, parse_overrides
from cfbench.cli import set_threads
from cfbench.envs import ENV_IDS, short_name
from cfbench.evaluate import evaluate
from cfbench.files import atomic_write_text
from cfbench.leaderboard.standings import gain_over, success_summary
from cfbench.protocol import VALIDATION_SEEDS, parse_rates, rates_label, seed_list
from cfbench.results import commit_label, format_label, provenance, read_all
from policies.interpolation import INTERPOLANTS, SMOOTH_INTERPOLANTS
from policies.rollout import CHOICES_FILE, all_choices, write_choices

DOC = Path(__file__).resolve().parent.parent / "docs" / "rollout-choices.md"


#: knots ensembled per control step, tried by default (0: chunks run whole; 1-2 won on
#: ButtonTouch 2.5 Hz for DP-T, docs/coarse-waypoints.md)
ENSEMBLES = (0, 1, 2, 4)


def axes(config, interpolants: list[str] | None, action_steps: list[int] | None, smooth_only: bool,
         ensembles: list[int] | None = None) -> dict[str, list]:
    """The values to try of each rollout setting the config has, the default first. Actions per
    prediction: the default halved down to 2 unless given (1 costs a prediction per source step:
    a 2.5 Hz rollout then predicts eight times as often as at the default, and a 5 Hz DP-C
    validation took 4-5 minutes beside other work); curves: every one (smooth ones only for the
    smooth indicator) unless given."""
    fields, defaults = config.rollout_fields(), config.training_rollout()
    values = {}
    if "interpolation" in fields:
        values["interpolation"] = interpolants or list(SMOOTH_INTERPOLANTS if smooth_only else INTERPOLANTS)
    if "n_action_steps" in fields:
        default, halvings = defaults["n_action_steps"], []
        while default >= 2 or not halvings:
            halvings.append(default)
            default //= 2
        values["n_action_steps"] = action_steps or halvings
    if "ensemble_knots" in fields:
        values["ensemble_knots"] = ensembles or list(ENSEMBLES)
    if not values:
        raise ValueError(f"{config.name} has no rollout setting to choose")
    for name, options in values.items():  # the default first: it wins ties
        values[name] = sorted(options, key=lambda v: v != defaults[name])
    return values


def search(values: dict[str, list], score, coordinate: bool) -> tuple[dict, dict[str, float]]:
    """The best setting and every score run (label -> validation success %). Grid: every
    combination; coordinate: one setting at a time, in order, the others at their best so far.
    Ties go to the earlier candidate (the defaults come first)."""
    table: dict[str, float] = {}

    def best_of(options: list[dict]) -> dict:
        for settings in options:
            if label(settings) not in table:
                table[label(settings)] = score(settings)
        return max(options, key=lambda s: (table[label(s)], -options.index(s)))

    if not coordinate:
        return best_of([dict(zip(values, combo)) for combo in itertools.product(*values.values())]), table
    current = {name: options[0] for name, options in values.items()}
    for name, options in values.items():
        current = best_of([{**current, name: option} for option in options])
    return current, table


def label(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items())


def choose(spec: RunSpec, interpolants, action_steps, seeds: list[int], coordinate: bool = True,
           num_envs: int = 50, ensembles: list[int] | None = None) -> dict:
    """The cell's validation table and choice, as a rollout_choices.json entry."""
    start = time.perf_counter()
    policy_name, env_id, rates = spec.policy, spec.env_id, spec.rates
    policy, training, reference_hz = trained_policy(spec)
    run = training["run_dir"] if training else None
    values = axes(policy.config, interpolants, action_steps, smooth_only=policy.privileged, ensembles=ensembles)
    bar = tqdm(desc=f"{policy_name} {short_name(env_id)} {rates_label(rates)} Hz", unit="setting")

    def score(settings: dict) -> float:
        policy.set_rollout(settings)
        outcome = evaluate(policy, env_id, reference_hz, seeds=seeds, num_envs=num_envs, progress=False)
        bar.update(1)
        return round(100 * outcome["metrics"]["success_rate"], 1)

    best, table = search(values, score, coordinate)
    bar.close()
    made = provenance(["python", *sys.argv], (seeds[0], seeds[-1] + 1), {})
    return {
        "policy": policy_name, "variant": spec.variant, "env": short_name(env_id), "source_hz": rates_label(rates),
        "settings": best, "validation_success": table, "search": "coordinate" if coordinate else "grid",
        "validation_seeds": [seeds[0], seeds[-1] + 1], "train_seed": 0, "run_dir": run,
        "weights_sha256": training["weights_sha256"] if training else None,
        "made_by": {**{k: made[k] for k in ("command", "git_commit", "git_dirty", "shared_with")},
                    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                    "seconds": round(time.perf_counter() - start)},
    }


def test_rows(group: list[dict], records: list[dict]) -> dict[str, dict]:
    """For the cells whose records ran the chosen settings: test success with them and with
    the paper's straight lines (the same model, ``--variant straight``), their paired difference,
    and the smooth indicator's."""
    def find(policy, variant, entry):
        return next((r for r in records if (r["policy"], r["variant"], short_name(r["env_id"]),
                                            rates_label(r["source_hz"]), r["train_seed"])
                     == (policy, variant, entry["env"], entry["source_hz"], 0)), None)

    def cell(record):
        mean, low, high, _ = success_summary([record])
        return f"{100 * mean:.0f} [{100 * low:.0f}–{100 * high:.0f}]"

    rows = {}
    for entry in group:
        chosen, straight = find(entry["policy"], entry["variant"], entry), find(entry["policy"], "straight", entry)
        ran = chosen["provenance"]["config"] if chosen else {}
        if straight is None or not ran or any(str(ran.get(name)) != str(v) for name, v in entry["settings"].items()):
            continue  # no record yet, or one that ran another choice
        test = gain_over([chosen], straight)
        smooth = find("tracker", "smooth", entry)
        rows[f"{entry['env']} {entry['source_hz']} Hz"] = {
            "chosen": label(entry["settings"]), "test %": cell(chosen), "straight %": cell(straight),
            "Δ (paired)": f"{100 * test['difference']:+.0f} (p {test['p']:.2g})",
            "tracker (smooth) %": cell(smooth) if smooth else "–"}
    return rows


def render(entries: list[dict], records: list[dict] = ()) -> str:
    """docs/rollout-choices.md: every choice with its validation numbers, from the JSON file. One
    table per policy: a row per cell and actions per prediction, a column per curve; then, where
    the cells' records are published, what the choice did on the test seeds."""
    lines = ["# Rollout settings chosen on the validation seeds", "",
             "Generated by `benchmarks/rollout_choice.py` from `policies/rollout_choices.json`; do not edit by hand.",
             "Each cell's model (training seed 0) ran every candidate setting on the validation seeds",
             "10000-10049; the best (**bold**) is what `cfbench-eval` uses for that policy, env and source rate",
             "(ties: the default, then the earlier candidate). Validation success in %.", ""]
    env_order = {name: i for i, name in enumerate(ENV_IDS)}
    ordered = sorted(entries, key=lambda e: (e["policy"], e["variant"], env_order.get(e["env"], 99),
                                             "+" in e["source_hz"], [float(x) for x in e["source_hz"].split("+")]))
    for (policy, variant), group in itertools.groupby(ordered, key=lambda e: (e["policy"], e["variant"])):
        group = list(group)
        lines += [f"## {format_label(policy, variant)}", ""]
        rows: dict[str, dict] = {}
        for entry in group:
            chosen = label(entry["settings"])
            runs = [(dict(item.split("=", 1) for item in text.split()), text, success)
                    for text, success in entry["validation_success"].items()]
            for settings, text, success in sorted(runs, key=lambda run: -int(run[0].get("n_action_steps", 0))):
                curve = settings.pop("interpolation", "–")
                row = f"{entry['env']} {entry['source_hz']} Hz" + "".join(f", {k} {v}" for k, v in settings.items())
                rows.setdefault(row, {})[curve] = f"**{success:g}**" if text == chosen else f"{success:g}"
        table = pd.DataFrame(rows).T
        table = table[[c for c in (*INTERPOLANTS, "–") if c in table.columns]]
        lines += [table.fillna("–").to_markdown(), ""]
        tested = test_rows(group, list(records))
        if tested:
            lines += ["On the test seeds (training seed 0, 100 episodes, 95 % Wilson intervals; Δ: chosen minus",
                      "straight lines on the same episodes, exact McNemar):", "",
                      pd.DataFrame(tested).T.to_markdown(), ""]
        commands = sorted({f"`{e['made_by']['command']}` at {commit_label(e['made_by'])}" for e in group})
        lines += ["Made by: " + "; ".join(commands), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", help="the policy to choose for (required unless --render)")
    parser.add_argument("--variant", default="")
    parser.add_argument("--env", nargs="+", default=["all"])
    parser.add_argument("--source-hz", nargs="+", default=["2.5", "5"])
    parser.add_argument("--interpolation", nargs="+", default=None, choices=INTERPOLANTS,
                        help="curves to try (default: every one; the smooth ones for an indicator)")
    parser.add_argument("--n-action-steps", nargs="+", type=int, default=None,
                        help="actions per prediction to try (default: the default halved down to 2)")
    parser.add_argument("--ensemble-knots", nargs="+", type=int, default=None,
                        help=f"knots ensembled per control step to try (default: {' '.join(map(str, ENSEMBLES))})")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training config overrides (the cell's model is the one these name)")
    parser.add_argument("--search", choices=["coordinate", "grid"], default="coordinate",
                        help="one setting at a time (curves, then actions per prediction) or every combination")
    parser.add_argument("--episodes", type=int, default=VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
                        help="validation seeds to use, from 10000")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--num-envs", type=int, default=50,
                        help="episodes run side by side (rollouts do not depend on batching; more is faster)")
    parser.add_argument("--dry-run", action="store_true", help="print the choices without writing them")
    parser.add_argument("--render", action="store_true", help=f"only redraw {DOC.name} from the choices file")
    args = parser.parse_args()
    if args.render:
        atomic_write_text(DOC, render(all_choices(), read_all(paths.results_dir(), allow_empty=True)))
        print(f"wrote {paths.shown(DOC)}")
        return 0
    if args.policy is None:
        parser.error("--policy is required (unless --render)")
    set_threads(args.threads)
    envs = list(ENV_IDS) if args.env == ["all"] else args.env
    seeds = seed_list(VALIDATION_SEEDS)[: args.episodes]
    entries = []
    for env, text in itertools.product(envs, args.source_hz):
        spec = RunSpec(args.policy, env, parse_rates(text), args.variant, parse_overrides(args.overrides))
        entry = choose(spec, args.interpolation, args.n_action_steps, seeds, coordinate=args.search == "coordinate",
                       num_envs=args.num_envs, ensembles=args.ensemble_knots)
        print(f"{entry['env']} {entry['source_hz']} Hz: {entry['validation_success']} -> {label(entry['settings'])}")
        entries.append(entry)
        if not args.dry_run:  # each cell as soon as it is known: an interrupted run keeps what it chose
            write_choices([entry])
            atomic_write_text(DOC, render(all_choices(), read_all(paths.results_dir(), allow_empty=True)))
    if not args.dry_run:
        print(f"wrote {paths.shown(CHOICES_FILE)} and {paths.shown(DOC)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
