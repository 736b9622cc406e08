"""Pictures of what policies do: rollout GIFs (``cfbench-eval --videos``) and ``cfbench-figure``."""

import json
import shutil

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

import policies
from cfbench.app.commands import split_label
from cfbench.app.figure import main as figure_main
from cfbench.app.run import run
from cfbench.app.spec import RunSpec
from cfbench.evaluate import evaluate
from cfbench.leaderboard.submission import submit
from cfbench.results import RecordError
from cfbench.videos import chosen, replay_frames

EPISODES = 4  # PassagePassing's Tracker from 2.5 Hz fails all four, from 20 Hz succeeds in all


def _run(results_dir, videos, hz=2.5, vector="sync"):
    return run(RunSpec("tracker", "PassagePassing", (hz,), episodes=EPISODES), num_envs=2, videos=videos,
               vector=vector, results_dir=results_dir, progress=False)


def test_gifs_have_one_frame_per_step_plus_the_start_and_are_listed_in_the_record(tmp_path):
    record, path = _run(tmp_path, videos=1, hz=20)
    rows = {row["seed"]: row for row in record["episodes"]}
    assert all(row["success"] for row in rows.values())
    assert record["videos"] == [f"videos/{path.stem}/seed20000_success.gif"]  # no failure to add
    frames = iio.imread(tmp_path / record["videos"][0])
    assert frames.shape == (rows[20000]["steps"] + 1, 384, 384, 3)
    assert not (tmp_path / "videos" / f"{path.stem}.partial").exists()


def test_the_first_n_episodes_and_the_first_n_failures_after_them_are_kept(tmp_path):
    record, path = _run(tmp_path, videos=1)
    assert not any(row["success"] for row in record["episodes"])
    assert [p.split("/")[-1] for p in record["videos"]] == ["seed20000_collision.gif", "seed20001_collision.gif"]
    assert sorted(p.name for p in (tmp_path / "videos" / path.stem).iterdir()) == sorted(
        p.split("/")[-1] for p in record["videos"])
    assert chosen([{"seed": s, "success": s % 3 == 0} for s in range(9, -1, -1)], 2) == [
        {"seed": 0, "success": True}, {"seed": 1, "success": False},
        {"seed": 2, "success": False}, {"seed": 4, "success": False}]


def test_rendering_is_deterministic_and_changes_nothing_measured(tmp_path):
    first, _ = _run(tmp_path / "a", videos=1)
    second, _ = _run(tmp_path / "b", videos=1, vector="async")
    assert first["videos"] == second["videos"]
    for video in first["videos"]:
        assert (tmp_path / "a" / video).read_bytes() == (tmp_path / "b" / video).read_bytes()
    plain, _ = _run(tmp_path / "c", videos=0)
    assert "videos" not in plain and not (tmp_path / "c" / "videos").exists()
    assert plain["episodes"] == first["episodes"]


def test_a_replay_that_ends_differently_is_an_error():
    policy = policies.make("tracker")
    row = evaluate(policy, "PassagePassing", 20, seeds=[20000], num_envs=1, progress=False, traces=True)["episodes"][0]
    assert len(replay_frames("cfbench/PassagePassing-v0", 20, row)) == row["steps"] + 1
    row["actions"] = row["actions"] + np.array([0.0, 15.0])
    with pytest.raises(RuntimeError, match="ended differently"):
        replay_frames("cfbench/PassagePassing-v0", 20, row)


def test_annotated_frames_draw_the_path_and_targets_over_the_scene():
    env = gym.make("cfbench/PassagePassing-v0", render_mode="rgb_array")
    env.reset(seed=20000)
    expert = env.unwrapped.expert_trajectory().poses
    plain = env.render()
    annotated = env.unwrapped.render_annotated(path=expert[:, :2], targets=expert[::10])
    assert annotated.shape == plain.shape and (annotated != plain).any(axis=-1).sum() > 100
    assert np.array_equal(env.unwrapped.render_annotated(path=expert[:, :2], targets=expert[::10]), annotated)
    env.close()
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        gym.make("cfbench/PassagePassing-v0").unwrapped.render_annotated()


def test_submitting_a_record_copies_its_videos_or_refuses_when_they_are_missing(tmp_path):
    record, path = _run(tmp_path / "runs", videos=1)
    published = tmp_path / "results"
    submit([path], published)
    for video in record["videos"]:
        assert (published / video).read_bytes() == (tmp_path / "runs" / video).read_bytes()
    shutil.rmtree(tmp_path / "runs" / "videos")
    with pytest.raises(RecordError, match="lists videos that are not beside it"):
        submit([path], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_a_submission_copies_only_regular_files_from_the_records_own_video_folder(tmp_path):
    """A record's video list used to be trusted: a link to a system file was copied into the
    results folder, and videos/../x.gif landed outside videos/."""
    record, path = _run(tmp_path / "runs", videos=1, hz=20)
    gif = tmp_path / "runs" / record["videos"][0]
    gif.unlink()
    gif.symlink_to("/etc/hostname")
    with pytest.raises(RecordError, match="videos that are links, not files"):
        submit([path], tmp_path / "published")
    for stray in ("videos/../seed20000_success.gif", f"videos/{path.stem}x/seed20000_success.gif"):
        forged = {**record, "videos": [stray]}
        (tmp_path / "forged").mkdir(exist_ok=True)
        (tmp_path / "forged" / path.name).write_text(json.dumps(forged))
        with pytest.raises(RecordError, match="is not in the record's own folder"):
            submit([tmp_path / "forged" / path.name], tmp_path / "published")
    assert not (tmp_path / "published").exists() and not (tmp_path / "seed20000_success.gif").exists()


def test_figure_for_the_tracker_needs_no_training(tmp_path, capsys):
    out = tmp_path / "fig.png"
    figure_main(["--env", "ClampPassing", "--policies", "tracker", "--out", str(out)])
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert "wrote" in capsys.readouterr().out
    assert not (tmp_path / "checkpoints").exists()
    figure_main(["--env", "ClampPassing", "--policies", "tracker", "--out", str(tmp_path / "again.png")])
    assert (tmp_path / "again.png").read_bytes() == out.read_bytes()  # deterministic for a seed


def test_figure_names_policies_as_the_leaderboard_does(capsys):
    assert split_label("dispo (paper-no-ft)") == ("dispo", "paper-no-ft")
    assert split_label("dp-t") == ("dp-t", "")
    with pytest.raises(ValueError, match="unknown policy 'dispo-paper'"):
        split_label("dispo-paper")
    with pytest.raises(SystemExit):
        figure_main(["--policies", "tracker", "nonsense"])
    assert "unknown policy 'nonsense'" in capsys.readouterr().err



def test_a_refused_rerun_leaves_the_records_videos_alone(tmp_path, capsys):
    """A re-run with another config is refused (exit 2); it used to film first and delete the
    GIFs the existing record lists before the refusal."""
    from cfbench.app.commands import eval_main

    base = ["--policy", "tracker", "--env", "PassagePassing", "--source-hz", "20", "--episodes", str(EPISODES),
            "--results-dir", str(tmp_path), "--no-leaderboard"]
    eval_main(base + ["--videos", "2"])
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    before = {video: (tmp_path / video).read_bytes() for video in record["videos"]}
    with pytest.raises(SystemExit) as stopped:
        eval_main(base + ["--videos", "1", "--set", "n_obs_steps=2"])
    assert stopped.value.code == 2 and "with another config" in capsys.readouterr().err
    assert {video: (tmp_path / video).read_bytes() for video in record["videos"]} == before
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [next(tmp_path.glob("*.json")).stem]


def test_an_unwritable_results_folder_is_named_before_training(tmp_path, capsys):
    from cfbench.app.commands import eval_main

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        eval_main(["--policy", "dp-c", "--env", "PassagePassing", "--source-hz", "20", "--episodes", "2",
                   "--results-dir", str(tmp_path / "file" / "results"), "--checkpoints-dir", str(tmp_path / "ckpt"),
                   "--demos-dir", str(tmp_path / "demos")])
    assert stopped.value.code == 2
    assert f"results folder {tmp_path / 'file' / 'results'} is not writable" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "demos").exists()  # nothing trained or made


@pytest.mark.parametrize("argv, message", [
    (["--source-hz", "40"], "above the target rate"),
    (["--seed", "5"], "overlap the training seeds"),
    (["--seed", "-1"], "must be 0 or more"),
])
def test_figure_applies_cfbench_evals_rules(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        figure_main(["--policies", "tracker", *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
