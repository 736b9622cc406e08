import copy
import json

import pytest

from cfbench.leaderboard import main as leaderboard_main
from cfbench.leaderboard import regenerate, render_markdown, submit
from cfbench.results import RecordError, read_all, read_record, validate, write_record


def _record(policy="tracker", rate=2.5, successes=(True, False, True)):
    rows = [
        {"seed": 20000 + i, "success": s, "collision": not s, "steps": 40 + i, "path_deviation": 1.5}
        for i, s in enumerate(successes)
    ]
    return {
        "schema_version": 1,
        "policy": policy,
        "variant": "",
        "privileged": policy == "tracker",
        "env_id": "cfbench/PassagePassing-v0",
        "source_hz": [rate],
        "target_hz": 20.0,
        "metrics": {
            "episodes": len(rows),
            "success_rate": sum(successes) / len(rows),
            "collision_rate": 1 - sum(successes) / len(rows),
            "mean_steps_to_success": 41.0,
            "path_deviation": 1.5,
            "inference_ms_per_call": 0.1,
            "mean_batch_per_call": 3.0,
            "train_wall_s": 0.0,
            "eval_wall_s": 1.0,
        },
        "episodes": rows,
        "provenance": {
            "git_commit": "abc123",
            "git_dirty": False,
            "command": "cfbench-eval --policy tracker",
            "test_seeds": [20000, 20003],
            "config": {"policy": policy},
            "machine": {"cpu_count": 2},
            "cfbench_version": "0.1.0",
        },
    }


def _broken(mutate):
    record = copy.deepcopy(_record())
    mutate(record)
    return record


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("metrics"), "'metrics' is a required property"),
        (lambda r: r["metrics"].update(success_rate=1.5), "metrics/success_rate"),
        (lambda r: r["metrics"].update(success_rate=1.0), "disagrees with the episode rows"),
        (lambda r: r["metrics"].update(episodes=7), "episode rows"),
        (lambda r: r.update(env_id="PassagePassing"), "env_id"),
        (lambda r: r["episodes"][0].update(steps="many"), "episodes/0/steps"),
        (lambda r: r["episodes"][1].update(seed=20000), "seeds repeat"),
        (lambda r: r.update(extra=1), "Additional properties"),
    ],
)
def test_malformed_records_are_rejected_with_the_reason(mutate, message):
    with pytest.raises(RecordError, match=message):
        validate(_broken(mutate))


def test_write_read_round_trip_is_atomic(tmp_path):
    path = write_record(_record(), tmp_path)
    assert read_record(path) == _record()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind
    with pytest.raises(RecordError):
        write_record(_broken(lambda r: r.pop("episodes")), tmp_path)
    assert read_record(path) == _record()  # a rejected write leaves the old record intact


def test_truncated_file_is_rejected(tmp_path):
    path = write_record(_record(), tmp_path)
    path.write_text(path.read_text()[:200])
    with pytest.raises(RecordError, match="not valid JSON"):
        read_all(tmp_path)


def test_leaderboard_is_idempotent_and_rejects_duplicates(tmp_path):
    results = tmp_path / "results"
    write_record(_record(rate=2.5), results)
    write_record(_record(rate=20.0, successes=(True, True, True)), results)
    output = tmp_path / "leaderboard.md"
    regenerate(results, output)
    text, plot = output.read_text(), (results / "plots" / "PassagePassing.png").read_bytes()
    assert "| tracker †" in text and "67 (33)" in text and "100 (0)" in text
    regenerate(results, output)
    assert output.read_text() == text and (results / "plots" / "PassagePassing.png").read_bytes() == plot

    duplicate = tmp_path / "mine.json"
    duplicate.write_text(json.dumps(_record(rate=2.5)))
    with pytest.raises(RecordError, match="duplicates an experiment"):
        submit(duplicate, results)
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps(_record(policy="dp-c", rate=2.5)))
    submit(fresh, results)
    assert "| dp-c " in render_markdown(read_all(results))
    (results / "copy.json").write_text(json.dumps(_record(rate=2.5)))
    with pytest.raises(RecordError, match="duplicates the experiment"):
        read_all(results)


def test_leaderboard_cli_reports_malformed_submission(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(lambda r: r.pop("provenance"))))
    with pytest.raises(SystemExit) as exit_info:
        leaderboard_main(["--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "lb.md"),
                          "--submit", str(bad)])
    assert exit_info.value.code == 2
    assert "'provenance' is a required property" in capsys.readouterr().err
    assert not (tmp_path / "lb.md").exists()


def test_committed_leaderboard_matches_results():
    """leaderboard.md is generated from results/, never edited by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert (root / "leaderboard.md").read_text() == render_markdown(read_all(root / "results"))


def test_only_code_changes_make_a_checkout_dirty(tmp_path):
    import subprocess

    from cfbench.results import code_dirty

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "pkg").mkdir()
    for name in ("pkg/code.py", "results/run.json", "leaderboard.md"):
        (tmp_path / name).write_text("v1")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results" / "run.json").write_text("v2")
    (tmp_path / "leaderboard.md").write_text("v2")
    assert not code_dirty(tmp_path / "pkg")  # an earlier run's outputs
    (tmp_path / "pkg" / "code.py").write_text("v2")
    assert code_dirty(tmp_path / "pkg")
