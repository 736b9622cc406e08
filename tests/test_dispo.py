"""DiSPo: step-scaled rollouts at the target rate, sample-rate augmentation, persistence."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

import policies
from cfbench.app.spec import pretraining_dir
from cfbench.datasets import Windows, load_demos
from cfbench.interface import EpisodeContext
from policies.dispo.config import DiSPoConfig, finetune_rounds
from policies.dispo.finetuning import concat_window_tensors
from policies.dispo.step_scales import rollout_step_scales

TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "batch_size": 32, "warmup_steps": 5, "finetune_steps": 0}


@pytest.fixture(scope="module")
def coarse_demos(tmp_path_factory):
    return load_demos("PassagePassing", (2.5,), n=3, demos_dir=tmp_path_factory.mktemp("demos"))


@pytest.fixture(scope="module")
def trained(coarse_demos):
    policy = policies.make("dispo", **TINY, train_steps=20, eval_every=20)
    policy.fit(coarse_demos, progress=False)
    return policy


@pytest.fixture(scope="module")
def adaptive(coarse_demos):
    policy = policies.make("dispo", **TINY, train_steps=20, eval_every=20, step_scale_mode="adaptive")
    policy.fit(coarse_demos, progress=False)
    return policy


def _history(dataset, n_obs_steps):
    return np.stack([dataset.episodes[0].observations[:n_obs_steps]])


def _act(policy, obs, reference_hz, target_hz, seed=3):
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", seed, target_hz))
    return policy.act(obs, slots=[0], reference_hz=reference_hz, target_hz=target_hz)


def test_finer_step_scale_emits_the_target_rate_chunk(trained, coarse_demos):
    c = trained.config
    assert c.reference_hz == 2.5
    obs = _history(coarse_demos, c.n_obs_steps)
    for target_hz, finer in [(2.5, 1), (5.0, 2), (20.0, 8)]:
        actions = _act(trained, obs, 2.5, target_hz)
        assert actions.shape == (1, c.n_action_steps * finer, 2) and np.isfinite(actions).all()
    scales = rollout_step_scales(c, 2.5, 20.0)
    n_future = (c.horizon - c.n_obs_steps + 1) * 8
    assert scales.shape == (c.n_obs_steps + c.n_obs_steps - 1 + n_future,)
    assert torch.all(scales[: 2 * c.n_obs_steps - 1] == 1.0) and torch.allclose(scales[-n_future:], torch.tensor(1 / 8))


def test_unit_step_scale_is_the_training_layout(trained, coarse_demos):
    c = trained.config
    scales = rollout_step_scales(c, 2.5, 2.5)
    assert scales.shape == (c.n_obs_steps + c.horizon,) and torch.all(scales == 1.0)
    obs = _history(coarse_demos, c.n_obs_steps)
    trained.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 3, 2.5))
    chunk = trained.sample_actions(obs, [0], n_actions=c.horizon, step_scale=torch.ones(1, c.n_obs_steps + c.horizon))
    start = c.n_obs_steps - 1
    np.testing.assert_array_equal(_act(trained, obs, 2.5, 2.5), chunk[:, start : start + c.n_action_steps])


def test_rates_that_do_not_divide_are_rejected(trained):
    with pytest.raises(ValueError, match="whole number"):
        rollout_step_scales(trained.config, 2.5, 6.0)


def test_sample_rate_augmentation_resamples_windows_with_their_scale(coarse_demos):
    policy = policies.make("dispo", **TINY, augment_strides=(1, 2))
    data = policy.prepare(coarse_demos)
    per_stride = len(coarse_demos.windows(policy.config.n_obs_steps, policy.config.horizon))
    assert len(data["actions"]) == 2 * per_stride
    assert torch.all(data["step_scale"][:per_stride] == 1.0) and torch.all(data["step_scale"][per_stride:] == 2.0)


def test_strided_windows_take_every_kth_sample(coarse_demos):
    episode = coarse_demos.episodes[0]
    windows = coarse_demos.windows(2, 3, stride=2)
    steps = len(episode.actions)
    t = 4  # a window inside the episode: observations t-2 and t; its actions target samples t, t+2, t+4
    np.testing.assert_array_equal(windows.observations[t], episode.observations[[t - 2, t]])
    expected = episode.actions[np.minimum([t - 2 + 1, t + 1, t + 2 + 1], steps - 1)]
    np.testing.assert_array_equal(windows.actions[t], expected)
    assert windows.source_hz[t] == 1.25


def test_save_load_round_trip_gives_identical_fine_actions(trained, coarse_demos, tmp_path):
    trained.save(tmp_path / "dispo")
    loaded = policies.load(tmp_path / "dispo")
    assert loaded.config.reference_hz == 2.5
    obs = _history(coarse_demos, trained.config.n_obs_steps)
    np.testing.assert_array_equal(_act(trained, obs, 2.5, 20.0), _act(loaded, obs, 2.5, 20.0))


def test_overfitting_two_demos_drives_the_loss_down(coarse_demos):
    policy = policies.make("dispo", **TINY, train_steps=300, eval_every=300)
    history = policy.fit(coarse_demos, progress=False)
    first, last = history["losses"][0][1], history["losses"][-1][1]
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"


def test_pseudo_demonstrations_keep_the_demo_actions(trained, coarse_demos):
    c = trained.config
    pseudo = trained.pseudo_demonstrations(coarse_demos, finer=4)
    windows = coarse_demos.windows(c.n_obs_steps, c.horizon)
    demo = trained.window_tensors(coarse_demos, windows)["actions"]
    n_past, n_future = c.n_obs_steps - 1, c.horizon - c.n_obs_steps + 1
    assert pseudo["actions"].shape == (len(windows), n_past + 4 * n_future, 2)
    slots = pseudo["loss_mask"][0].nonzero().flatten()
    assert slots.tolist() == list(range(n_past)) + [n_past + 4 * (i + 1) - 1 for i in range(n_future)]
    torch.testing.assert_close(pseudo["actions"][:, slots], demo, rtol=0, atol=1e-3)
    between = pseudo["actions"][:, n_past : n_past + 3]  # generated, not copied: differ from the demo's
    assert not torch.allclose(between, demo[:, n_past : n_past + 1].expand_as(between))
    assert torch.allclose(pseudo["step_scale"][:, -1], torch.tensor(0.25))


def test_finetuning_rounds_double_the_rate_up_to_the_target(coarse_demos, tmp_path):
    policy = policies.make("dispo", **{**TINY, "finetune_steps": 3}, train_steps=4, eval_every=4)
    assert policy.config.target_hz == 20.0
    history = policy.fit(coarse_demos, work_dir=tmp_path, validate=lambda p: 0.5, progress=False)
    assert finetune_rounds(policy.config) == [2, 4, 8]
    assert [phase["name"].split(" (")[0] for phase in history["phases"]] == [
        "pretraining", "fine-tuning at 2x", "fine-tuning at 4x", "fine-tuning at 8x"]
    assert history["step"] == 4 + 3 * 3 and history["best_step"] == 13
    assert (tmp_path / "finetune-8x" / "best").is_dir()
    assert finetune_rounds(policies.make("dispo", finetune_steps=0, reference_hz=2.5).config) == []
    assert finetune_rounds(policies.make("dispo", reference_hz=20.0).config) == []
    assert finetune_rounds(policies.make("dispo", reference_hz=5.0).config) == [2, 4]


def test_finetuning_variants_share_one_pretraining(coarse_demos, tmp_path):
    settings = {**TINY, "train_steps": 4, "eval_every": 4}

    def fit(policy, name):  # as the runner does: it names the shared folder, the policy trains in it
        shared = pretraining_dir(tmp_path / name, policy.pretraining_identity(), coarse_demos)
        return policy.fit(coarse_demos, work_dir=tmp_path / name, pretraining_dir=shared, progress=False)

    plain = policies.make("dispo", **settings)
    plain_history = fit(plain, "no-ft")
    tuned = policies.make("dispo", **{**settings, "finetune_steps": 2, "target_hz": 5.0})
    tuned_history = fit(tuned, "ft")
    shared = plain_history["phases"][0]["dir"]
    assert tuned_history["phases"][0]["dir"] == shared and shared.startswith(str(tmp_path / "pretraining-"))
    assert plain_history["losses"] and tuned_history["losses"][:1] == plain_history["losses"][:1]  # restored
    assert [p["name"].split(" (")[0] for p in tuned_history["phases"]] == ["pretraining", "fine-tuning at 2x"]
    other = policies.make("dispo", **{**settings, "lr": 5e-4})
    assert other.pretraining_identity() != plain.pretraining_identity()
    assert (pretraining_dir(tmp_path / "x", other.pretraining_identity(), coarse_demos)
            != pretraining_dir(tmp_path / "y", plain.pretraining_identity(), coarse_demos))


def _windows(state_xy, future_xy, n_obs_steps):
    """Windows whose last observed position and next actions are the given points."""
    n = len(state_xy)
    state = np.zeros((n, n_obs_steps, 4))
    state[:, -1, :2] = state_xy
    actions = np.concatenate([np.zeros((n, n_obs_steps - 1, 2)), future_xy], axis=1)
    return Windows(state, actions, np.full(n, 2.5), np.zeros(n, dtype=int))


def test_step_scale_target_is_path_straightness(trained):
    c = trained.config
    steps = np.arange(1, c.n_action_steps + 1, dtype=float)
    straight = np.stack([3 * steps, 2 * steps], axis=-1)
    corner = np.stack([np.minimum(steps, 4), np.maximum(steps - 4, 0)], axis=-1)  # a right angle
    still = np.zeros_like(straight)
    windows = _windows(np.zeros((3, 2)), np.stack([straight, corner, still]), c.n_obs_steps)
    targets = trained.straightness_targets(windows)
    np.testing.assert_allclose(targets, [1.0, 0.0, 0.0])
    slight = straight + np.stack([np.zeros_like(steps), 0.05 * (steps == 4)], axis=-1)
    assert 0 < trained.straightness_targets(_windows(np.zeros((1, 2)), slight[None], c.n_obs_steps))[0] < 1


def test_only_adaptive_step_scales_build_and_train_phi_r(trained, adaptive, coarse_demos):
    """Fixed step scales never read φ_r: they neither build it nor pay its loss."""
    assert trained.model.net.step_scale_predictor is None
    assert not any(key.startswith("net.step_scale_predictor.") for key in trained.state_dict())
    assert not {"straightness_target", "straightness_mask"} & set(trained.prepare(coarse_demos))
    assert adaptive.model.net.step_scale_predictor is not None
    data = adaptive.prepare(coarse_demos)
    per_stride = len(coarse_demos.windows(adaptive.config.n_obs_steps, adaptive.config.horizon))
    mask = data["straightness_mask"]  # φ_r learns at the rollout's observation spacing: stride 1
    assert len(mask) == 2 * per_stride and mask[:per_stride].all() and not mask[per_stride:].any()


def test_predicted_step_scales_are_positive_and_within_range(adaptive, coarse_demos):
    c = adaptive.config
    obs = np.concatenate([np.stack([e.observations[:c.n_obs_steps]]) for e in coarse_demos.episodes])
    noisy = obs + np.random.default_rng(0).normal(scale=50.0, size=obs.shape)  # far out of distribution too
    for history in (obs, noisy):
        r = adaptive.predicted_action_scale(history, 20.0)
        assert r.shape == (len(obs),) and torch.all(r > 0)
        assert torch.all(r >= c.reference_hz / 20.0 - 1e-6) and torch.all(r <= c.max_speedup * c.reference_hz / 20.0)


def test_adaptive_step_scales_emit_coarser_chunks_where_predicted(adaptive, coarse_demos, monkeypatch):
    c = adaptive.config
    obs = np.concatenate([_history(coarse_demos, c.n_obs_steps)] * 4)
    # r_a per slot: the target rate's own (1/8), twice coarser (1/4), in between (rounds to 6 per step)
    monkeypatch.setattr(adaptive, "predicted_action_scale", lambda *args: torch.tensor([1 / 8, 1 / 4, 1 / 6, 1 / 4]))
    for slot in range(4):
        adaptive.reset(slot, EpisodeContext("cfbench/PassagePassing-v0", slot, 20.0))
    chunks = adaptive.act(obs, slots=[0, 1, 2, 3], reference_hz=2.5, target_hz=20.0)
    assert isinstance(chunks, list)
    assert [len(chunk) for chunk in chunks] == [c.n_action_steps * m for m in (8, 4, 6, 4)]
    adaptive.reset(1, EpisodeContext("cfbench/PassagePassing-v0", 1, 20.0))
    monkeypatch.setattr(adaptive, "predicted_action_scale", lambda *args: torch.tensor([1 / 4]))
    alone = adaptive.act(obs[1:2], slots=[1], reference_hz=2.5, target_hz=20.0)
    np.testing.assert_allclose(alone[0], chunks[1], atol=1e-4)  # grouping by step size leaves a slot's chunk


def _net_outputs(net, sample, features, step_scale):
    torch.manual_seed(0)
    return net(sample, torch.full((len(sample),), 5), features, step_scale)


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_scan_direction_decides_whether_later_tokens_inform_earlier_ones(direction):
    """Causal: editing the last action token leaves every earlier output as it was. Bidirectional
    (the reverse pass): earlier outputs change, the first action token's included."""
    policy = policies.make("dispo", **TINY, scan_direction=direction, action_dim=2, obs_dim=4)
    net = policy.build_net(8).eval()
    for block in net.blocks:  # away from adaLN-Zero's identity start, so that the mixers count
        torch.nn.init.normal_(block.modulation[1].weight, std=0.5)
    g = torch.Generator().manual_seed(0)
    features, sample = torch.randn(2, 2, 8, generator=g), torch.randn(2, 12, 2, generator=g)
    step_scale = torch.ones(2, 14)
    edited = sample.clone()
    edited[:, -1] += 3.0
    with torch.no_grad():
        before, after = _net_outputs(net, sample, features, step_scale), _net_outputs(net, edited, features, step_scale)
    earlier_changed = (after[:, :-1] - before[:, :-1]).abs().amax(dim=-1)
    if direction == "causal":
        assert torch.equal(after[:, :-1], before[:, :-1])
    else:
        assert (earlier_changed > 1e-7).all()  # small at init (short step sizes), never zero


@pytest.mark.parametrize("direction", ["causal", "bidirectional"])
def test_padding_at_zero_step_scale_changes_no_real_output(direction):
    """Windows of different lengths train in one batch (pseudo demos, stride pairs): the padded
    tokens, at step scale 0, leave the real tokens' outputs as they are without padding."""
    policy = policies.make("dispo", **TINY, scan_direction=direction, action_dim=2, obs_dim=4)
    net = policy.build_net(8).eval()
    for block in net.blocks:
        torch.nn.init.normal_(block.modulation[1].weight, std=0.5)
    g = torch.Generator().manual_seed(1)
    features, sample = torch.randn(1, 2, 8, generator=g), torch.randn(1, 10, 2, generator=g)
    padded = torch.cat([sample, sample[:, -1:].expand(-1, 5, -1)], dim=1)
    scale = torch.ones(1, 12)
    with torch.no_grad():
        plain = _net_outputs(net, sample, features, scale)
        with_padding = _net_outputs(net, padded, features, torch.cat([scale, torch.zeros(1, 5)], dim=1))
    torch.testing.assert_close(with_padding[:, :10], plain, rtol=1e-5, atol=1e-6)


def test_windows_with_denser_actions_take_real_targets(coarse_demos):
    """Observations 4 samples apart, actions 2 apart (r_a = r_o / 2): the past action at the
    observations' spacing, then twice as many actions covering the same time, all demo targets."""
    episode = coarse_demos.episodes[0]
    windows = coarse_demos.windows(2, 4, stride=4, action_stride=2)
    steps, t = len(episode.actions), 5
    np.testing.assert_array_equal(windows.observations[t], episode.observations[[t - 4, t]])
    past = episode.actions[t - 4 + 3]
    future = episode.actions[np.minimum(t + 2 * np.arange(6) + 1, steps - 1)]
    np.testing.assert_array_equal(windows.actions[t], np.concatenate([past[None], future]))
    assert windows.source_hz[t] == 2.5 / 4
    with pytest.raises(ValueError, match="multiple"):
        coarse_demos.windows(2, 4, stride=3, action_stride=2)


@pytest.mark.parametrize("discretization", ["euler", "zoh"])
def test_discretization_reaches_every_scan(discretization):
    policy = policies.make("dispo", **TINY, discretization=discretization, scan_direction="bidirectional")
    net = policy.build_net(8)
    assert {b.mixer.zoh for b in net.blocks} == {discretization == "zoh"}


def test_declared_variants_set_their_config_and_others_are_labels():
    paper = policies.make("dispo", variant="paper")
    assert (paper.config.prediction_type, paper.config.discretization, paper.config.scan_direction) == (
        "epsilon", "zoh", "causal")
    assert policies.make("dispo", variant="no-ft").config.finetune_steps == 0
    paper_no_ft = policies.make("dispo", variant="paper-no-ft").config
    assert paper_no_ft == replace(paper.config, finetune_steps=0) and paper.config.finetune_steps > 0
    assert policies.make("dispo", variant="paper", prediction_type="sample").config.prediction_type == "sample"
    assert policies.make("dispo", variant="my-label").config == policies.make("dispo").config


@pytest.mark.parametrize(("option", "neutral", "other"), [
    ("augment_action_finer", [1], [1, 2]), ("action_units", "pose", "per_step"),
    ("fine_noise", "independent", "shared"), ("replan_every", 0, 4)])
def test_retired_options_are_read_at_their_neutral_value_and_refused_at_any_other(option, neutral, other):
    """Checkpoints and records saved before the ablations retired them hold these options at
    their neutral value: such a config loads as today's; another value is refused, named."""
    saved = {**policies.make("dispo").config.to_dict(), option: neutral}  # as JSON gives it
    assert DiSPoConfig.from_saved(saved) == policies.make("dispo").config
    assert option not in DiSPoConfig.from_saved(saved).to_dict()
    refused = rf"^dispo: {option} is a retired option; .* not at {re.escape(json.dumps(other))}$"
    with pytest.raises(ValueError, match=refused):
        DiSPoConfig.from_saved({**saved, option: other})
    with pytest.raises(ValueError, match=rf"{option} is a retired option"):
        policies.make("dispo", **{option: other})


@pytest.mark.parametrize("step_scale_mode", ["fixed", "adaptive"])
def test_loss_cut_to_each_rows_length_equals_the_padded_batch_loss(coarse_demos, step_scale_mode):
    """Rows of different lengths (original and 2x pseudo windows, as in a fine-tuning round) go
    through the network one length at a time; the loss is the one of the whole padded batch,
    whose padding changes no real output (plus φ_r's loss with adaptive step scales)."""
    policy = policies.make("dispo", **TINY, train_steps=1, eval_every=1, step_scale_mode=step_scale_mode)
    policy.fit(coarse_demos, progress=False)
    for block in policy.model.net.blocks:
        torch.nn.init.normal_(block.modulation[1].weight, std=0.5)
    data = concat_window_tensors([policy.prepare(coarse_demos), policy.pseudo_demonstrations(coarse_demos, finer=2)])
    rows = torch.arange(0, len(data["actions"]), 7)  # every length present
    batch = {k: v[rows] for k, v in data.items()}
    assert len((batch["step_scale"] > 0).sum(1).unique()) == 2
    grouped = policy.loss(batch, torch.Generator().manual_seed(0))
    features, noisy, steps, target = policy.noised(batch, torch.Generator().manual_seed(0))
    predicted, reconstruction = policy.model.net(noisy, steps, features, batch["step_scale"], reconstruct=True)
    mask = batch["loss_mask"][..., None]
    states = policy.model.obs_encoder.state_normalizer.normalize(batch["state"])
    padded = (((predicted - target).square() * mask).sum() / (mask.sum() * target.shape[-1])
              + policy.config.obs_loss_weight * (reconstruction - states).square().mean())
    if step_scale_mode == "adaptive":
        straightness = torch.sigmoid(policy.model.net.step_scale_predictor(features))
        weight = batch["straightness_mask"]
        assert weight.any()
        padded = padded + ((straightness - batch["straightness_target"]).square() * weight).sum() / weight.sum()
    torch.testing.assert_close(grouped, padded, rtol=1e-5, atol=1e-7)


def test_the_runs_target_rate_reaches_the_fine_tuning(tmp_path):
    """--target-hz 10 used to evaluate at 10 Hz while fine-tuning still climbed to the config's 20 Hz."""
    from cfbench.app.run import run
    from cfbench.app.spec import RunSpec, Workspace

    spec = RunSpec("dispo", "PassagePassing", (2.5,), target_hz=10.0, episodes=2, n_demos=2, val_episodes=0,
                   overrides={**TINY, "finetune_steps": 2, "train_steps": 4, "eval_every": 4, "generation_batch": 8})
    workspace = Workspace(tmp_path / "demos", tmp_path / "c")
    record, _ = run(spec, workspace, results_dir=tmp_path / "r", progress=False)
    assert record["provenance"]["config"]["target_hz"] == 10.0
    assert [phase["name"] for phase in record["training"]["phases"]][1:] == [
        "fine-tuning at 2x (5 Hz)", "fine-tuning at 4x (10 Hz)"]
    record, _ = run(replace(spec, target_hz=20.0), workspace, results_dir=tmp_path / "r", progress=False)
    assert record["training"]["phases"][-1]["name"] == "fine-tuning at 8x (20 Hz)"  # the protocol's 20 Hz


def test_checkpoints_with_two_mixers_per_block_load_into_the_fused_layer():
    """Checkpoints written before the fused bidirectional layer (``mixer`` and ``reverse_mixer``
    per block) load unchanged: each block's layer holds the two mixers' weights."""
    from policies.ssm.mamba import BidirectionalMixer, MambaMixer

    net = policies.make("dispo", **TINY).build_net(8)
    pairs = [[MambaMixer(16, d_state=4, d_conv=0) for _ in range(2)] for _ in net.blocks]
    old_layout = {key: tensor for key, tensor in net.state_dict().items() if ".mixer." not in key}
    for index, pair in enumerate(pairs):
        for name, mixer in zip(("mixer", "reverse_mixer"), pair):
            old_layout |= {f"blocks.{index}.{name}.{key}": tensor for key, tensor in mixer.state_dict().items()}
    net.load_state_dict(old_layout)
    for block, (forward, reverse) in zip(net.blocks, pairs):
        for name, tensor in BidirectionalMixer.fuse_state(forward.state_dict(), reverse.state_dict()).items():
            assert torch.equal(block.mixer.state_dict()[name], tensor), name
