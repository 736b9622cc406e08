import dataclasses
import json

import numpy as np
import pytest

import policies
from cfbench.app.commands import train_main
from cfbench.expert import ExpertTrajectory
from cfbench.interface import EpisodeContext


def test_factory_errors_are_clear():
    with pytest.raises(ValueError, match="unknown policy 'dp-x'; available: .*tracker"):
        policies.make("dp-x")
    with pytest.raises(ValueError, match="unknown config field"):
        policies.make("tracker", horizon=3)


def _context():
    times = np.linspace(0.0, 2.0, 401)
    poses = np.stack([100 * times, np.zeros_like(times)], axis=1)
    return EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0, ExpertTrajectory(times, poses))


def test_tracker_plans_then_holds_the_goal():
    tracker = policies.make("tracker")
    tracker.reset(0, _context())
    plan = tracker.act(None, slots=[0], reference_hz=2.5, target_hz=20)[0]
    assert plan.shape == (40, 2)
    assert np.allclose(plan[:8, 0], 5.0 * np.arange(1, 9))  # linear: exact
    assert np.allclose(plan[-1], [200.0, 0.0])
    assert np.allclose(tracker.act(None, slots=[0], reference_hz=2.5, target_hz=20)[0], [[200.0, 0.0]])
    with pytest.raises(ValueError, match="expert trajectory"):
        tracker.reset(1, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0, None))


def test_save_load_round_trip_and_corrupt_checkpoints(tmp_path):
    tracker = policies.make("tracker")
    tracker.save(tmp_path / "ckpt")
    loaded = policies.load(tmp_path / "ckpt")
    assert type(loaded) is type(tracker) and loaded.config == tracker.config
    loaded.reset(0, _context())
    tracker.reset(0, _context())
    assert np.array_equal(loaded.act(None, slots=[0], reference_hz=5, target_hz=20),
                          tracker.act(None, slots=[0], reference_hz=5, target_hz=20))

    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3])
    with pytest.raises(ValueError, match="corrupt or truncated checkpoint weights"):
        policies.load(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt checkpoint config"):
        policies.load(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"policy": "nope"}))
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        policies.load(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint file missing"):
        policies.load(tmp_path / "elsewhere")


@pytest.mark.parametrize("name", policies.available())
def test_every_config_field_is_documented(name):
    """--show-config prints each field's ``#:`` comment: none may be missing."""
    config_class = policies.policy_class(name).config_class
    docs = policies.config_docs(config_class)
    fields = [f.name for f in dataclasses.fields(config_class)]
    assert [f for f in fields if not docs.get(f)] == []


def test_show_config_lists_every_key_with_its_value_and_meaning(capsys):
    train_main(["--policy", "dp-c", "--show-config", "--profile", "gpu", "--set", "horizon=12"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.split("\n\ndeclared variants")[0].splitlines()[2:]}
    assert "  straight: interpolation=\"linear\"" in out  # the paper's execution, a declared variant
    assert set(rows) == {f.name for f in dataclasses.fields(policies.policy_class("dp-c").config_class)}
    assert "[256, 512, 1024]" in rows["down_dims"] and "U-Net levels" in rows["down_dims"]  # the gpu profile
    assert rows["horizon"].split()[1] == "12"  # --set applies


def test_show_config_applies_a_declared_variant_and_lists_them(capsys):
    train_main(["--policy", "dispo", "--show-config", "--variant", "paper", "--set", "discretization=euler"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line and not line.startswith(" ")}
    assert rows["prediction_type"].split()[1] == '"epsilon"'  # the variant's
    assert rows["discretization"].split()[1] == '"euler"'  # --set applies over it
    assert "declared variants" in out and "  paper: " in out and "  no-ft: finetune_steps=0" in out
