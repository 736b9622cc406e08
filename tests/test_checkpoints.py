"""The checkpoint cache never hands back weights it did not train: a finished run is checked
against the SHA-256 in its summary, and a corrupt file is named with the way out."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import policies
from cfbench.app.cache import SUMMARY, train_or_load
from cfbench.app.spec import RunSpec, Workspace
from cfbench.files import CheckpointError

TINY = {"down_dims": [8, 16], "step_embed_dim": 8, "n_groups": 4, "batch_size": 8, "warmup_steps": 2}


def _train(tmp_path, steps=4, every=4, retrain=False, validation=0, progress=False):
    spec = RunSpec("dp-c", "PassagePassing", (20.0,), overrides={**TINY, "train_steps": steps, "eval_every": every},
                   n_demos=2, val_episodes=validation)
    return train_or_load(spec, Workspace(tmp_path / "demos", tmp_path / "ckpt"), retrain=retrain, progress=progress)


def test_a_finished_run_is_loaded_only_with_the_weights_it_trained(tmp_path):
    policy, _ = _train(tmp_path)
    run = next((tmp_path / "ckpt").rglob(SUMMARY)).parent
    loaded, _ = _train(tmp_path)  # from the cache
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())

    weights = run / "policy" / "model.safetensors"
    save_file({k: torch.zeros_like(v) for k, v in load_file(weights).items()}, weights)  # zeroed weights
    with pytest.raises(CheckpointError, match=r"model.safetensors is missing or not the weights this run trained"):
        _train(tmp_path)
    (run / SUMMARY).write_text('{"trunc')
    with pytest.raises(CheckpointError, match=rf"{SUMMARY} is corrupt .*--retrain"):
        _train(tmp_path)
    retrained, summary = _train(tmp_path, retrain=True)  # --retrain: trained again, identical
    assert all(torch.equal(v, retrained.state_dict()[k]) for k, v in policy.state_dict().items())
    assert json.loads((run / SUMMARY).read_text())["weights_sha256"] == summary["weights_sha256"]


@pytest.mark.parametrize("name", ["train_state.json", "train_state.safetensors", "best/model.safetensors"])
def test_a_corrupt_training_state_is_named_on_resume(tmp_path, name):
    _train(tmp_path, steps=8, every=4, validation=1)  # validated: a best/ checkpoint is kept
    run = next((tmp_path / "ckpt").rglob(SUMMARY)).parent
    (run / SUMMARY).unlink()  # as if interrupted after the last evaluation: the next call resumes
    (run / name).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=rf"{name} is missing, corrupt or incomplete.*--retrain"):
        _train(tmp_path, steps=8, every=4, validation=1)


def test_a_training_state_of_another_model_layout_is_refused_on_resume(tmp_path):
    """A state saved by another version of a model (DiSPo's bidirectional blocks were two mixers
    before they were one fused layer) names the way out instead of restoring the optimiser and
    EMA by position into the wrong parameters."""
    _train(tmp_path, steps=8, every=4)
    run = next((tmp_path / "ckpt").rglob(SUMMARY)).parent
    (run / SUMMARY).unlink()  # as if interrupted: the next call resumes
    tensors = load_file(run / "train_state.safetensors")
    save_file({**tensors, f"ema.{sum(k.startswith('ema.') for k in tensors)}": torch.zeros(3)},
              run / "train_state.safetensors")  # one parameter more than this model has
    with pytest.raises(CheckpointError, match=r"not this model's .*--retrain"):
        _train(tmp_path, steps=8, every=4)


def test_validation_shows_its_own_progress(tmp_path, capsys):
    """The training bar used to freeze for a minute at every validation, with no word why."""
    _train(tmp_path, validation=2, progress=True)
    err = capsys.readouterr().err
    assert "train dp-c" in err and "validation:" in err


def test_a_checkpoint_saved_before_a_field_existed_loads_as_it_ran(tmp_path):
    """DiSPo's default scan became bidirectional after round 1; a round-1 checkpoint's config has
    no scan_direction and must load causal (its NEUTRAL value), with its weights."""
    old = policies.make("dispo", d_model=16, n_layer=1, d_state=4, scan_direction="causal", discretization="euler",
                        action_dim=2, obs_dim=4)
    old.model = old.build_model()
    old.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for field in ("scan_direction", "discretization"):
        del config[field]
    retired = {"augment_action_finer": [1], "action_units": "pose", "fine_noise": "independent", "replan_every": 0}
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, **retired}))  # as round 1 wrote them
    loaded = policies.load(tmp_path / "old")
    assert (loaded.config.scan_direction, loaded.config.discretization) == ("causal", "euler")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in old.state_dict().items())
    assert policies.make("dispo").config.scan_direction == "bidirectional"  # new configs: today's default
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, **retired, "fine_noise": "shared"}))
    with pytest.raises(ValueError, match="fine_noise is a retired option"):  # a model this version cannot run
        policies.load(tmp_path / "old")


def test_a_fixed_step_scale_checkpoint_with_phi_r_weights_loads_without_them(tmp_path):
    """Every run built φ_r until only adaptive step scales did: a fixed-mode checkpoint of then
    holds its tensors, which nothing reads; an adaptive one must still have them."""
    tiny = {"d_model": 16, "n_layer": 1, "d_state": 4, "action_dim": 2, "obs_dim": 4}
    adaptive = policies.make("dispo", **tiny, step_scale_mode="adaptive")
    phi_r = {k: v for k, v in adaptive.state_dict().items() if k.startswith("net.step_scale_predictor.")}
    fixed = policies.make("dispo", **tiny)
    assert phi_r and not set(phi_r) & set(fixed.state_dict())
    fixed.save(tmp_path / "fixed")
    weights = tmp_path / "fixed" / "model.safetensors"
    save_file({**load_file(weights), **phi_r}, weights)  # as a fixed-mode run wrote it then
    loaded = policies.load(tmp_path / "fixed")
    assert loaded.state_dict().keys() == fixed.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in fixed.state_dict().items())
    adaptive.save(tmp_path / "adaptive")
    weights = tmp_path / "adaptive" / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if k not in phi_r}, weights)
    with pytest.raises(ValueError, match=r"checkpoint does not match 'dispo': missing \['net.step_scale_predictor"):
        policies.load(tmp_path / "adaptive")


def test_a_cached_runs_edited_config_is_refused(tmp_path):
    """Editing a cached checkpoint's config.json (horizon, n_action_steps, ...) used to change a
    published-looking record with exit 0: the config is checksummed like the weights."""
    _train(tmp_path)
    run = next((tmp_path / "ckpt").rglob(SUMMARY)).parent
    assert json.loads((run / SUMMARY).read_text())["config_sha256"]
    config = run / "policy" / "config.json"
    values = json.loads(config.read_text())
    config.write_text(json.dumps({**values, "num_inference_steps": 2}, indent=2, sort_keys=True))
    with pytest.raises(CheckpointError, match=r"config.json is missing or not the config this run trained"):
        _train(tmp_path)
    # a run finished before summaries held the config's checksum has it pinned at its first load
    config.write_text(json.dumps(values, indent=2, sort_keys=True))
    summary = json.loads((run / SUMMARY).read_text())
    del summary["config_sha256"]
    (run / SUMMARY).write_text(json.dumps(summary))
    _train(tmp_path)
    assert "config_sha256" in json.loads((run / SUMMARY).read_text())


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    """A checkpoint whose config.json changed a width used to end in torch's 115-line size mismatch."""
    _train(tmp_path)
    folder = next((tmp_path / "ckpt").rglob("policy"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "down_dims": [16, 32]}))
    with pytest.raises(ValueError, match=r"^checkpoint weights do not fit the network its config describes \(size "
                                         r"mismatch for .*\); was config.json edited\?$"):
        policies.load(folder)
