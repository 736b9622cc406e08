"""Processes that share a folder take turns: every record ends up on the leaderboard, every
dataset in the manifest, and nothing crashes."""

import json
import multiprocessing

from cfbench.leaderboard.regenerate import regenerate
from cfbench.protocol import PROTOCOL
from cfbench.results import read_all, write_record


def _record(policy: str) -> dict:
    rows = [{"seed": 20000 + i, "success": i % 2 == 0, "collision": i % 2 == 1, "steps": 40, "path_deviation": 1.0}
            for i in range(100)]
    return {
        "schema_version": 2, "protocol": PROTOCOL, "policy": policy, "variant": "", "train_seed": 0,
        "privileged": False,
        "env_id": "cfbench/PassagePassing-v0", "source_hz": [2.5], "reference_hz": 2.5, "target_hz": 20.0,
        "fidelity": {"waypoint_error": None, "inbetween_error": None, "zigzag": None, "queries": 0, "actions": 0,
                     "seeds": [10000, 10050]},
        "metrics": {"episodes": 100, "success_rate": 0.5, "collision_rate": 0.5, "mean_steps_to_success": 40.0,
                    "path_deviation": 1.0, "inference_ms_per_call": 0.1, "train_wall_s": 0.0, "eval_wall_s": 1.0},
        "episodes": rows,
        "provenance": {"git_commit": "abc", "git_dirty": False, "command": "test", "test_seeds": [20000, 20100],
                       "config": {"policy": policy}, "machine": {}, "cfbench_version": "0.1.0"},
    }


def _evaluations(results_dir: str, prefix: str, count: int) -> None:
    """What cfbench-eval does after each run: write its record, then redraw the leaderboard."""
    for i in range(count):
        write_record(_record(f"{prefix}{i}"), results_dir)
        regenerate(results_dir, f"{results_dir}/../leaderboard.md")


def _generate(demos_dir: str, rate: float) -> None:
    from cfbench.demos import write_dataset

    write_dataset("PassagePassing", (rate,), 2, demos_dir=demos_dir)


def _run_side_by_side(target, args_a, args_b) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each, as two commands would be
    workers = [context.Process(target=target, args=args) for args in (args_a, args_b)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0]


def test_two_evaluations_into_one_results_folder_leave_a_complete_leaderboard(tmp_path):
    results = tmp_path / "results"
    _run_side_by_side(_evaluations, (str(results), "a", 6), (str(results), "b", 6))
    board = (tmp_path / "leaderboard.md").read_text()
    assert len(read_all(results)) == 12
    assert all(f"| {p}{i} " in board for p in "ab" for i in range(6))


def test_two_demo_generations_into_one_folder_keep_both_datasets(tmp_path):
    for _ in range(2):  # the same dataset twice, and two different ones, at once
        _run_side_by_side(_generate, (str(tmp_path), 10.0), (str(tmp_path), 10.0))
        _run_side_by_side(_generate, (str(tmp_path), 5.0), (str(tmp_path), 20.0))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest) == [f"cfbench/passage-passing/expert-{hz}hz-v0" for hz in ("10", "20", "5")]
    from cfbench.demos import verify

    for ds_id in manifest:
        verify(tmp_path, ds_id)  # every file matches its checksum
