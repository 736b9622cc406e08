"""VQ-BeT: the residual-VQ tokenizer, the two training phases, sampling, persistence."""

import numpy as np
import pytest
import torch

import policies
from cfbench.datasets import DemoDataset, load_demos
from cfbench.interface import EpisodeContext

TINY = {"gpt_n_layer": 1, "gpt_n_head": 2, "gpt_n_embd": 32, "latent_dim": 16, "tokenizer_hidden_dim": 64,
        "batch_size": 32, "warmup_steps": 5, "n_obs_steps": 2}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return load_demos("PassagePassing", (10.0,), n=8, demos_dir=tmp_path_factory.mktemp("demos"))


@pytest.fixture(scope="module")
def trained(demos, tmp_path_factory):
    """Trained on all but the last demo (held out for the tokenizer test)."""
    seen = DemoDataset(demos.env_id, demos.rates, demos.obs_mode, demos.episodes[:-1])
    policy = policies.make("vq-bet", **TINY, tokenizer_steps=400, train_steps=30, eval_every=30)
    history = policy.fit(seen, work_dir=tmp_path_factory.mktemp("run"), progress=False)
    return policy, history


def test_tokenizer_reconstructs_held_out_chunks(trained, demos):
    policy, _ = trained
    held_out = DemoDataset(demos.env_id, demos.rates, demos.obs_mode, demos.episodes[-1:])
    data = policy.prepare(held_out)
    chunks = policy.target_chunks(data["actions"]).flatten(0, 1)
    with torch.no_grad():
        codes = policy.model.tokenizer.codes(chunks)
        error = (policy.model.tokenizer.decode(codes, chunks.shape[1:]) - chunks).abs().mean()
    mean_chunk_error = (chunks - chunks.mean(dim=0)).abs().mean()  # what a single code would reach
    seen_error = trained[1]["phases"][0]["reconstruction_l1"]
    assert error < 0.4 * mean_chunk_error and error < 1.5 * seen_error, (error, mean_chunk_error, seen_error)


def test_two_phases_use_more_than_one_code_and_freeze_the_tokenizer(trained, demos, tmp_path):
    policy, history = trained
    tokenizer_phase, transformer_phase = history["phases"]
    assert tokenizer_phase["name"] == "tokenizer" and transformer_phase["name"] == "behaviour transformer"
    assert min(tokenizer_phase["codes_used"]) > 1 and tokenizer_phase["code_pairs_used"] > 2
    assert history["step"] == 400 + 30
    # the tokenizer's weights are the ones the transformer phase started from: retraining the
    # transformer alone (resumed tokenizer) gives the same tokenizer
    again = policies.make("vq-bet", **TINY, tokenizer_steps=400, train_steps=30, eval_every=30)
    seen = DemoDataset(demos.env_id, demos.rates, demos.obs_mode, demos.episodes[:-1])
    again.fit(seen, progress=False)
    for name, value in policy.model.tokenizer.state_dict().items():
        torch.testing.assert_close(value, again.model.tokenizer.state_dict()[name], msg=name)


def test_rollout_chunk_is_upsampled_and_deterministic_per_episode(trained, demos):
    policy, _ = trained
    c = policy.config
    obs = np.stack([demos.episodes[0].observations[: c.n_obs_steps]] * 2)

    def act(seeds):
        for slot, seed in enumerate(seeds):
            policy.reset(slot, EpisodeContext("cfbench/PassagePassing-v0", seed, 20.0))
        return policy.act(obs[: len(seeds)], slots=list(range(len(seeds))), reference_hz=10.0, target_hz=20.0)

    first = act([1, 2])
    assert first.shape == (2, 2 * c.n_action_steps, 2) and np.isfinite(first).all()
    np.testing.assert_allclose(act([1, 2]), first, atol=1e-5)
    np.testing.assert_allclose(act([1])[0], first[0], atol=1e-5)  # batching does not change a slot


def test_save_load_round_trip(trained, demos, tmp_path):
    policy, _ = trained
    policy.save(tmp_path / "vqbet")
    loaded = policies.load(tmp_path / "vqbet")
    obs = np.stack([demos.episodes[1].observations[: policy.config.n_obs_steps]])
    outputs = []
    for p in (policy, loaded):
        p.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 5, 20.0))
        outputs.append(p.act(obs, slots=[0], reference_hz=10.0, target_hz=20.0))
    np.testing.assert_array_equal(*outputs)


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="n_action_steps"):
        policies.make("vq-bet", n_action_steps=6, action_chunk_size=5)
    with pytest.raises(ValueError, match="temperature"):
        policies.make("vq-bet", temperature=0.0)
