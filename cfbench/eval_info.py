"""A result record as LeRobot's ``eval_info.json``, so a LeRobot user's scripts read cfbench
runs as they read ``lerobot-eval``'s output.

The layout is ``lerobot-eval``'s: ``per_task`` (one entry per task: its per-episode metric
lists, counts and rate), ``per_group`` (one entry per suite) and ``overall``, each with
``n_episodes``, ``n_success``, ``pc_success`` and ``pc_success_ci95`` (the 95 % Wilson interval
in percent, as LeRobot reports it since it added counts and intervals). A record is one task: its
env is the group (``task_group``, e.g. ``PassagePassing``) and task 0 of it; ``per_episode``
lists each test episode as ``eval_policy`` does. An episode's reward is 1 on success and 0
otherwise (the envs' reward), so ``sum_reward`` and ``max_reward`` are its success.

It is derived from the record alone (one source of truth): ``results/eval_info/<record
name>/eval_info.json``, written with the record (``cfbench.results.write_record``) and again by
every regeneration of the leaderboard; video paths are relative to the file. The ``cfbench``
entry names the record it was made from.
"""

from __future__ import annotations

import json
from pathlib import Path

from cfbench.files import write_if_changed
from cfbench.stats import wilson

#: the folder beside the records that holds their eval_info.json, one sub-folder per record
EVAL_INFO = "eval_info"
EVAL_INFO_FILE = "eval_info.json"


def success_summary(successes: list[bool]) -> dict:
    """Counts, rate and 95 % Wilson interval in percent: the keys LeRobot reports at every level."""
    n_success, n_episodes = sum(successes), len(successes)
    low, high = wilson(n_success, n_episodes)
    return {"n_episodes": n_episodes, "n_success": n_success, "pc_success": 100 * n_success / n_episodes,
            "pc_success_ci95": [100 * low, 100 * high]}


def eval_info(record: dict, record_name: str) -> dict:
    """The record (its file named ``record_name``) in ``lerobot-eval``'s ``eval_info.json`` layout."""
    rows = record["episodes"]
    successes = [row["success"] for row in rows]
    rewards = [float(success) for success in successes]
    # the record lists its videos relative to the results folder; this file is two folders down
    videos = [f"../../{video}" for video in record.get("videos", [])]
    group = record["env_id"].split("/")[1].split("-v")[0]
    summary = success_summary(successes)
    rewards_summary = {"avg_sum_reward": sum(rewards) / len(rewards), "avg_max_reward": sum(rewards) / len(rewards)}
    eval_s = record["metrics"]["eval_wall_s"]
    return {
        "per_task": [{
            "task_group": group,
            "task_id": 0,
            "metrics": {"sum_rewards": rewards, "max_rewards": rewards, "successes": successes, "video_paths": videos},
            **summary,
            "per_episode": [{"episode_ix": index, "sum_reward": reward, "max_reward": reward,
                             "success": row["success"], "seed": row["seed"]}
                            for index, (row, reward) in enumerate(zip(rows, rewards))],
        }],
        "per_group": {group: {**rewards_summary, **summary, "video_paths": videos}},
        "overall": {**rewards_summary, **summary, "eval_s": eval_s, "eval_ep_s": eval_s / len(rows),
                    "video_paths": videos},
        "cfbench": {"record": record_name, "policy": record["policy"], "variant": record["variant"],
                    "env_id": record["env_id"], "source_hz": record["source_hz"], "target_hz": record["target_hz"],
                    "train_seed": record["train_seed"], "test_seeds": record["provenance"]["test_seeds"]},
    }


def eval_info_path(record_path: Path) -> Path:
    """Where the eval_info.json of the record at ``record_path`` goes."""
    record_path = Path(record_path)
    return record_path.parent / EVAL_INFO / record_path.stem / EVAL_INFO_FILE


def write_eval_info(record: dict, record_path: Path) -> Path:
    """Write (atomically, only if it changed) the eval_info.json of the record at ``record_path``."""
    path = eval_info_path(record_path)
    write_if_changed(path, (json.dumps(eval_info(record, Path(record_path).name), indent=2) + "\n").encode())
    return path

