from dataclasses import dataclass

import numpy as np
import pytest

import policies
from cfbench.app.commands import eval_main as main
from cfbench.app.run import run
from cfbench.app.spec import RunSpec, Workspace, parse_overrides, parse_seed_range
from cfbench.evaluate import evaluate, observation_history
from cfbench.interface import EpisodeContext
from cfbench.results import read_record
from policies.base import Policy, PolicyConfig, register

SEEDS = list(range(20000, 20006))


def test_tracker_evaluation_is_deterministic_and_records_every_seed():
    tracker = policies.make("tracker")
    first = evaluate(tracker, "PassagePassing", 20.0, seeds=SEEDS, num_envs=4, progress=False)
    second = evaluate(policies.make("tracker"), "PassagePassing", 20.0, seeds=SEEDS, num_envs=3, progress=False)
    assert [row["seed"] for row in first["episodes"]] == SEEDS
    assert first["episodes"] == second["episodes"]
    assert first["metrics"]["success_rate"] == 1.0
    assert first["metrics"]["path_deviation"] < 5.0


def test_coarse_tracker_fails_where_fine_tracker_succeeds():
    coarse = evaluate(policies.make("tracker"), "PassagePassing", 2.5, seeds=SEEDS, progress=False)
    assert coarse["metrics"]["success_rate"] < 0.5 and coarse["metrics"]["collision_rate"] > 0.5


def test_history_is_spaced_at_the_source_rate():
    observations = list(range(20))
    assert observation_history(observations, 2, 8).tolist() == [11, 19]
    assert observation_history(observations[:3], 3, 8).tolist() == [0, 0, 2]
    assert observation_history(observations, 1, 1).tolist() == [19]


@dataclass
class _ReplayConfig(PolicyConfig):
    n_obs_steps: int = 2


@register("test-replay")
class _ReplayMean(Policy):
    """Trainable test double: replays the mean first action of its training data."""

    config_class = _ReplayConfig

    def fit(self, dataset, **kwargs):
        self.rates = sorted({e.source_hz for e in dataset.episodes})
        self.target = np.mean([e.actions[0] for e in dataset.episodes], axis=0)
        return {"best_step": None, "best_score": None, "validation": [], "losses": [], "train_seconds": 0.0}

    def reset(self, slot, context: EpisodeContext):
        assert context.expert is None, "non-privileged policies must not see the expert"

    def act(self, obs_history, *, slots, reference_hz, target_hz):
        assert obs_history.shape[:2] == (len(slots), 2)
        return np.repeat(self.target[None, None], len(slots), axis=0)


def test_trainable_policy_is_fitted_on_demos_of_the_source_rate(tmp_path, monkeypatch):
    fitted = {}
    original_fit = _ReplayMean.fit

    def spy(self, dataset, **kwargs):
        fitted["rates"] = sorted({e.source_hz for e in dataset.episodes})
        return original_fit(self, dataset, **kwargs)

    monkeypatch.setattr(_ReplayMean, "fit", spy)
    spec = RunSpec("test-replay", "PassagePassing", (2.5, 5.0), episodes=2, n_demos=4)
    record, path = run(spec, Workspace(tmp_path / "demos", tmp_path / "ckpt"), results_dir=tmp_path / "results",
                       progress=False)
    assert fitted["rates"] == [2.5, 5.0]
    assert read_record(path) == record
    assert record["source_hz"] == [2.5, 5.0] and record["privileged"] is False
    assert (tmp_path / "ckpt" / "PassagePassing" / "test-replay" / "2.5+5hz").is_dir()


class _BrokenPolicy(_ReplayMean):
    def act(self, obs_history, *, slots, reference_hz, target_hz):
        return np.zeros((len(slots), 3, 7))


def test_policy_returning_wrong_shape_is_named():
    with pytest.raises(ValueError, match="'test-replay' returned action chunks of shape"):
        evaluate(_BrokenPolicy(), "PassagePassing", 20.0, seeds=[1], progress=False)


def test_cli_argument_errors(capsys):
    for argv, message in [
        (["--policy", "nonexistent"], "unknown policy 'nonexistent'"),
        (["--policy", "tracker", "--env", "Moon"], "unknown environment 'Moon'"),
        (["--policy", "tracker", "--source-hz", "fast"], "bad sample rate"),
        (["--policy", "tracker", "--test-seeds", "5:5"], "empty seed range"),
        (["--policy", "tracker", "--set", "oops"], "KEY=VALUE"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_parsers():
    assert parse_seed_range("20000:20100") == (20000, 20100)
    assert parse_overrides(["a=1", "b=x", "c=[1, 2]"]) == {"a": 1, "b": "x", "c": [1, 2]}


def test_cli_writes_record_table_and_leaderboard(tmp_path, capsys):
    main(["--policy", "tracker", "--env", "PassagePassing", "--source-hz", "2.5", "20", "--episodes", "3",
          "--results-dir", str(tmp_path), "--leaderboard", str(tmp_path / "lb.md")])
    out = capsys.readouterr().out
    assert "success %" in out and "leaderboard:" in out
    board = (tmp_path / "lb.md").read_text()
    assert len(list(tmp_path.glob("*.json"))) == 2
    # 3 of the 100 test seeds: listed apart, never ranked or plotted
    assert "## Partial runs (not ranked)" in board and "| tracker †" not in board
    assert "PassagePassing__tracker__20hz__to20hz__seeds20000-20003__train0.json` | 100 (0) | 3 |" in board
    assert not (tmp_path / "plots").exists()


def test_cli_leaderboard_defaults_to_beside_the_results_folder(tmp_path, monkeypatch):
    """A scratch --results-dir must never overwrite the leaderboard of the folder one runs in."""
    monkeypatch.chdir(tmp_path)
    main(["--policy", "tracker", "--env", "PassagePassing", "--source-hz", "20", "--episodes", "2",
          "--results-dir", str(tmp_path / "scratch" / "results")])
    assert (tmp_path / "scratch" / "leaderboard.md").exists()
    assert not (tmp_path / "leaderboard.md").exists()


class _RaggedPolicy(_ReplayMean):
    """Chunks of a different length per slot, as DiSPo's adaptive step scales give."""

    def act(self, obs_history, *, slots, reference_hz, target_hz):
        lengths = [1 + slot % 3 for slot in slots]  # hold the current position for 1-3 steps
        self.calls.append(lengths)
        return [np.repeat(obs_history[i, -1:, :2], n, axis=0) for i, n in enumerate(lengths)]


def test_chunks_of_different_lengths_per_slot_are_executed():
    policy = _RaggedPolicy()
    policy.calls = []
    outcome = evaluate(policy, "PassagePassing", 20.0, seeds=[1, 2, 3], num_envs=3, progress=False)
    assert outcome["metrics"]["episodes"] == 3
    assert policy.calls[0] == [1, 2, 3]  # then each slot asks again when its own chunk runs out
    assert policy.calls[1:3] == [[1], [1, 2]]


def test_wrong_number_of_ragged_chunks_is_named():
    class Short(_ReplayMean):
        def act(self, obs_history, *, slots, reference_hz, target_hz):
            return [np.zeros((2, 2))] * (len(slots) + 1)

    with pytest.raises(ValueError, match="returned action chunks of shape"):
        evaluate(Short(), "PassagePassing", 20.0, seeds=[1], progress=False)
