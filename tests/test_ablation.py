"""benchmarks/ablation.py: what each row's timing columns mean."""

import importlib.util
import types
from pathlib import Path

from cfbench.runner import TrainingSetup

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


def load_ablation():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_times_the_measuring_alone_and_reports_the_trained_models_own_training(monkeypatch):
    ablation = load_ablation()
    clock = {"now": 0.0}
    monkeypatch.setattr(ablation.time, "perf_counter", lambda: clock["now"])

    def train_or_load(*args):
        clock["now"] += 1000.0  # training, done in this call
        return types.SimpleNamespace(config=None), {"best_score": 0.5, "train_seconds": 1234.0}

    def probe(*args):
        clock["now"] += 7.0  # the measuring
        return {"waypoint_error": {"mean": 1.0}, "inbetween_error": {"mean": 2.0}, "zigzag": None}

    monkeypatch.setattr(ablation, "train_or_load", train_or_load)
    monkeypatch.setattr(ablation, "load_demos", lambda *args, **kwargs: types.SimpleNamespace(reference_hz=None))
    monkeypatch.setattr(ablation, "probe", probe)
    row = ablation.measure("pf-dag", "no-modes", {}, "ButtonTouch", (5.0,), TrainingSetup())
    assert row["train s"] == 1234
    assert row["measure s"] == 7
    assert row["val success %"] == 50.0 and row["inbetween err"] == 2.0 and row["zigzag"] is None


def test_the_table_lists_a_declared_variants_own_overrides_before_the_commands():
    ablation = load_ablation()
    assert ablation.variant_text({"n_modes": 1}, []) == "n_modes=1"
    assert ablation.variant_text({"n_modes": 1}, ["sampling_steps=1"]) == "n_modes=1 sampling_steps=1"
    assert ablation.variant_text({}, []) == "(defaults)"
