"""Protocol v1: the reference (most frequent) rate for mixed demos, training seeds with error
bars and paired comparisons, and open-loop fidelity metrics."""

import numpy as np
import pytest

import policies
from cfbench.app.run import run
from cfbench.app.spec import RunSpec, Workspace
from cfbench.datasets import DemoDataset, Episode, load_demos
from cfbench.fidelity import probe
from cfbench.leaderboard.comparison import compare
from cfbench.leaderboard.standings import success_table
from cfbench.protocol import PROTOCOL
from cfbench.results import RecordError
from cfbench.stats import mcnemar_exact, success_interval, wilson

SEEDS = [10000, 10001, 10002]


def _dataset(rates_and_lengths):
    episodes = [Episode(np.zeros((n + 1, 4)), np.zeros((n, 2)), hz, i) for i, (hz, n) in enumerate(rates_and_lengths)]
    return DemoDataset("cfbench/PassagePassing-v0", tuple(sorted({hz for hz, _ in rates_and_lengths})), "state",
                       episodes)


def test_the_reference_rate_is_the_most_frequent_step_ties_to_the_finer():
    assert _dataset([(2.5, 20), (5.0, 40), (2.5, 20), (5.0, 40)]).reference_hz == 5.0  # 80 samples against 40
    assert _dataset([(2.5, 30), (2.5, 30), (5.0, 40)]).reference_hz == 2.5  # 60 against 40
    assert _dataset([(2.5, 20), (5.0, 20)]).reference_hz == 5.0  # a tie goes to the finer rate


def test_mixed_demos_run_at_the_reference_rate(tmp_path):
    dataset = load_demos("ButtonTouch", (2.5, 5.0), n=4, demos_dir=tmp_path / "demos")
    assert dataset.reference_hz == 5.0
    record, _ = run(RunSpec("tracker", "ButtonTouch", (2.5, 5.0), episodes=2, n_demos=4),
                    Workspace(demos_dir=tmp_path / "demos"), results_dir=tmp_path / "results", progress=False)
    assert record["reference_hz"] == 5.0 and record["protocol"] == PROTOCOL and record["train_seed"] == 0
    dispo = policies.make("dispo", d_model=8, n_layer=1, d_state=4, train_steps=1, eval_every=1, batch_size=4,
                          finetune_steps=0)
    data = dispo.prepare(dataset)
    assert dispo.config.reference_hz == 5.0  # r = 1 at 5 Hz, r = 2 on the 2.5 Hz windows
    assert sorted(set(data["step_scale"][:, 0].tolist())) == [1.0, 2.0, 4.0]  # with the stride-2 augmentation


def test_wilson_interval_and_two_level_bootstrap():
    low, high = wilson(67, 100)
    assert round(low, 3) == 0.573 and round(high, 3) == 0.754
    assert wilson(0, 100)[0] == 0.0 and wilson(100, 100)[1] == 1.0
    rng = np.random.default_rng(3)
    same = [rng.random(100) < 0.6 for _ in range(3)]
    spread = [rng.random(100) < p for p in (0.2, 0.6, 0.9)]
    mean, low, high = success_interval(same)
    assert low < mean < high and success_interval(same) == (mean, low, high)  # deterministic
    assert success_interval(spread)[2] - success_interval(spread)[1] > 2 * (high - low)  # seeds that disagree
    none = success_interval([np.zeros(100)] * 3)  # three seeds, 0 of 300: not a zero-width interval
    assert none[:2] == (0.0, 0.0) and none[2] == pytest.approx(wilson(0, 300)[1])


def test_mcnemar_exact_p_values():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(12, 3) == pytest.approx(2 * sum(__import__("math").comb(15, i) for i in range(4)) / 2**15)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0


def _seeded(policy, train_seed, successes):
    from test_results import _record

    record = _record(policy=policy, successes=successes)
    record["train_seed"] = train_seed
    return record


def test_leaderboard_cells_pool_training_seeds_and_compare_states_the_paired_test():
    records = [_seeded("dp-t", s, (True, True, False)) for s in range(3)] + [_seeded("dispo", 0, (True, False, False))]
    table = success_table(records)
    assert table.loc["dp-t", "2.5 Hz"].startswith("67 [") and table.loc["dp-t", "2.5 Hz"].endswith("×3")
    assert table.loc["dispo", "2.5 Hz"].endswith("×1")
    sentence = compare(records, "dp-t", "dispo", "PassagePassing", (2.5,))
    # seed 0 only is shared; dp-t wins where i % 3 == 1 (33 episodes), dispo never wins alone
    assert "100 paired test episodes, 1 training seed" in sentence and "a difference of +33 points" in sentence
    assert "dp-t is better (exact McNemar, p = 2.33e-10)" in sentence


def _indicator(successes):
    from test_results import _record

    record = _record(policy="tracker", successes=successes)
    record["variant"] = "smooth"
    return record


def test_cells_state_the_gain_over_the_smooth_indicator_and_compare_accepts_it():
    """The indicator ran once (no training seed): it pairs with every training seed of a learner,
    and several seeds are tested by the paired bootstrap, not as if their pairs were independent."""
    learner = [_seeded("dp-t", s, (True, True, False)) for s in range(3)]
    records = learner + [_indicator((True, False, False))]
    table = success_table(records)
    assert "; Δ +33 (p " in table.loc["dp-t", "2.5 Hz"] and "Δ" not in table.loc["tracker (smooth) †", "2.5 Hz"]
    sentence = compare(records, "dp-t", "tracker (smooth)", "PassagePassing", (2.5,))
    assert "300 paired test episodes, 3 training seeds" in sentence and "a difference of +33 points" in sentence
    assert "dp-t is better (paired bootstrap over 3 training seeds, then episodes" in sentence
    # the same sentence the other way round
    assert "tracker (smooth) succeeds in 34 %" in compare(records, "tracker (smooth)", "dp-t", "PassagePassing",
                                                          (2.5,))
    # a file stem's spelling is not a label: it names no record, and a malformed label is refused
    with pytest.raises(RecordError, match="no ranked record of 'tracker-smooth'"):
        compare(records, "dp-t", "tracker-smooth", "PassagePassing", (2.5,))
    with pytest.raises(ValueError, match="bad policy label 'tracker \\(smooth'"):
        compare(records, "dp-t", "tracker (smooth", "PassagePassing", (2.5,))


def test_paired_difference_counts_the_spread_between_training_seeds():
    from cfbench.stats import paired_difference

    reference = np.array([True, False] * 50)
    same = paired_difference([reference] * 3, [reference] * 3)
    assert same["difference"] == 0 and same["p"] == 1.0
    # two seeds far above the reference, one far below: the mean gain is positive, but a method
    # whose training seeds disagree this much is not shown better (pooled McNemar would say it is)
    up, down = np.ones(100, bool), np.zeros(100, bool)
    mixed = paired_difference([up, up, down], [reference] * 3)
    assert mixed["difference"] > 0 and mixed["p"] > 0.05 and mixed["low"] < 0 < mixed["high"]
    steady = paired_difference([up, up, up], [reference] * 3)
    assert steady["p"] < 0.01 and steady["low"] > 0
    with pytest.raises(ValueError, match="same test episodes"):
        paired_difference([up], [up[:50]])


def test_the_tracker_from_20_hz_demos_has_no_open_loop_error():
    fidelity = probe(policies.make("tracker"), "PassagePassing", 20.0, seeds=SEEDS)
    assert fidelity["waypoint_error"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert fidelity["inbetween_error"] is None and fidelity["zigzag"] is None  # no slots between 20 Hz samples
    assert fidelity["queries"] == len(SEEDS)  # one plan per episode


class _DriftingTracker(policies.Policy):
    """The expert's own poses at 5 Hz, each waypoint k source steps ahead pushed k units sideways."""

    config_class = policies.PolicyConfig
    privileged = True
    trainable = False

    def reset(self, slot, context):
        self.expert = context.expert

    def act(self, obs_history, *, slots, reference_hz, target_hz):
        steps = np.arange(1, 17)  # 8 source steps at 20 Hz
        poses = self.expert(steps / target_hz + self.now)
        poses[:, 1] += (steps % 4 == 0) * steps / 4
        self.now += len(steps) / target_hz
        return poses[None]


def test_waypoint_error_by_step_says_how_far_ahead_a_model_drifts():
    policy = _DriftingTracker()
    policy.now = 0.0
    fidelity = probe(policy, "PassagePassing", 5.0, seeds=SEEDS[:1])
    by_step = fidelity["waypoint_error_by_step"]
    assert by_step[:4] == pytest.approx([1.0, 2.0, 3.0, 4.0], abs=1e-6)
    assert fidelity["inbetween_error"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_the_tracker_from_2_5_hz_demos_errs_by_the_chord_to_path_distance():
    fidelity = probe(policies.make("tracker"), "PassagePassing", 2.5, seeds=SEEDS)
    assert fidelity["waypoint_error"]["mean"] == pytest.approx(0.0, abs=1e-9)
    import gymnasium as gym

    distances = []
    env = gym.make("cfbench/PassagePassing-v0")
    for seed in SEEDS:  # independently: the 2.5 Hz chords against the path, at the 20 Hz times between samples
        env.reset(seed=seed)
        expert = env.unwrapped.expert_trajectory()
        times = np.arange(1, int(expert.duration * 20 + 1e-9) + 1) / 20
        times = times[np.round(times * 20) % 8 != 0]
        knots = np.arange(0, expert.duration + 0.4, 0.4)
        chord = np.stack([np.interp(times, knots, expert(knots)[:, d]) for d in range(2)], axis=1)
        distances.append(np.linalg.norm(chord - expert(times)[:, :2], axis=1))
    env.close()
    assert fidelity["inbetween_error"]["mean"] == pytest.approx(np.concatenate(distances).mean(), rel=1e-6)
    assert fidelity["zigzag"]["mean"] < 0  # straight chords: less jagged than the curved path


def test_plots_draw_error_bars_at_0_and_100_percent(tmp_path):
    from test_results import _record

    from cfbench.leaderboard.plots import plot_env

    records = [_record(rate=2.5, successes=(False,)), _record(rate=20.0, successes=(True,))]
    assert plot_env(records, "cfbench/PassagePassing-v0")[:4] == b"\x89PNG"
