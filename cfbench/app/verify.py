"""Verification: re-run a record's test episodes with the checkpoint it names and compare them
episode by episode (``cfbench-leaderboard --verify``); a verified record is marked on the board.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import policies
from cfbench.app.cache import POLICY_DIR, sha256
from cfbench.cli import set_threads
from cfbench.evaluate import evaluate
from cfbench.files import atomic_write_text, exclusive
from cfbench.protocol import seed_list
from cfbench.results import VERIFIED_FILE, RecordError, provenance, read_record, read_verified, record_sha256
from policies.base import WEIGHTS_FILE, plain

#: path deviations of a re-run may differ by float rounding across machines, never more
DEVIATION_TOLERANCE = 1e-6


def record_threads(record: dict) -> int | None:
    """The torch threads a record was made with: its provenance's, or its command's --threads."""
    provenance = record["provenance"]
    if "torch_threads" in provenance:
        return provenance["torch_threads"]
    words = provenance["command"].split()
    return int(words[words.index("--threads") + 1]) if "--threads" in words[:-1] else None


def verify_record(path: Path, checkpoint: Path | None = None, num_envs: int = 10, progress: bool = True,
                  threads: int | None = None) -> dict:
    """Re-run a record's test episodes with the checkpoint it names by SHA-256 (the privileged
    references need none) and compare them episode by episode, at the torch thread count the
    record was made with (another rounds differently; ``threads`` overrides); a ValueError says
    what differs."""
    record = read_record(path, protocol=None)
    threads = set_threads(threads or record_threads(record))
    config = record["provenance"]["config"]
    cls = policies.policy_class(record["policy"])
    if cls.trainable:
        expected = (record.get("training") or {}).get("weights_sha256")
        if expected is None:
            raise ValueError(f"{path} names no checkpoint by its SHA-256 (records made before they did cannot be "
                             "verified): re-run it")
        if checkpoint is None:
            raise ValueError(f"{path} is of a learned policy: give its checkpoint with --checkpoint DIR (the run's "
                             f"policy/ folder, {record['training']['run_dir']}/{POLICY_DIR})")
        weights = Path(checkpoint) / WEIGHTS_FILE
        if not weights.is_file() or sha256(weights) != expected:
            raise ValueError(f"{weights} is missing or not the checkpoint {path.name} was evaluated with (SHA-256 "
                             f"{expected[:12]}...)")
        policy = policies.load(checkpoint)
        policy.set_rollout({key: config[key] for key in policy.config.rollout_fields() if key in config})
        # both read as saved configs: retired and later-added fields at their neutral values
        loaded, recorded = (plain(values) for values in (
            policy.config.to_dict(), cls.config_class.from_saved(config).to_dict()))
        differs = sorted(key for key in loaded.keys() | recorded.keys() if loaded.get(key) != recorded.get(key))
        if differs:
            raise ValueError(f"the checkpoint's config differs from the record's in {', '.join(differs[:3])}")
    else:
        policy = cls(cls.config_class.from_saved(config))
    seeds = seed_list(tuple(record["provenance"]["test_seeds"]))
    outcome = evaluate(policy, record["env_id"], record["reference_hz"], target_hz=record["target_hz"], seeds=seeds,
                       num_envs=num_envs, progress=progress, desc="verification")
    differing = [mine["seed"] for mine, again in zip(record["episodes"], outcome["episodes"])
                 if any(mine[key] != again[key] for key in ("seed", "success", "collision", "steps"))
                 or abs(mine["path_deviation"] - again["path_deviation"]) > DEVIATION_TOLERANCE]
    if differing:
        recorded = record_threads(record) or "an unrecorded number of"
        raise ValueError(f"{path.name} does not reproduce at {threads} torch thread(s): {len(differing)} of "
                         f"{len(seeds)} test episodes differ (seeds {', '.join(map(str, differing[:5]))}"
                         f"{', ...' if len(differing) > 5 else ''}; the record ran at {recorded} thread(s))")
    made = provenance(["cfbench-leaderboard", "--verify", path.name], tuple(record["provenance"]["test_seeds"]), {})
    return {"record": path.name, "record_sha256": record_sha256(record), "episodes": len(seeds),
            "weights_sha256": (record.get("training") or {}).get("weights_sha256"),
            "git_commit": made["git_commit"], "git_dirty": made["git_dirty"],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def mark_verified(results_dir: Path, verification: dict) -> Path:
    """Add (or replace) a record's verification in the folder's ``verified.jsonl``, atomically."""
    path = Path(results_dir) / VERIFIED_FILE
    with exclusive(results_dir):
        entries = {entry["record"]: entry for entry in read_verified(results_dir).values()}
        entries[verification["record"]] = verification
        atomic_write_text(path, "".join(json.dumps(entries[name], sort_keys=True) + "\n" for name in sorted(entries)))
    return path


def check_against_registry(record: dict, source: str) -> None:
    """What only the zoo knows: a registered policy's privileged mark is its class's (a learner
    marked privileged, or the Tracker unmarked, would move a row in or out of the indicators)."""
    if record["policy"] in policies.available():
        privileged = policies.policy_class(record["policy"]).privileged
        if record.get("privileged", False) != privileged:
            raise RecordError(f"{source}: {record['policy']} records are {'' if privileged else 'not '}privileged, "
                              f"this one says privileged: {record.get('privileged', False)}")
