"""The commands that train and evaluate: ``cfbench-train``, ``cfbench-eval`` and
``cfbench-leaderboard`` (which can re-run a record: ``--verify``).

``cfbench-eval --policy tracker --env PassagePassing --source-hz 2.5`` evaluates over the 100
test envs at 20 Hz, prints a table, writes one JSON record per (env, source rates, training
seed) and redraws a leaderboard and that env's plot beside it: by default in the scratch area
``runs/`` (see ``cfbench.paths``), so trying the benchmark never touches the published
``results/``. Learned policies are first trained on the demos of the source rates, or loaded
from the checkpoint cache (``cfbench.app.cache``). Each run is a ``RunSpec``
(``cfbench.app.spec``), checked before anything trains. torch and the policy modules are
imported only when a policy is built or a command runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import policies
from cfbench import paths
from cfbench.app.spec import VALIDATION_EPISODES, RunSpec, Workspace, override_items, parse_overrides, parse_seed_range
from cfbench.cli import Parser, command, non_negative_int, positive_int, set_threads
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.protocol import N_DEMOS, PROTOCOL, TARGET_HZ, TEST_SEEDS, VALIDATION_SEEDS, parse_rates, rates_label
from cfbench.results import format_label, parse_label, read_all, read_record


# ------------------------------------------------------------ command lines
def add_policy_module_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy-module", dest="policy_modules", action="append", default=[], metavar="MODULE",
                        help="import MODULE (e.g. mypkg.mypolicy; the current folder is searched first) to register "
                             "the policies it defines with @policies.register; may be repeated")


def import_policy_modules(args: argparse.Namespace) -> None:
    for module in args.policy_modules:
        policies.import_policy_module(module)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by cfbench-train and cfbench-eval: what to train, where, on what."""
    parser.add_argument("--policy", required=True, help="registered policy: " + ", ".join(policies.available()))
    add_policy_module_argument(parser)
    parser.add_argument("--profile", default="cpu", help="named policy config profile: cpu or gpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="policy config overrides (cfbench-train --policy P --show-config lists the keys)")
    parser.add_argument("--device", default=None, help="torch device for learned policies, e.g. cuda")
    parser.add_argument("--n-demos", type=positive_int, default=N_DEMOS, help="training demos per dataset")
    parser.add_argument("--val-episodes", type=non_negative_int, default=VALIDATION_EPISODES,
                        help=f"validation envs (seeds from {VALIDATION_SEEDS[0]}) for checkpoint selection")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: the cores nothing else is busy on at the start)")
    parser.add_argument("--demos-dir", type=Path, default=paths.demos_dir())
    parser.add_argument("--checkpoints-dir", type=Path, default=paths.checkpoints_dir())
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if the cache holds a finished (or corrupt) run of this config")
    parser.add_argument("--variant", default="",
                        help="label for this configuration in results and the leaderboard; a variant the policy "
                             "declares (--show-config lists them, e.g. dispo's 'paper') also sets its config")
    parser.add_argument("--allow-seed-overlap", action="store_true",
                        help="allow training demos on validation or test seeds, and test seeds that overlap the "
                             "training or validation seeds")


def spec_options(args: argparse.Namespace) -> dict:
    """The RunSpec fields the training options give (``--set``, then ``--device``)."""
    overrides = parse_overrides(args.overrides)
    if args.device:
        overrides["device"] = args.device
    return {"policy": args.policy, "variant": args.variant, "overrides": overrides, "profile": args.profile,
            "n_demos": args.n_demos, "val_episodes": args.val_episodes, "allow_seed_overlap": args.allow_seed_overlap}


def show_config(spec: RunSpec) -> str:
    """Every config key of a policy (what ``--set`` accepts), its value under the profile and
    overrides, and what it means: one flat table."""
    policy = spec.make_policy()
    docs = policies.config_docs(type(policy.config))
    rows = [(f.name, json.dumps(getattr(policy.config, f.name), default=list), docs.get(f.name, ""))
            for f in dataclasses.fields(policy.config)]
    width = max(len(name) for name, _, _ in rows)
    value_width = min(24, max(len(value) for _, value, _ in rows))
    variant = f", variant {spec.variant}" if spec.variant else ""
    lines = [f"{spec.policy} config (profile {spec.profile}{variant}); set any key with --set KEY=VALUE", ""]
    for name, value, doc in rows:
        lines.append(f"{name:<{width}}  {value:<{value_width}}  {doc}")
    declared = type(policy.config).variants
    if declared:
        lines += ["", "declared variants (--variant NAME):"]
        lines += [f"  {name}: " + " ".join(override_items(values)) for name, values in declared.items()]
    return "\n".join(lines)


def _values_may_start_with_a_dash(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``--test-seeds -5:2`` as ``--test-seeds=-5:2``, so our check (not argparse, which takes the
    value for an option) says what is wrong with it."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] in options and index + 1 < len(argv) and argv[index + 1][:2] != "--":
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


# ------------------------------------------------------------ cfbench-train
@command("cfbench-train")
def train_main(argv: list[str]) -> None:
    parser = Parser("cfbench-train", "Train a policy on cfbench demos (cached).")
    add_training_arguments(parser)
    parser.add_argument("--env", default="PassagePassing")
    parser.add_argument("--source-hz", default="2.5", help="demo rate; '2.5+5' = mixed dataset")
    parser.add_argument("--show-config", action="store_true",
                        help="print every config key of the policy with its value and meaning, then exit")
    args = parser.parse_args(argv)
    import_policy_modules(args)
    if args.show_config:
        print(show_config(RunSpec(**spec_options(args))))
        return
    spec = RunSpec(env=args.env, rates=parse_rates(args.source_hz), **spec_options(args))
    spec.check_device()

    from cfbench.app.cache import train_or_load

    set_threads(args.threads)
    policy, summary = train_or_load(spec, Workspace(args.demos_dir, args.checkpoints_dir), retrain=args.retrain)
    print(f"{policy.name} on {spec.env} {rates_label(spec.rates)} Hz: {summary['run_dir']}")
    print(f"train time {summary['train_seconds']:.0f} s; best validation success "
          f"{summary['best_score']} at step {summary['best_step']}")


# ------------------------------------------------------------ cfbench-eval
def eval_parser() -> Parser:
    parser = Parser("cfbench-eval", "Train (if needed) and evaluate a policy on cfbench test envs at a fine "
                                    "control rate.")
    add_training_arguments(parser)
    parser.add_argument("--env", nargs="+", default=["PassagePassing"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    parser.add_argument("--source-hz", nargs="+", default=["2.5"], help="demo rates; '2.5+5' = mixed dataset")
    parser.add_argument("--target-hz", type=float, default=TARGET_HZ)
    parser.add_argument("--test-seeds", default=f"{TEST_SEEDS[0]}:{TEST_SEEDS[1]}", help="START:END (END exclusive)")
    parser.add_argument("--episodes", type=positive_int, default=None, help="evaluate only the first N test seeds")
    parser.add_argument("--train-seeds", nargs="+", type=non_negative_int, default=[0],
                        help="training seeds: one run (and record) per seed")
    parser.add_argument("--num-envs", type=positive_int, default=10)
    parser.add_argument("--vector", choices=["sync", "async"], default="sync")
    parser.add_argument("--results-dir", type=Path, default=paths.runs_dir(),
                        help="where records go; the published results/ only when named here")
    parser.add_argument("--leaderboard", type=Path, default=None,
                        help="regenerated from --results-dir after the runs, with the per-env plots "
                             "(default: see cfbench.paths.leaderboard_path)")
    parser.add_argument("--no-leaderboard", action="store_true", help="write only the result records")
    parser.add_argument("--videos", type=non_negative_int, default=0, metavar="N",
                        help="GIFs of the first N test episodes and of the first N failures after them, in "
                             "videos/<record name>/ beside each record")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                        help="evaluate the trained model in DIR (a folder cfbench-export wrote) instead of training: "
                             "one --env, --source-hz and --train-seeds, with the config it was trained with")
    return parser


def eval_specs(argv: list[str]) -> tuple[argparse.Namespace, list[RunSpec]]:
    """A cfbench-eval command line and the runs it stands for, each checked before any runs."""
    args = eval_parser().parse_args(_values_may_start_with_a_dash(argv, ("--test-seeds",)))
    import_policy_modules(args)
    envs = list(ENV_IDS) if args.env == ["all"] else [short_name(resolve_env(e)) for e in args.env]
    rate_sets = [parse_rates(text) for text in args.source_hz]
    for option, values in (("--source-hz", [rates_label(r) for r in rate_sets]), ("--train-seeds", args.train_seeds),
                           ("--env", envs)):
        doubled = sorted({str(v) for v in values if values.count(v) > 1})
        if doubled:
            raise ValueError(f"{option} names {doubled[0]} twice: each run would be made twice")
    test_seeds = parse_seed_range(args.test_seeds)
    specs = [RunSpec(env=env, rates=rates, target_hz=args.target_hz, test_seeds=test_seeds, episodes=args.episodes,
                     train_seed=train_seed, **spec_options(args))
             for env, rates, train_seed in itertools.product(envs, rate_sets, args.train_seeds)]
    if args.checkpoint is not None:
        if len(specs) > 1:
            raise ValueError("--checkpoint evaluates one trained model: give one --env, one --source-hz and one "
                             "--train-seeds")
        if not specs[0].trainable:
            raise ValueError(f"policy {args.policy!r} is not trained: it needs no --checkpoint")
        if args.retrain:
            raise ValueError("--retrain trains a model, --checkpoint evaluates one already trained: give one of them")
    specs[0].check_device()
    return args, specs


@command("cfbench-eval")
def eval_main(argv: list[str]) -> None:
    args, specs = eval_specs(argv)

    import pandas as pd

    from cfbench.app.run import run
    from cfbench.leaderboard.plots import PLOTS
    from cfbench.leaderboard.regenerate import regenerate

    set_threads(args.threads)
    workspace = Workspace(args.demos_dir, args.checkpoints_dir)
    rows = []
    for spec in specs:
        record, path = run(spec, workspace, results_dir=args.results_dir, num_envs=args.num_envs, vector=args.vector,
                           videos=args.videos, retrain=args.retrain, command=["cfbench-eval", *argv],
                           checkpoint=args.checkpoint)
        m = record["metrics"]
        rows.append({
            "env": spec.env, "source Hz": rates_label(spec.rates), "seed": spec.train_seed,
            "success %": 100 * m["success_rate"], "collision %": 100 * m["collision_rate"],
            "steps to success": m["mean_steps_to_success"], "path dev": m["path_deviation"],
            "in-between err": (record["fidelity"]["inbetween_error"] or {}).get("mean"),
            "episodes": m["episodes"], "train s": m["train_wall_s"],
            "eval s": m["eval_wall_s"], "record": paths.shown(path),
        })
    table = pd.DataFrame(rows)
    print(f"\n{format_label(args.policy, args.variant)} at {args.target_hz:g} Hz")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    if not args.no_leaderboard:
        args.leaderboard = regenerate(args.results_dir, args.leaderboard)
        drawn = [args.results_dir / PLOTS / f"{e}.png" for e in dict.fromkeys(s.env for s in specs)]
        plots = ", ".join(paths.shown(p) for p in drawn if p.is_file()) or "none (only full test runs are plotted)"
        print(f"leaderboard: {paths.shown(args.leaderboard)}; plots: {plots}")


# ------------------------------------------------------------ cfbench-leaderboard
def split_label(label: str) -> tuple[str, str]:
    """``cfbench.results.parse_label`` ('dispo (paper)' -> ('dispo', 'paper')), for a registered policy only."""
    policy_name, variant = parse_label(label)
    policies.policy_class(policy_name)  # an unknown policy is named before anything trains
    return policy_name, variant


@command("cfbench-leaderboard")
def leaderboard_main(argv: list[str]) -> None:
    from cfbench.app.verify import DEVIATION_TOLERANCE, check_against_registry, mark_verified, verify_record
    from cfbench.leaderboard.comparison import compare
    from cfbench.leaderboard.plots import PLOTS
    from cfbench.leaderboard.regenerate import regenerate
    from cfbench.leaderboard.submission import submit

    parser = Parser("cfbench-leaderboard", "leaderboard.md and the per-env plots, regenerated from results/ and "
                                           "nothing else.")
    parser.add_argument("--results-dir", type=Path, default=paths.results_dir())
    parser.add_argument("--output", type=Path, default=None,
                        help="the page to write (default: see cfbench.paths.leaderboard_path)")
    parser.add_argument("--submit", type=Path, nargs="*", default=[], metavar="FILE",
                        help="result files to add: all of them, or none if one is bad")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="paired test of two policies (POLICY or 'POLICY (VARIANT)') instead of regenerating; "
                             "needs --env and --source-hz")
    parser.add_argument("--env", default=None, help="with --compare")
    parser.add_argument("--source-hz", default=None, help="with --compare: demo rates, e.g. 2.5 or 2.5+5")
    parser.add_argument("--verify", type=Path, default=None, metavar="RECORD",
                        help="re-run a record's test episodes and compare them episode by episode; a record in "
                             "--results-dir is then marked verified on the leaderboard")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="with --verify: the checkpoint folder (config.json + model.safetensors) of a learned "
                             "policy's record")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="with --verify: torch threads (default: the record's; actions round differently at "
                             "another count)")
    add_policy_module_argument(parser)
    parser.add_argument("--protocol", type=int, default=PROTOCOL,
                        help="the protocol of the folder's records: an archive of an older one "
                             "(e.g. results/archive/protocol1, whose page is kept inside it)")
    args = parser.parse_args(argv)
    import_policy_modules(args)
    if args.compare:
        if not (args.env and args.source_hz):
            raise ValueError("--compare needs --env and --source-hz")
        records = read_all(args.results_dir, protocol=args.protocol)
        print(compare(records, *args.compare, args.env, parse_rates(args.source_hz)))
        return
    if args.verify:
        verification = verify_record(args.verify, args.checkpoint, threads=args.threads)
        print(f"verified {args.verify.name}: all {verification['episodes']} test episodes identical (success, "
              f"collision, steps; path deviation within {DEVIATION_TOLERANCE:g})")
        if args.verify.absolute().parent == args.results_dir.absolute():
            print(f"marked in {paths.shown(mark_verified(args.results_dir, verification))}")
        else:
            return
    if args.submit and args.protocol != PROTOCOL:
        raise ValueError(f"--submit adds protocol v{PROTOCOL} records only")
    for path in args.submit:
        check_against_registry(read_record(path), str(path))
    for path in submit(args.submit, args.results_dir):
        print(f"added {path}")
    output = regenerate(args.results_dir, args.output, args.protocol)
    print(f"wrote {output} and {args.results_dir / PLOTS}/")
