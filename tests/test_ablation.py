"""The ablation harness (cfbench.app.ablation): what each row's timing columns mean."""

import json
import types

from cfbench.app import ablation
from cfbench.app.spec import RunSpec


def test_measure_times_the_measuring_alone_and_reports_the_trained_models_own_training(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(ablation.time, "perf_counter", lambda: clock["now"])

    def train_or_load(*args, **kwargs):
        clock["now"] += 1000.0  # training, done in this call
        return types.SimpleNamespace(config=None), {"best_score": 0.5, "train_seconds": 1234.0}

    def probe(*args):
        clock["now"] += 7.0  # the measuring
        return {"waypoint_error": {"mean": 1.0}, "inbetween_error": {"mean": 2.0}, "zigzag": None,
                "waypoint_error_by_step": [0.5, 1.5]}

    monkeypatch.setattr(ablation, "train_or_load", train_or_load)
    monkeypatch.setattr(ablation.Workspace, "demos", lambda *args, **kwargs: types.SimpleNamespace(reference_hz=5.0))
    monkeypatch.setattr(ablation, "probe", probe)
    row = ablation.measure(RunSpec("pf-dag", "ButtonTouch", (5.0,), "no-modes"))
    assert row["train s"] == 1234
    assert row["measure s"] == 7
    assert row["val success %"] == 50.0 and row["inbetween err"] == 2.0 and row["zigzag"] is None
    assert row["waypoint err at 0.2, 0.4, ... 1.6 s"] == "0.5 / 1.5 / - / - / - / - / - / -"


def test_waypoint_errors_by_horizon_line_up_across_rates():
    every_fourth = " / ".join(f"{4.0 * n:.1f}" for n in range(1, 9))
    assert ablation.by_horizon([float(k) for k in range(1, 33)], 20.0) == every_fourth
    assert ablation.by_horizon([1.0, 2.0, 3.0, 4.0], 2.5) == "- / 1.0 / - / 2.0 / - / 3.0 / - / 4.0"


def test_merged_tables_keep_every_run_command_and_list_a_cell_measured_twice_once(tmp_path):
    def run(name, command, variants, rows):
        header = f"dp-t ablation (validation seeds only): `{command}`\n\n" + "\n".join(
            f"- `{variant}`: {overrides}" for variant, overrides in variants.items())
        (tmp_path / f"{name}.md").write_text(header + "\n\n| table |\n")
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
        return tmp_path / f"{name}.json"

    base = {"variant": "base", "env": "ButtonTouch", "source Hz": "2.5", "val success %": 2.0}
    first = run("a", "python -m cfbench.app.ablation --variant base", {"base": "(defaults)"}, [base])
    second = run("b", "python -m cfbench.app.ablation --variant base --variant ens1 ensemble_knots=1",
                 {"base": "(defaults)", "ens1": "ensemble_knots=1"},
                 [{**base, "val success %": 4.0}, {**base, "variant": "ens1", "val success %": 54.0}])
    table = ablation.merge([first, second], tmp_path / "merged.md")
    assert table[["variant", "overrides", "val success %"]].values.tolist() == [
        ["base", "(defaults)", 2.0], ["ens1", "ensemble_knots=1", 54.0]]
    text = (tmp_path / "merged.md").read_text()
    assert "- `python -m cfbench.app.ablation --variant base`\n" in text and "--variant ens1 ensemble_knots=1" in text
