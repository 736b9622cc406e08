"""The benchmark's defining properties on seeds nobody reports.

- The Tracker (the env's own expert, downsampled) succeeds from 20 Hz samples and fails from
  2.5 Hz ones (``benchmarks/calibration.py`` gives the test-seed table);
- slow (``pytest -m slow``, about 5 minutes): a learned baseline trained with the default CPU
  budget on 20 Hz demos learns PassagePassing, so a coarse-rate failure is about the rate.
"""

import pytest

import policies
from cfbench.app.cache import train_or_load
from cfbench.app.spec import RunSpec, Workspace
from cfbench.evaluate import evaluate
from cfbench.protocol import VALIDATION_SEEDS, seed_list


def test_tracker_calibration_holds_on_the_validation_seeds(env_name):
    success = {hz: evaluate(policies.make("tracker"), env_name, hz, seeds=seed_list(VALIDATION_SEEDS),
                            progress=False)["metrics"]["success_rate"] for hz in (2.5, 20.0)}
    assert success[20.0] >= 0.95 and success[2.5] <= 0.15, success


@pytest.mark.slow
def test_dp_t_learns_passage_passing_from_fine_demos(tmp_path):
    workspace = Workspace(tmp_path / "demos", tmp_path / "checkpoints")
    _, summary = train_or_load(RunSpec("dp-t", "PassagePassing", (20.0,)), workspace, progress=False)
    assert summary["best_score"] >= 0.6, summary["validation"]  # 82 % when the default was chosen
