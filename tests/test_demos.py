import json

import numpy as np
import pytest

from cfbench.datasets import load_demos
from cfbench.demos import (
    ExpertRunner,
    control_rate_for,
    dataset_id,
    main,
    parse_rates,
    rates_label,
    subsample,
    verify,
    write_dataset,
)
from cfbench.evaluate import observation_history

ENV = "PassagePassing"


def test_rate_parsing_and_labels():
    assert parse_rates("2.5") == (2.5,)
    assert parse_rates("2.5+5") == (2.5, 5.0)
    assert rates_label((2.5, 5.0)) == "2.5+5"
    for bad in ["", "abc", "0", "-5", "2.5+nan"]:
        with pytest.raises(ValueError):
            parse_rates(bad)
    assert [control_rate_for(hz) for hz in (2.5, 5, 10, 20, 3, 40)] == [20, 20, 20, 20, 21, 40]
    assert dataset_id(ENV, (2.5,)) == "cfbench/passage-passing/expert-2p5hz-v0"
    mixed_pixels = "cfbench/button-touch/expert-2p5hz-5hz-pixels-state-v0"
    assert dataset_id("ButtonTouch", (2.5, 5.0), "pixels_state") == mixed_pixels


def test_demo_samples_follow_the_expert():
    runner = ExpertRunner("cfbench/PassagePassing-v0")
    run = runner.run(seed=3, control_hz=20.0)
    assert run.success
    demo = subsample(run, 2.5)
    k = len(demo["actions"])
    assert len(demo["observations"]) == k + 1
    # Observation i is taken at control step 8 i; action i is the expert pose at sample i + 1.
    assert np.array_equal(demo["observations"][1], run.observations[8])
    assert np.allclose(demo["actions"][0], run.trajectory(0.4), atol=1e-4)
    assert np.allclose(demo["actions"][-1], run.trajectory(k / 2.5), atol=1e-4)
    assert np.array_equal(demo["observations"][-1], run.observations[-1])  # the terminal observation
    with pytest.raises(ValueError, match="not a multiple"):
        subsample(run, 3.0)
    runner.close()


def test_generation_is_byte_identical_and_keeps_rates(tmp_path):
    first = write_dataset(ENV, (2.5, 5.0), 6, demos_dir=tmp_path / "a")
    write_dataset(ENV, (2.5, 5.0), 6, demos_dir=tmp_path / "b")
    manifest_a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest_b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest_a == manifest_b
    for name in manifest_a[first]["files"]:
        assert (tmp_path / "a" / first / name).read_bytes() == (tmp_path / "b" / first / name).read_bytes()
    dataset = load_demos(ENV, (2.5, 5.0), n=6, demos_dir=tmp_path / "a", generate=False)
    assert [e.source_hz for e in dataset.episodes] == [2.5, 5.0] * 3
    assert [e.seed for e in dataset.episodes] == list(range(6))
    # The 5 Hz episodes have about twice as many samples as the 2.5 Hz ones.
    lengths = [len(e.actions) for e in dataset.episodes]
    assert sum(lengths[1::2]) > 1.6 * sum(lengths[0::2])


def test_corrupted_or_truncated_files_are_detected(tmp_path):
    ds_id = write_dataset(ENV, (5.0,), 3, demos_dir=tmp_path)
    data = tmp_path / ds_id / "data" / "main_data.hdf5"
    original = data.read_bytes()
    data.write_bytes(original[: len(original) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_demos(ENV, (5.0,), n=3, demos_dir=tmp_path, generate=False)
    data.write_bytes(original[:100] + b"\x00" + original[101:])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        verify(tmp_path, ds_id)
    data.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        verify(tmp_path, ds_id)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest .* is corrupt"):
        verify(tmp_path, ds_id)


def test_missing_dataset_is_generated_on_load(tmp_path, monkeypatch):
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))  # the default demos/ folder is under the home
    dataset = load_demos(ENV, (10.0,), n=2)
    assert len(dataset.episodes) == 2 and dataset.label == "10"
    assert (tmp_path / "demos" / "manifest.json").exists()
    assert len(load_demos(ENV, (10.0,), n=3).episodes) == 3  # a different size is regenerated


def test_training_windows_hold_the_start_pose_before_the_first_sample(tmp_path):
    dataset = load_demos(ENV, (2.5,), n=2, demos_dir=tmp_path)
    windows = dataset.windows(n_obs_steps=2, horizon=16)
    episode = dataset.episodes[0]
    steps = len(episode.actions)
    start_pose = episode.observations[0][:2]
    assert len(windows) == sum(len(e.actions) for e in dataset.episodes)
    assert windows.observations.shape[1:] == (2, episode.observations.shape[1])
    assert windows.actions.shape[1:] == (16, 2)
    # First window: history padded with the first observation; the past action (the step before
    # the start) is the start pose, held, not the first target 0.4 s ahead; then actions from step 0.
    assert np.array_equal(windows.observations[0, 0], episode.observations[0])
    assert np.array_equal(windows.actions[0, 0], start_pose)
    assert np.array_equal(windows.actions[0, 1], episode.actions[0])
    assert np.linalg.norm(episode.actions[0] - start_pose) > 5  # the expert is moving by then
    # The evaluator's history at an episode's first step is the same layout: the first observation twice.
    assert np.array_equal(windows.observations[0], observation_history([episode.observations[0]], 2, 8))
    # Strided windows (DiSPo's augmentation) hold the start pose too.
    strided = dataset.windows(n_obs_steps=3, horizon=6, stride=2)
    assert np.array_equal(strided.actions[0, :2], np.stack([start_pose, start_pose]))
    assert np.array_equal(strided.actions[1, 1], start_pose) and np.array_equal(strided.actions[2, 0], start_pose)
    assert np.array_equal(strided.actions[2, 1], episode.actions[1])  # step 0's target 2 samples ahead
    # Last window of episode 0: actions padded with the final action.
    assert np.array_equal(windows.actions[steps - 1, -1], episode.actions[-1])
    assert np.array_equal(windows.observations[1, 1], episode.observations[1])
    with pytest.raises(ValueError):
        dataset.windows(0, 16)


def test_cli_rejects_unknown_env(capsys):
    with pytest.raises(SystemExit):
        main(["--env", "Nope"])
    assert "unknown environment 'Nope'" in capsys.readouterr().err


def test_demos_on_validation_or_test_seeds_are_refused_for_training(tmp_path, capsys):
    """``cfbench-demos --first-seed 20000`` used to put test scenes under the standard dataset
    id, and the next cfbench-eval trained on them with exit 0."""
    from cfbench.app.commands import eval_main
    from cfbench.datasets import load_demos
    from cfbench.demos import write_dataset

    write_dataset("PassagePassing", (20.0,), 2, demos_dir=tmp_path / "demos", first_seed=20000)
    with pytest.raises(ValueError, match=r"on the test seeds \(2, from 20000; test seeds are 20000:20100\)"):
        load_demos("PassagePassing", (20.0,), n=2, demos_dir=tmp_path / "demos")
    assert [e.seed for e in load_demos("PassagePassing", (20.0,), n=2, demos_dir=tmp_path / "demos",
                                       allow_seed_overlap=True).episodes] == [20000, 20001]
    command = ["--policy", "dp-c", "--env", "PassagePassing", "--source-hz", "20", "--n-demos", "2",
               "--episodes", "2", "--demos-dir", str(tmp_path / "demos"), "--checkpoints-dir", str(tmp_path / "ckpt"),
               "--results-dir", str(tmp_path / "results"), "--val-episodes", "0",
               "--set", "train_steps=2", "eval_every=2", "batch_size=4", "down_dims=[8,16]", "n_groups=4"]
    with pytest.raises(SystemExit) as stopped:
        eval_main(command)
    assert stopped.value.code == 2 and "--allow-seed-overlap" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
    eval_main(command + ["--allow-seed-overlap"])  # said explicitly: it runs, and the record names the seeds
    record = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert record["training"]["demo_seeds"] == {"first": 20000, "last": 20001, "count": 2}
    # and the checkpoint it was evaluated with, by its SHA-256s (what a verification re-runs)
    run = next((tmp_path / "ckpt").rglob("summary.json")).parent
    summary = json.loads((run / "summary.json").read_text())
    assert (record["training"]["weights_sha256"], record["training"]["config_sha256"]) == (
        summary["weights_sha256"], summary["config_sha256"])
    # and the commit that trained it, which a record tested at a later commit keeps
    assert record["training"]["trained_at"] == summary["trained_at"] == {
        key: record["provenance"][key] for key in ("git_commit", "git_dirty")}


def test_demos_stored_under_another_envs_id_are_named(tmp_path):
    """ButtonTouch data under the PassagePassing id (manifest and all) ended in an IndexError."""
    import shutil

    from cfbench.datasets import load_demos
    from cfbench.demos import MANIFEST, dataset_id, write_dataset

    demos = tmp_path / "demos"
    write_dataset("ButtonTouch", (20.0,), 2, demos_dir=demos)
    source, target = dataset_id("cfbench/ButtonTouch-v0", (20.0,)), dataset_id("cfbench/PassagePassing-v0", (20.0,))
    shutil.copytree(demos / source, demos / target)
    manifest = json.loads((demos / MANIFEST).read_text())
    manifest[target] = {**manifest[source], "env_id": "cfbench/PassagePassing-v0"}
    (demos / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="was recorded in cfbench/ButtonTouch-v0, not cfbench/PassagePassing-v0"):
        load_demos("PassagePassing", (20.0,), n=2, demos_dir=demos, generate=False)
