"""Result records: one JSON file per evaluation run, validated on write and on read.

A record says what was measured (aggregate metrics and one row per episode) and how it was
made (git commit, command, seeds, policy config, wall times, machine), so every number on the
leaderboard can be traced to a command that reproduces it.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema

from cfbench.envs import ENV_IDS
from cfbench.eval_info import write_eval_info
from cfbench.files import atomic_write_text, exclusive
from cfbench.protocol import MAX_RATE_HZ, MIN_RATE_HZ, NAME_PATTERN, PROTOCOL, rates_label, seed_list

SCHEMA_VERSION = 2
#: a submitted file larger than this is refused before it is read (a 100-episode record is ~25 kB)
MAX_RECORD_BYTES = 5 * 1024 * 1024
#: the folder beside the records that holds their rollout GIFs, one sub-folder per record
VIDEOS = "videos"

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_SPREAD = {"type": ["object", "null"], "required": ["mean", "p90"], "additionalProperties": False,
           "properties": {"mean": {"type": "number"}, "p90": {"type": "number"}}}
RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cfbench result record",
    "type": "object",
    "required": ["schema_version", "protocol", "policy", "variant", "train_seed", "env_id", "source_hz",
                 "reference_hz", "target_hz", "metrics", "fidelity", "episodes", "provenance"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "protocol": {"type": "integer", "minimum": 0, "maximum": PROTOCOL,
                     "description": "the benchmark protocol the record was made under"},
        "train_seed": {"type": "integer", "minimum": 0, "description": "the policy's training seed (0 if untrained)"},
        "reference_hz": {"type": "number", "exclusiveMinimum": 0,
                         "description": "the rate the policy observed and replanned at: the demos' most frequent step"},
        "fidelity": {
            "type": "object",
            "description": "open-loop errors of the policy's actions along the expert's path (validation seeds)",
            "required": ["waypoint_error", "inbetween_error", "zigzag", "queries", "actions", "seeds"],
            "additionalProperties": False,
            "properties": {"waypoint_error": _SPREAD, "inbetween_error": _SPREAD, "zigzag": _SPREAD,
                           "waypoint_error_by_step": {
                               "type": "array", "items": {"type": "number", "minimum": 0},
                               "description": "mean waypoint error 1, 2, ... source steps after the query"},
                           "queries": {"type": "integer", "minimum": 0}, "actions": {"type": "integer", "minimum": 0},
                           "seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}},
        },
        "policy": {"type": "string", "pattern": NAME_PATTERN},
        "variant": {"anyOf": [{"const": ""}, {"type": "string", "pattern": NAME_PATTERN}],
                    "description": "label distinguishing runs of one policy ('' for the default)"},
        "privileged": {"type": "boolean"},
        "env_id": {"type": "string", "pattern": "^cfbench/[A-Za-z]+-v[0-9]+$"},
        "source_hz": {"type": "array", "minItems": 1, "items": {"type": "number", "exclusiveMinimum": 0}},
        "target_hz": {"type": "number", "exclusiveMinimum": 0},
        "metrics": {
            "type": "object",
            "required": ["episodes", "success_rate", "collision_rate", "mean_steps_to_success", "path_deviation",
                         "inference_ms_per_call", "train_wall_s", "eval_wall_s"],
            "additionalProperties": False,
            "properties": {
                "episodes": {"type": "integer", "minimum": 1},
                "success_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "collision_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "mean_steps_to_success": _NUMBER_OR_NULL,
                "path_deviation": {"type": "number", "minimum": 0},
                "inference_ms_per_call": {"type": "number", "minimum": 0},
                "mean_batch_per_call": {"type": "number", "minimum": 0},
                "train_wall_s": {"type": "number", "minimum": 0},
                "eval_wall_s": {"type": "number", "minimum": 0},
            },
        },
        "training": {
            "type": "object",
            "description": "learned policies: checkpoint folder, selection and learning curves",
            "required": ["run_dir", "best_step", "best_score", "validation", "losses", "train_seconds"],
        },
        "episodes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["seed", "success", "collision", "steps", "path_deviation"],
                "additionalProperties": False,
                "properties": {
                    "seed": {"type": "integer"},
                    "success": {"type": "boolean"},
                    "collision": {"type": "boolean"},
                    "steps": {"type": "integer", "minimum": 1},
                    "path_deviation": {"type": "number", "minimum": 0},
                },
            },
        },
        "videos": {"type": "array", "items": {"type": "string", "pattern": "^videos/[^/]+/seed[0-9]+_[a-z]+\\.gif$"},
                   "description": "rollout GIFs of chosen episodes (cfbench-eval --videos), relative to the record"},
        "provenance": {
            "type": "object",
            "required": ["git_commit", "git_dirty", "command", "test_seeds", "config", "machine", "cfbench_version"],
            "properties": {
                "git_commit": {"type": "string"},
                "git_dirty": {"type": "boolean"},
                "command": {"type": "string"},
                "test_seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                "config": {"type": "object"},
                "machine": {"type": "object"},
                "cfbench_version": {"type": "string"},
            },
        },
    },
}


class RecordError(ValueError):
    """A result record that is malformed, inconsistent, or a duplicate."""


def validate(record: Any, source: str = "record", protocol: int | None = PROTOCOL) -> dict:
    """Schema check, then what a schema cannot say: the protocol asked for (None: any), every
    number finite, a registered env, rates that make sense, one row per test seed exactly, and
    aggregates that agree with the rows."""
    try:
        jsonschema.validate(record, RECORD_SCHEMA)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RecordError(f"{source}: malformed result record at {where}: {error.message}") from None
    if protocol is not None and record["protocol"] != protocol:
        raise RecordError(f"{source}: a protocol v{record['protocol']} record where protocol v{protocol} records "
                          f"belong; older records live in results/archive/protocol{record['protocol']}/ "
                          f"(cfbench-leaderboard --protocol {record['protocol']} renders such a folder)")
    where = _non_finite(record)
    if where:
        raise RecordError(f"{source}: {where} is not a finite number")
    if record["env_id"] not in ENV_IDS.values():
        raise RecordError(f"{source}: env_id {record['env_id']!r} is not a cfbench env; known: "
                          f"{', '.join(ENV_IDS.values())}")
    if max(record["source_hz"]) > record["target_hz"]:
        raise RecordError(f"{source}: source rate {rates_label(record['source_hz'])} Hz is above the target rate "
                          f"{record['target_hz']:g} Hz")
    if record["reference_hz"] not in record["source_hz"]:
        raise RecordError(f"{source}: reference rate {record['reference_hz']:g} Hz is not one of the source rates "
                          f"{rates_label(record['source_hz'])} Hz")
    rows, metrics = record["episodes"], record["metrics"]
    test_seeds = record["provenance"]["test_seeds"]
    if test_seeds[1] <= test_seeds[0] or [row["seed"] for row in rows] != seed_list(test_seeds):
        raise RecordError(f"{source}: the episode rows' seeds are not exactly the test seeds "
                          f"{test_seeds[0]}..{test_seeds[1] - 1}, one row each, in order")
    both = [row["seed"] for row in rows if row["success"] and row["collision"]]
    if both:
        raise RecordError(f"{source}: episode seed {both[0]} is marked both success and collision")
    stem = record_filename(record)[: -len(".json")]
    strays = [video for video in record.get("videos", []) if video.split("/")[1] != stem]
    if strays:
        raise RecordError(f"{source}: video {strays[0]!r} is not in the record's own folder {VIDEOS}/{stem}/")
    if metrics["episodes"] != len(rows):
        raise RecordError(f"{source}: metrics.episodes = {metrics['episodes']} but {len(rows)} episode rows")
    successes = [row["steps"] for row in rows if row["success"]]
    recomputed = {
        "success_rate": sum(row["success"] for row in rows) / len(rows),
        "collision_rate": sum(row["collision"] for row in rows) / len(rows),
        "mean_steps_to_success": sum(successes) / len(successes) if successes else None,
        "path_deviation": math.fsum(row["path_deviation"] for row in rows) / len(rows),
    }
    for key, value in recomputed.items():  # every summary number is the rows' own
        stated = metrics[key]
        if (value is None) != (stated is None) or (value is not None and not math.isclose(
                value, stated, rel_tol=1e-9, abs_tol=1e-9)):
            raise RecordError(f"{source}: metrics.{key} = {stated} disagrees with the episode rows ({value})")
    _check_rates_and_flags(record, source)
    return record


def _check_rates_and_flags(record: dict, source: str) -> None:
    """What the protocol says of rates, seeds and the privileged mark."""
    rates = record["source_hz"]
    if any(not MIN_RATE_HZ <= hz <= MAX_RATE_HZ for hz in (*rates, record["target_hz"])):
        raise RecordError(f"{source}: rates must lie between {MIN_RATE_HZ:g} and {MAX_RATE_HZ:g} Hz, got source "
                          f"{rates_label(rates)} and target {record['target_hz']:g}")
    steps = MAX_RATE_HZ / record["target_hz"]
    if abs(steps - round(steps)) > 1e-9:
        raise RecordError(f"{source}: target rate {record['target_hz']:g} Hz does not divide the {MAX_RATE_HZ:g} Hz "
                          "physics: no env runs at it")
    if list(rates) != sorted(set(rates)):
        raise RecordError(f"{source}: source_hz {rates} must list distinct rates in increasing order")
    if record.get("privileged") and ("training" in record or record["train_seed"] != 0):
        raise RecordError(f"{source}: a privileged reference is not trained: no training section, training seed 0")
    if "training" not in record and record["train_seed"] != 0:
        raise RecordError(f"{source}: training seed {record['train_seed']} without a training section")


def _non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite number in a JSON value, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}/{key}" if where else str(key))
        if found:
            return found
    return None


def make_record(spec, policy, reference_hz: float, outcome: dict, fidelity: dict, training: dict | None, *,
                command: list[str], videos: list[str] | None = None) -> dict:
    """The record of one run (``spec``: its ``cfbench.app.spec.RunSpec``): the evaluator's
    ``outcome`` (metrics and episode rows), the open-loop ``fidelity``, the training summary of a
    learned policy (None for the Tracker) and how it all was made."""
    metrics = {**outcome["metrics"], "train_wall_s": training["train_seconds"] if training else 0.0}
    record = {
        "schema_version": SCHEMA_VERSION,
        "protocol": PROTOCOL,
        "policy": policy.name,
        "variant": spec.variant,
        "train_seed": spec.train_seed,
        "privileged": policy.privileged,
        "env_id": spec.env_id,
        "source_hz": list(spec.rates),
        "reference_hz": reference_hz,
        "target_hz": spec.target_hz,
        "metrics": metrics,
        "fidelity": fidelity,
        "episodes": outcome["episodes"],
        **({"training": training} if training else {}),
        **({"videos": videos} if videos else {}),
        "provenance": provenance(command, spec.tested_seeds, policy.config.to_dict()),
    }
    return validate(record)


def run_key(record: dict) -> tuple:
    """Two records with the same key describe the same experiment: only one may be kept."""
    return (
        record["policy"],
        record["variant"],
        record["train_seed"],
        record["env_id"],
        tuple(record["source_hz"]),
        record["target_hz"],
        tuple(record["provenance"]["test_seeds"]),
    )


def format_label(policy: str, variant: str) -> str:
    """A (policy, variant) as people read and type it, on the page, in ``--compare`` and in
    ``cfbench-figure``: 'dp-t (straight)', or 'dp-t' for the policy's own configuration."""
    return f"{policy} ({variant})" if variant else policy


#: a label: a policy name, then optionally a variant name in brackets (names hold neither spaces
#: nor brackets, so the split needs no registry)
_LABEL = re.compile(r"(?P<policy>{name})(?: \((?P<variant>{name})\))?".format(name=NAME_PATTERN.strip("^$")))


def parse_label(label: str) -> tuple[str, str]:
    """``format_label`` read back: 'dp-t (straight)' -> ('dp-t', 'straight'); 'dp-t' -> ('dp-t', '')."""
    match = _LABEL.fullmatch(label)
    if match is None:
        raise ValueError(f"bad policy label {label!r}: write POLICY or 'POLICY (VARIANT)', e.g. dp-t or "
                         "'tracker (smooth)'")
    return match["policy"], match["variant"] or ""


def record_stem(policy: str, variant: str, env_id: str, rates, target_hz: float, test_seeds, train_seed: int) -> str:
    """A record's file name without ``.json``: also the name of its videos' folder. It names the
    pair ``policy-variant``: a file name, not a label (no spaces or brackets); people read and
    type ``format_label``'s."""
    env = env_id.split("/")[1].split("-v")[0]
    name = policy + (f"-{variant}" if variant else "")
    seeds = "-".join(str(s) for s in test_seeds)
    return f"{env}__{name}__{rates_label(rates)}hz__to{target_hz:g}hz__seeds{seeds}__train{train_seed}"


def record_filename(record: dict) -> str:
    return record_stem(record["policy"], record["variant"], record["env_id"], record["source_hz"],
                       record["target_hz"], record["provenance"]["test_seeds"], record["train_seed"]) + ".json"


def write_record(record: dict, results_dir: str | Path, *, neutral: dict | None = None) -> Path:
    """Validate, then write atomically to the record's canonical file name under the folder's
    lock, with its LeRobot-style eval_info.json (``cfbench.eval_info``). A re-run of an experiment
    with the same config replaces its record; one whose config differs is refused: it is another
    experiment and needs its own variant name. ``neutral``: the policy config's ``NEUTRAL``
    values, which a field added since the record was made ran as."""
    validate(record)
    results_dir = Path(results_dir)
    path = results_dir / record_filename(record)
    with exclusive(results_dir):
        if path.exists():
            _check_same_config(read_record(path), record, path, neutral)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        write_eval_info(record, path)
    return path


def check_writable(results_dir: str | Path) -> None:
    """A results folder a run can write into (or make), or an error naming it and the way out:
    asked before a run trains, not after; nothing is left behind by asking."""
    results_dir = Path(results_dir).absolute()
    existing = next(folder for folder in (results_dir, *results_dir.parents) if folder.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-").close()
    except OSError as error:
        raise RecordError(f"results folder {results_dir} is not writable ({error.strerror or error}); "
                          "choose another with --results-dir") from None


def check_replaceable(path: str | Path, config: dict, neutral: dict | None = None) -> None:
    """Whether a run with this policy config may write ``path``: it may replace a record of the
    same experiment run with the same config, never one with another (asked before anything of
    the run, its GIFs included, is written)."""
    path = Path(path)
    if path.exists():
        _check_same_config(read_record(path, protocol=None), {"provenance": {"config": config}}, path, neutral)


def _check_same_config(existing: dict, record: dict, path: Path, neutral: dict | None) -> None:
    old, new = existing["provenance"]["config"], json.loads(json.dumps(record["provenance"]["config"]))
    neutral = json.loads(json.dumps(neutral or {}, default=list))  # a field added since ``old`` was made ran at this
    old, new = {**neutral, **old}, {**neutral, **new}
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if changed:
        shown = ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:3])
        raise RecordError(
            f"{path} records this experiment with another config ({shown}{', ...' if len(changed) > 3 else ''}); "
            "name this configuration with --variant, or write to another --results-dir")


def archive_dir(results_dir: str | Path, protocol: int = PROTOCOL) -> Path:
    """Where a results folder keeps the records (and page) of the protocol before ``protocol``."""
    return Path(results_dir) / "archive" / f"protocol{protocol - 1}"


def read_record(path: str | Path, protocol: int | None = PROTOCOL) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such result file")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise RecordError(f"{path}: {path.stat().st_size} bytes, more than a result record can be "
                          f"({MAX_RECORD_BYTES // 2**20} MB)")
    try:
        record = json.loads(path.read_text(), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not valid JSON (truncated or corrupted?): {error}") from None
    except ValueError as error:  # a duplicate key, an integer of thousands of digits
        raise RecordError(f"{path}: {error}") from None
    except RecursionError:
        raise RecordError(f"{path}: nested too deeply to be a result record") from None
    return validate(record, str(path), protocol)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    doubled = sorted({key for key in keys if keys.count(key) > 1})
    if doubled:
        raise ValueError(f"key {doubled[0]!r} appears twice in one object (which one counts?)")
    return dict(pairs)


def read_all(results_dir: str | Path, *, allow_empty: bool = False, protocol: int | None = PROTOCOL) -> list[dict]:
    """Every record in ``results_dir``; malformed files, records of another protocol or files not
    named by what they hold (so no experiment twice) raise RecordError, and so does a folder that
    does not exist or (unless allowed) holds no record."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RecordError(f"results folder {results_dir} does not exist")
    records = []
    for path in sorted(results_dir.glob("*.json")):
        record = read_record(path, protocol)
        if path.name != record_filename(record):  # the name is the run key: no two files hold one experiment
            raise RecordError(f"{path}: the file records {record_filename(record)} (its name must say what it "
                              "holds; cfbench-leaderboard --submit names files)")
        records.append(record)
    if not records and not allow_empty:
        raise RecordError(f"results folder {results_dir} holds no result records (*.json)")
    return records


#: beside the records of a results folder: which of them were re-run episode by episode
#: (``cfbench-leaderboard --verify``), one JSON object per line
VERIFIED_FILE = "verified.jsonl"


def record_sha256(record: dict) -> str:
    """The SHA-256 of a record's content (its canonical JSON): a verification holds for these exact
    numbers only, so a record edited after it was verified loses its mark."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_verified(results_dir: str | Path) -> dict[str, dict]:
    """Record file name -> its verification (date, commit, the checkpoint's and the record's
    SHA-256), if any."""
    path = Path(results_dir) / VERIFIED_FILE
    if not path.is_file():
        return {}
    try:
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {entry["record"]: entry for entry in entries}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise RecordError(f"{path} is not a verification list ({error}); restore it from git") from None


#: set to say what else ran on the machine (timings in the record depend on it)
SHARED_WITH_VARIABLE = "CFBENCH_SHARED_WITH"


def provenance(command: list[str], test_seeds: tuple[int, int], config: dict) -> dict:
    """How a record was made; ``shared_with`` is ``$CFBENCH_SHARED_WITH`` (what else ran), and the
    machine's load average at the end of the run says whether anything did."""
    import os

    from cfbench import __version__

    return {
        **code_version(),
        "command": " ".join(command),
        "test_seeds": list(test_seeds),
        "config": config,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": _cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "shared_with": os.environ.get(SHARED_WITH_VARIABLE, ""),
        # learned policies' actions round differently at another thread count: a re-run matches
        # episode for episode only at the same one (cfbench-leaderboard --verify uses it)
        **({"torch_threads": sys.modules["torch"].get_num_threads()} if "torch" in sys.modules else {}),
        "cfbench_version": __version__,
    }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: what runs write into a checkout: changes there say nothing about the code that made a record
#: (the rollout choices are measured settings, and a record's config says which ones it ran)
GENERATED = ("results", "leaderboard.md", "policies/rollout_choices.json", "docs/rollout-choices.md")


def code_version() -> dict[str, Any]:
    """The commit the code runs from, and whether tracked files differ from it (``code_dirty``)."""
    return {"git_commit": _git("rev-parse", "HEAD") or "unknown", "git_dirty": code_dirty()}


def commit_label(made: dict) -> str:
    """A ``git_commit`` / ``git_dirty`` pair as pages show it: 10 characters, ``+dirty``."""
    return made["git_commit"][:10] + ("+dirty" if made["git_dirty"] else "")


def model_commit(record: dict) -> str:
    """The commit that trained a learned record's model (a model from the checkpoint cache may be
    older than the record); "not recorded" for models trained before summaries named it."""
    training = record["training"]
    return commit_label(training["trained_at"]) if "trained_at" in training else "not recorded"


def code_dirty(cwd: Path | None = None) -> bool:
    """Whether tracked files other than the generated outputs differ from the commit: one run's
    leaderboard must not mark the next run's record as made by modified code."""
    excluded = [f":(top,exclude){path}" for path in GENERATED]
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excluded, cwd=cwd))


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                             cwd=cwd or Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()
