"""Fingerprints of tiny training runs: a refactor that must not change results prints the same lines.

Fits small versions of the learned policies through every training phase (DiSPo's pretraining,
its three fine-tuning rounds with DDPM inpainting, and its adaptive rollout; VQ-BeT's two
phases; DP-C; DP-T; PF-DAG's two phases; E0; CT-T) on 3 PassagePassing 2.5 Hz demos, then hashes the
selected weights and one batch of 20 Hz actions. Run it on the commit before and after a change and compare::

    git stash && python scripts/fingerprint.py > before.txt && git stash pop
    python scripts/fingerprint.py > after.txt && diff before.txt after.txt
"""

import hashlib
import tempfile

import numpy as np
import torch

import policies
from cfbench.datasets import load_demos
from cfbench.interface import EpisodeContext

torch.set_num_threads(1)  # reductions are reproducible on one thread
demos = load_demos("PassagePassing", (2.5,), n=3, demos_dir=tempfile.mkdtemp())
cases = {
    "dispo": dict(d_model=16, n_layer=1, d_state=4, batch_size=16, warmup_steps=5, train_steps=30, eval_every=30,
                  finetune_steps=10, generation_batch=16, sampler="ddpm", num_train_timesteps=20),
    "dispo-adaptive": dict(d_model=16, n_layer=1, d_state=4, batch_size=16, warmup_steps=5, train_steps=30,
                           eval_every=30, finetune_steps=0, step_scale_mode="adaptive"),
    "vq-bet": dict(tokenizer_steps=30, train_steps=30, eval_every=30, batch_size=16, gpt_n_embd=32),
    "dp-c": dict(down_dims=[16, 32], step_embed_dim=16, n_groups=4, train_steps=30, eval_every=30,
                 batch_size=16),
    "dp-t": dict(n_layer=1, n_emb=16, train_steps=30, eval_every=30, batch_size=16),
    "pf-dag": dict(down_dims=[16, 32], step_embed_dim=16, n_groups=4, n_modes=4, mode_steps=10, train_steps=30,
                   eval_every=30, batch_size=16, selector_hidden_dim=16, mode_embed_dim=8),
    "e0": dict(n_layer=1, n_emb=16, bins=16, refinement_steps=3, train_steps=30, eval_every=30, batch_size=16),
    "ct-t": dict(n_layer=1, n_emb=16, train_steps=30, eval_every=30, batch_size=16),
}
for label, overrides in cases.items():
    name = label.split("-adaptive")[0]
    policy = policies.make(name, **overrides)
    with tempfile.TemporaryDirectory() as work:
        history = policy.fit(demos, work_dir=work, validate=lambda p: 0.5, progress=False)
    digest = hashlib.sha256()
    for key, value in sorted(policy.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().numpy().tobytes())
    obs = np.stack([e.observations[:policy.config.n_obs_steps] for e in demos.episodes])
    for slot in range(len(obs)):
        policy.reset(slot, EpisodeContext("cfbench/PassagePassing-v0", 20000 + slot, 20.0))
    actions = policy.act(obs, slots=list(range(len(obs))), reference_hz=2.5, target_hz=20.0)
    actions = np.concatenate([np.asarray(a).ravel() for a in actions])
    print(label, "weights", digest.hexdigest()[:16], "actions", hashlib.sha256(actions.tobytes()).hexdigest()[:16],
          "steps", history["step"], "best", history["best_step"])
