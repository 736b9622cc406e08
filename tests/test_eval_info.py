"""Each record's LeRobot-style eval_info.json: written beside it by a run and by the leaderboard,
and saying exactly what the record says."""

import json

import pytest

from cfbench.app.run import run
from cfbench.app.spec import RunSpec
from cfbench.eval_info import EVAL_INFO, eval_info_path, success_summary
from cfbench.leaderboard.regenerate import regenerate
from cfbench.stats import wilson


def test_the_summary_is_lerobots_counts_rate_and_wilson_interval():
    summary = success_summary([True] * 9 + [False])  # LeRobot's own example: 9 of 10
    assert summary["n_episodes"] == 10 and summary["n_success"] == 9 and summary["pc_success"] == 90.0
    assert [round(bound, 2) for bound in summary["pc_success_ci95"]] == [59.58, 98.21]
    assert success_summary([False] * 4)["pc_success_ci95"] == [0.0, pytest.approx(100 * wilson(0, 4)[1])]


def test_a_runs_eval_info_is_its_record_in_lerobots_layout(tmp_path):
    results = tmp_path / "results"
    record, path = run(RunSpec("tracker", "PassagePassing", (5.0,), episodes=4), num_envs=4, videos=1,
                       results_dir=results, progress=False)
    info_path = results / EVAL_INFO / path.stem / "eval_info.json"
    assert eval_info_path(path) == info_path
    info = json.loads(info_path.read_text())
    rows = record["episodes"]
    assert 0 < record["metrics"]["success_rate"] < 1
    n_success = sum(row["success"] for row in rows)
    low, high = wilson(n_success, len(rows))
    expected = {"n_episodes": len(rows), "n_success": n_success, "pc_success": 100 * n_success / len(rows),
                "pc_success_ci95": [100 * low, 100 * high]}
    (task,) = info["per_task"]
    for level in (task, info["per_group"]["PassagePassing"], info["overall"]):
        assert {key: level[key] for key in expected} == expected
    assert (task["task_group"], task["task_id"]) == ("PassagePassing", 0)
    assert [(e["seed"], e["success"], e["sum_reward"]) for e in task["per_episode"]] == [
        (row["seed"], row["success"], float(row["success"])) for row in rows]
    assert task["metrics"]["successes"] == [row["success"] for row in rows]
    assert info["overall"]["eval_s"] == record["metrics"]["eval_wall_s"]
    assert info["cfbench"]["record"] == path.name
    assert record["videos"] and [(info_path.parent / video).resolve() for video in info["overall"]["video_paths"]] == [
        (results / video).resolve() for video in record["videos"]]
    assert all((info_path.parent / video).is_file() for video in task["metrics"]["video_paths"])

    # the leaderboard rewrites it from the record: untouched when current, restored when gone
    written = info_path.stat().st_mtime_ns
    regenerate(results, tmp_path / "lb.md")
    assert info_path.stat().st_mtime_ns == written
    info_path.unlink()
    regenerate(results, tmp_path / "lb.md")
    assert json.loads(info_path.read_text()) == info
