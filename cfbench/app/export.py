"""Checkpoints users can publish: ``cfbench-export RUN_DIR OUT`` turns a trained run of the
checkpoint cache into a folder ready for the Hugging Face Hub, and ``cfbench-eval --checkpoint
OUT`` evaluates such a folder without training.

The folder holds what LeRobot's ``pretrained_model`` folders hold, ``config.json`` and
``model.safetensors`` (the run's own bytes, so the SHA-256s its records name still match), with
``training_summary.json`` (the run's learning and validation curves and those SHA-256s), the
records made with the checkpoint (``records/``) and a model card (``README.md``: the policy, env
and source rates, each record's success with its 95 % Wilson interval, the exact ``cfbench-eval``
command that evaluates it again, the ``cfbench-leaderboard --verify`` command that checks a
record against it, the commits and the SHA-256s). Nothing here uploads: the card gives the
command.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import policies
from cfbench import paths
from cfbench.app.cache import POLICY_DIR, SUMMARY, load_checked, load_finished, read_summary, sha256
from cfbench.app.spec import RunSpec
from cfbench.app.verify import record_threads
from cfbench.cli import Parser, command
from cfbench.files import atomic_write_bytes, atomic_write_text
from cfbench.protocol import rates_label
from cfbench.results import format_label, read_all, record_filename
from cfbench.stats import wilson
from policies.base import CONFIG_FILE, WEIGHTS_FILE, plain

TRAINING_SUMMARY = "training_summary.json"
RECORDS = "records"
MODEL_CARD = "README.md"


# ------------------------------------------------------------ writing a folder
def matching_records(weights_sha256: str, results_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """The records (path, record) evaluated with these weights, the first folder's first where two
    folders hold one record."""
    found: dict[str, tuple[Path, dict]] = {}
    for folder in results_dirs:
        for record in read_all(folder, allow_empty=True) if Path(folder).is_dir() else []:
            if (record.get("training") or {}).get("weights_sha256") == weights_sha256:
                found.setdefault(record_filename(record), (Path(folder) / record_filename(record), record))
    return [found[name] for name in sorted(found)]


def export(run_dir: Path, out: Path, results_dirs: list[Path]) -> list[dict]:
    """Write the Hub-ready folder ``out`` of the finished run ``run_dir``; returns the records its
    card reports. ``out`` must be new or empty, and some record in ``results_dirs`` must have been
    made with the run's weights (the card reports what was measured, not what was hoped)."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / SUMMARY).is_file():
        raise ValueError(f"{run_dir} is not a finished training run (no {SUMMARY}): give the run folder a "
                         "record names as training.run_dir, e.g. checkpoints/PassagePassing/dp-c/2.5hz/<key>")
    _, summary = load_finished(run_dir)  # the weights and config are checked against their SHA-256s
    found = matching_records(summary["weights_sha256"], results_dirs)
    if not found:
        raise ValueError(f"no record in {', '.join(paths.shown(d) for d in results_dirs)} was made with the weights "
                         f"of {run_dir}: evaluate it with cfbench-eval first (or name the folder with --results-dir)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: choose a new one")
    records = [record for _, record in found]
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        atomic_write_bytes(out / name, (run_dir / POLICY_DIR / name).read_bytes())
    atomic_write_text(out / TRAINING_SUMMARY, json.dumps(summary, indent=1))
    for path, _ in found:
        atomic_write_bytes(out / RECORDS / path.name, path.read_bytes())
    atomic_write_text(out / MODEL_CARD, model_card(records, summary, out.name))
    return records


def evaluation_command(record: dict, checkpoint: str) -> list[str]:
    """The cfbench-eval command that evaluates ``checkpoint`` as ``record`` was made: the record's
    run, at its torch thread count (actions round differently at another)."""
    return [*RunSpec.from_record(record).command(record_threads(record)), "--checkpoint", checkpoint]


def model_card(records: list[dict], summary: dict, folder: str) -> str:
    """The README.md of an exported folder named ``folder``: a Hub model card."""
    first = records[0]
    env, rates = first["env_id"], rates_label(first["source_hz"])
    demos = summary.get("demo_seeds")
    trained_on = f"{demos['count']} demos (seeds {demos['first']}-{demos['last']})" if demos else "demos"
    rows = []
    for record in records:
        n_success, n = sum(row["success"] for row in record["episodes"]), len(record["episodes"])
        low, high = wilson(n_success, n)
        first_seed, end = record["provenance"]["test_seeds"]
        dirty = " (uncommitted changes)" if record["provenance"]["git_dirty"] else ""
        rows.append(f"| {format_label(record['policy'], record['variant'])} | {record['target_hz']:g} | "
                    f"{100 * n_success / n:.1f} % ({100 * low:.1f}-{100 * high:.1f}) | {n_success}/{n} | "
                    f"{first_seed}-{end - 1} | `{record['provenance']['git_commit']}`{dirty} |")
    selection = (f"those of step {summary['best_step']}, the best on the validation seeds (success "
                 f"{summary['best_score']})" if summary.get("best_step") is not None
                 else "the last step's (no validation seeds)")
    commands = [shlex.join(evaluation_command(record, folder)) for record in records]
    verifications = [shlex.join(["cfbench-leaderboard", "--verify", f"{folder}/{RECORDS}/{record_filename(record)}",
                                 "--checkpoint", folder]) for record in records]
    return "\n".join([
        "---",
        "library_name: cfbench",
        "license: mit",
        "pipeline_tag: robotics",
        "tags:",
        *[f"- {tag}" for tag in ("cfbench", "imitation-learning", "coarse-to-fine", first["policy"],
                                 env.split("/")[1].split("-v")[0])],
        "---",
        "",
        f"# {first['policy']} on {env} from {rates} Hz demos",
        "",
        f"A cfbench policy: `{first['policy']}` trained on {trained_on} of `{env}` sampled at {rates} Hz "
        f"(training seed {first['train_seed']}), judged while controlling at {first['target_hz']:g} Hz.",
        "",
        "## Results",
        "",
        "Success on the test envs with its 95 % Wilson interval, per record made with these weights "
        f"(the records are in `{RECORDS}/`):",
        "",
        "| policy | control Hz | success (95 % interval) | episodes | test seeds | commit |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "## Evaluate",
        "",
        f"From the folder that holds `{folder}`, with cfbench installed with its zoo "
        "(`pip install \"cfbench[zoo]\"`), each command re-makes one record without training:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "and each of these re-runs a record's test episodes with these weights and compares them one by one:",
        "",
        "```bash",
        *verifications,
        "```",
        "",
        "## Files",
        "",
        "| file | SHA-256 |",
        "|---|---|",
        f"| `{CONFIG_FILE}` | `{summary['config_sha256']}` |",
        f"| `{WEIGHTS_FILE}` | `{summary['weights_sha256']}` |",
        "",
        f"`{TRAINING_SUMMARY}` holds the learning and validation curves; these weights are {selection}.",
        "",
        "## Publishing",
        "",
        "cfbench never uploads. With a Hugging Face account:",
        "",
        "```bash",
        f"huggingface-cli upload USER/{folder} {folder}",
        f"huggingface-cli download USER/{folder} --local-dir {folder}     # elsewhere, then the commands above",
        "```",
        "",
    ])


# ------------------------------------------------------------ reading a folder
def load_exported(spec: RunSpec, folder: Path) -> tuple[policies.Policy, dict]:
    """The trained policy of an exported folder and its training summary, checked against the
    summary's SHA-256s and against ``spec``: the model must be the one ``spec`` would train
    (its config but for the fields training fills in and the rollout settings, which ``spec``
    sets)."""
    folder = Path(folder)
    redo = "export it again with cfbench-export"
    if not (folder / TRAINING_SUMMARY).is_file():
        raise ValueError(f"{folder} is not a folder cfbench-export wrote (no {TRAINING_SUMMARY})")
    summary = read_summary(folder / TRAINING_SUMMARY, redo)
    policy = load_checked(folder, summary, redo)
    wanted = spec.make_policy()
    if policy.name != wanted.name:
        raise ValueError(f"{folder} holds a {policy.name} checkpoint, not {wanted.name}: use --policy {policy.name}")
    fitted = policies.declared(type(policy.config), "FITTED")
    saved, built = plain(policy.config.identity()), plain(wanted.config.identity())
    differs = sorted(key for key in saved.keys() | built.keys()
                     if key not in fitted and saved.get(key) != built.get(key))
    if differs:
        shown = ", ".join(f"{key}={json.dumps(saved.get(key))}" for key in differs[:3])
        raise ValueError(f"{folder} was trained with {shown}{', ...' if len(differs) > 3 else ''}, not what this "
                         f"command sets: its model card ({folder / MODEL_CARD}) gives the command that evaluates it")
    policy.set_rollout(wanted.config.rollout())
    return policy, summary


# ------------------------------------------------------------ cfbench-export
@command("cfbench-export")
def main(argv: list[str]) -> None:
    parser = Parser("cfbench-export", "Write a trained run as a folder ready for the Hugging Face Hub: config.json, "
                                      "model.safetensors, its records and a model card.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="the trained run: a record's training.run_dir, e.g. checkpoints/<Env>/<policy>/<rates>hz/"
                             "<key>")
    parser.add_argument("out", type=Path, metavar="OUT", help="the folder to write (new or empty)")
    parser.add_argument("--results-dir", type=Path, nargs="+", default=[paths.results_dir(), paths.runs_dir()],
                        help="where to find the records made with the run's weights")
    args = parser.parse_args(argv)
    records = export(args.run_dir, args.out, args.results_dir)
    weights = sha256(args.out / WEIGHTS_FILE)
    print(f"wrote {paths.shown(args.out)}: {CONFIG_FILE}, {WEIGHTS_FILE} (SHA-256 {weights[:12]}...), "
          f"{TRAINING_SUMMARY}, {len(records)} record(s) in {RECORDS}/, {MODEL_CARD}; evaluate it with")
    for record in records:
        print("  " + shlex.join(evaluation_command(record, str(args.out))))
