import copy
import itertools
import json
import os
import re
import shutil
import stat

import numpy as np
import pytest

import policies
from cfbench.app.commands import leaderboard_main
from cfbench.files import _FILE_MODE
from cfbench.leaderboard.markdown import render_markdown
from cfbench.leaderboard.plots import line_styles
from cfbench.leaderboard.regenerate import page, regenerate
from cfbench.leaderboard.standings import compute_table, repeated_training_hours
from cfbench.leaderboard.submission import submit
from cfbench.protocol import PROTOCOL
from cfbench.results import (
    RecordError,
    format_label,
    parse_label,
    read_all,
    read_record,
    record_filename,
    validate,
    write_record,
)


def _record(policy="tracker", rate=2.5, successes=(True, False, True), episodes=100):
    """A valid record over the first ``episodes`` test seeds, ``successes`` repeating over them."""
    rows = [
        {"seed": 20000 + i, "success": s, "collision": not s, "steps": 40 + i % 7, "path_deviation": 1.5}
        for i, s in zip(range(episodes), itertools.cycle(successes))
    ]
    return {
        "schema_version": 2,
        "protocol": PROTOCOL,
        "policy": policy,
        "variant": "",
        "train_seed": 0,
        "privileged": policy == "tracker",
        "env_id": "cfbench/PassagePassing-v0",
        "source_hz": [rate],
        "reference_hz": rate,
        "target_hz": 20.0,
        "fidelity": {"waypoint_error": {"mean": 0.0, "p90": 0.0}, "inbetween_error": {"mean": 2.0, "p90": 5.0},
                     "zigzag": {"mean": -0.5, "p90": -1.0}, "queries": 50, "actions": 5000,
                     "seeds": [10000, 10050]},
        "metrics": {
            "episodes": len(rows),
            "success_rate": sum(r["success"] for r in rows) / len(rows),
            "collision_rate": sum(r["collision"] for r in rows) / len(rows),
            "mean_steps_to_success": float(np.mean([r["steps"] for r in rows if r["success"]])) if any(successes)
            else None,
            "path_deviation": 1.5,
            "inference_ms_per_call": 0.1,
            "mean_batch_per_call": 3.0,
            "train_wall_s": 0.0,
            "eval_wall_s": 1.0,
        },
        "episodes": rows,
        "provenance": {
            "git_commit": "abc123",
            "git_dirty": False,
            "command": "cfbench-eval --policy tracker",
            "test_seeds": [20000, 20000 + episodes],
            "config": {"policy": policy},
            "machine": {"cpu_count": 2},
            "cfbench_version": "0.1.0",
        },
    }


def _broken(mutate):
    record = copy.deepcopy(_record())
    mutate(record)
    return record


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("metrics"), "'metrics' is a required property"),
        (lambda r: r["metrics"].update(success_rate=1.5), "metrics/success_rate"),
        (lambda r: r["metrics"].update(success_rate=1.0), "disagrees with the episode rows"),
        (lambda r: r["metrics"].update(episodes=7), "episode rows"),
        (lambda r: r.update(env_id="PassagePassing"), "env_id"),
        (lambda r: r["episodes"][0].update(steps="many"), "episodes/0/steps"),
        (lambda r: r["episodes"][1].update(seed=20000), "not exactly the test seeds"),
        (lambda r: r.update(extra=1), "Additional properties"),
    ],
)
def test_malformed_records_are_rejected_with_the_reason(mutate, message):
    with pytest.raises(RecordError, match=message):
        validate(_broken(mutate))


def test_write_read_round_trip_is_atomic(tmp_path):
    path = write_record(_record(), tmp_path)
    assert read_record(path) == _record()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock")
    assert written == [path.name, f"eval_info/{path.stem}/eval_info.json"]  # no temp files left behind
    with pytest.raises(RecordError):
        write_record(_broken(lambda r: r.pop("episodes")), tmp_path)
    assert read_record(path) == _record()  # a rejected write leaves the old record intact


def test_truncated_file_is_rejected(tmp_path):
    path = write_record(_record(), tmp_path)
    path.write_text(path.read_text()[:200])
    with pytest.raises(RecordError, match="not valid JSON"):
        read_all(tmp_path)


def test_leaderboard_is_idempotent_and_rejects_duplicates(tmp_path):
    results = tmp_path / "results"
    write_record(_record(rate=2.5), results)
    write_record(_record(rate=20.0, successes=(True, True, True)), results)
    output = tmp_path / "leaderboard.md"
    regenerate(results, output)
    text, plot = output.read_text(), (results / "plots" / "PassagePassing.png").read_bytes()
    assert "| tracker †" in text and "67 [57–75] (33) ×1" in text and "100 [96–100] (0) ×1" in text
    regenerate(results, output)
    assert output.read_text() == text and (results / "plots" / "PassagePassing.png").read_bytes() == plot

    duplicate = tmp_path / "mine.json"
    duplicate.write_text(json.dumps(_record(rate=2.5)))
    with pytest.raises(RecordError, match="duplicates an experiment"):
        submit([duplicate], results)
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps(_record(policy="dp-c", rate=2.5)))
    submit([fresh], results)
    assert "| dp-c " in render_markdown(read_all(results))
    (results / "copy.json").write_text(json.dumps(_record(rate=2.5)))
    with pytest.raises(RecordError, match="copy.json: the file records PassagePassing__tracker__2.5hz"):
        read_all(results)


@pytest.mark.parametrize("label, pair", [("dp-t (straight)", ("dp-t", "straight")), ("dp-t", ("dp-t", "")),
                                         ("dispo (paper-no-ft)", ("dispo", "paper-no-ft"))])
def test_a_label_is_read_back_as_it_is_written(label, pair):
    assert parse_label(label) == pair and format_label(*pair) == label


@pytest.mark.parametrize("label", ["dp-t-straight (x", "dp-t(straight)", "dp-t ()", "dp-t  (straight)",
                                   "dp-t (a b)", "(straight)", "dp-t (a) (b)", ""])
def test_a_malformed_label_is_refused(label):
    with pytest.raises(ValueError, match="bad policy label"):
        parse_label(label)


def test_compute_table_sums_each_policys_hours_and_the_total():
    fast, slow, tracker = _record("dp-c", rate=2.5), _record("dp-c", rate=5.0), _record(rate=2.5)
    fast["metrics"]["train_wall_s"], slow["metrics"]["train_wall_s"] = 1800.0, 5400.0
    tracker["metrics"]["train_wall_s"] = None  # nothing to train
    table = compute_table([tracker, slow, fast])
    assert list(table.index) == ["dp-c", "tracker †", "total"]
    assert table.loc["dp-c"].tolist() == [2, 2.0, 0.0] and table.loc["total"].tolist() == [3, 2.0, 0.0]
    assert "## Compute" in render_markdown([tracker, slow, fast])


def test_every_plotted_line_has_its_own_style_and_a_policys_variants_share_its_colour():
    dispo = ["dispo", "dispo (no-ft)", "dispo (paper)", "dispo (paper-no-ft)", "dispo (adaptive-r)"]
    others = ["d-ma", "dp-c", "dp-t", "e0", "pf-dag", "vq-bet", "a", "b", "c", "d"]
    policy_of = {**{label: "dispo" for label in dispo}, **{name: name for name in others}, "tracker †": "tracker"}
    styles = line_styles(policy_of)
    looks = {(style["color"], style["linestyle"], style["marker"]) for style in styles.values()}
    assert len(looks) == len(policy_of)
    assert len({styles[label]["color"] for label in dispo}) == 1
    first_ten = sorted(others + ["dispo"])[:10]  # tab10's colours, then the grey reference
    assert len({styles[label]["color"] for label in first_ten + ["tracker †"]}) == 11


def test_a_model_or_pretraining_two_records_share_is_reported_as_counted_again():
    with_ft, without_ft, other = _record("dispo"), _record("dispo"), _record("dispo", rate=5.0)
    without_ft["variant"] = "no-ft"
    shared = {"name": "pretraining", "steps": 10, "train_seconds": 1800.0, "dir": "checkpoints/a/pretraining-1"}
    for record, phases in ((with_ft, [shared, {"name": "fine-tuning", "steps": 5, "train_seconds": 60.0}]),
                           (without_ft, [shared]), (other, [{**shared, "dir": "checkpoints/b/pretraining-2"}])):
        record["training"] = {"phases": phases}
    assert repeated_training_hours([with_ft, other]) == 0.0
    assert repeated_training_hours([with_ft, without_ft, other, _record()]) == 0.5
    assert "0.50 h of the train total is training counted again" in render_markdown([with_ft, without_ft, other])
    executed_twice = [_record("dp-c"), _record("dp-c")]  # the straight variant loads the default's model
    executed_twice[1]["variant"] = "straight"
    for record in executed_twice:
        record["training"], record["metrics"]["train_wall_s"] = {"run_dir": "checkpoints/c/dp-c/1"}, 3600.0
    assert repeated_training_hours(executed_twice + [with_ft, without_ft]) == 1.5
    assert "counted again" not in render_markdown([with_ft, other])


def test_leaderboard_cli_reports_malformed_submission(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(lambda r: r.pop("provenance"))))
    with pytest.raises(SystemExit) as exit_info:
        leaderboard_main(["--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "lb.md"),
                          "--submit", str(bad)])
    assert exit_info.value.code == 2
    assert "'provenance' is a required property" in capsys.readouterr().err
    assert not (tmp_path / "lb.md").exists()


def test_committed_leaderboard_matches_results():
    """leaderboard.md is generated from results/, never edited by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = root / "results"
    assert (root / "leaderboard.md").read_text() == page(read_all(results), results, root / "leaderboard.md")
    archive = results / "archive" / "protocol1"  # the paper protocol's page, which the leaderboard links
    assert "](results/archive/protocol1/leaderboard.md)" in (root / "leaderboard.md").read_text()
    assert (archive / "leaderboard.md").read_text() == page(read_all(archive, protocol=1), archive,
                                                             archive / "leaderboard.md", protocol=1)


def test_only_code_changes_make_a_checkout_dirty(tmp_path):
    import subprocess

    from cfbench.results import code_dirty

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "pkg").mkdir()
    for name in ("pkg/code.py", "results/run.json", "leaderboard.md"):
        (tmp_path / name).write_text("v1")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results" / "run.json").write_text("v2")
    (tmp_path / "leaderboard.md").write_text("v2")
    assert not code_dirty(tmp_path / "pkg")  # an earlier run's outputs
    (tmp_path / "pkg" / "code.py").write_text("v2")
    assert code_dirty(tmp_path / "pkg")


# ------------------------------------------------------------ published results (issue 12)
def _write(path, record):
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(env_id="cfbench/Foo-v0"), "'cfbench/Foo-v0' is not a cfbench env"),
        (lambda r: r.update(variant="../../escaped"), "variant"),
        (lambda r: r.update(variant="a|b"), "variant"),
        (lambda r: r.update(policy="dp/c"), "policy"),
        (lambda r: r["metrics"].update(eval_wall_s=float("nan")), "metrics/eval_wall_s is not a finite number"),
        (lambda r: r["episodes"][0].update(path_deviation=float("inf")), "episodes/0/path_deviation"),
        (lambda r: r.update(source_hz=[40.0]), "above the target rate"),
        (lambda r: r["provenance"].update(test_seeds=[20000, 20101]), "not exactly the test seeds"),
        (lambda r: r["episodes"].reverse(), "not exactly the test seeds"),
        (lambda r: r["episodes"][1].update(success=True), "both success and collision"),
        # every summary number is recomputed from the rows
        (lambda r: r["metrics"].update(mean_steps_to_success=42.0), "mean_steps_to_success = 42.0 disagrees"),
        (lambda r: r.update(episodes=[{**row, "success": False, "collision": True} for row in r["episodes"]])
         or r["metrics"].update(success_rate=0.0, collision_rate=1.0), "mean_steps_to_success = .* disagrees .*None"),
        (lambda r: r["metrics"].update(path_deviation=0.5), "path_deviation = 0.5 disagrees"),
        # rates and flags the protocol allows
        (lambda r: r.update(source_hz=[0.001], reference_hz=0.001), "rates must lie between"),
        (lambda r: r.update(source_hz=[2.5, 2.5]), "distinct rates in increasing order"),
        (lambda r: r.update(target_hz=150.0), "does not divide the 200 Hz physics"),
        (lambda r: r.update(source_hz=[5.0, 2.5], reference_hz=5.0), "distinct rates in increasing order"),
        (lambda r: r.update(train_seed=7), "a privileged reference is not trained"),
        (lambda r: r.update(privileged=False, train_seed=7), "training seed 7 without a training section"),
    ],
)
def test_records_that_cannot_be_true_are_rejected(mutate, message):
    with pytest.raises(RecordError, match=message):
        validate(_broken(mutate))


def test_a_bad_submission_writes_nothing_and_later_runs_still_work(tmp_path):
    results, output = tmp_path / "results", tmp_path / "leaderboard.md"
    write_record(_record(), results)
    regenerate(results, output)
    before = sorted(p.name for p in results.iterdir())
    foo = _write(tmp_path / "foo.json", _broken(lambda r: r.update(env_id="cfbench/Foo-v0", variant="x")))
    good = _write(tmp_path / "good.json", _broken(lambda r: r.update(variant="good")))
    bad = _write(tmp_path / "bad.json", _broken(lambda r: r.update(variant="bad") or r.pop("metrics")))
    for files in ([foo], [good, bad], [good, good]):  # unknown env, one bad of two, the same one twice
        with pytest.raises(RecordError):
            submit(files, results)
        assert sorted(p.name for p in results.iterdir()) == before  # all or nothing
    regenerate(results, output)  # the folder is as healthy as before
    assert [p.name for p in submit([good], results)] == [
        "PassagePassing__tracker-good__2.5hz__to20hz__seeds20000-20100__train0.json"]


def test_oversized_submission_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (6 * 1024 * 1024))
    with pytest.raises(RecordError, match="more than a result record can be"):
        read_record(big)


def test_a_rerun_with_another_config_does_not_replace_the_published_record(tmp_path):
    path = write_record(_record(), tmp_path)
    changed = _broken(lambda r: r["provenance"]["config"].update(n_obs_steps=3))
    changed["metrics"]["eval_wall_s"] = 2.0
    with pytest.raises(RecordError, match=r"another config \(n_obs_steps None -> 3\).*--variant"):
        write_record(changed, tmp_path)
    assert read_record(path) == _record()
    rerun = _record()
    rerun["metrics"]["eval_wall_s"] = 3.0  # the same config again: a re-run replaces its record
    write_record(rerun, tmp_path)
    assert read_record(path)["metrics"]["eval_wall_s"] == 3.0


def test_a_config_field_added_since_replaces_the_record_only_at_its_neutral_value(tmp_path):
    """A record made before the tracker had ``interpolation`` ran straight lines: a re-run that
    names them is the same experiment, a curve is another one."""
    path, neutral = write_record(_record(), tmp_path), policies.policy_class("tracker").config_class.neutral()
    write_record(_broken(lambda r: r["provenance"]["config"].update(interpolation="linear")), tmp_path, neutral=neutral)
    with pytest.raises(RecordError, match=r"another config \(interpolation 'linear' -> 'cubic'\)"):
        write_record(_broken(lambda r: r["provenance"]["config"].update(interpolation="cubic")), tmp_path,
                     neutral=neutral)
    assert read_record(path)["provenance"]["config"] == {"policy": "tracker", "interpolation": "linear"}


def test_partial_runs_are_listed_apart_and_never_plotted(tmp_path):
    results, output = tmp_path / "results", tmp_path / "leaderboard.md"
    write_record(_record(rate=5.0), results)
    write_record(_record(rate=5.0, episodes=10, successes=(True,)), results)
    regenerate(results, output)
    text = output.read_text()
    assert text.count("\n## PassagePassing\n") == 1 and "## Partial runs (not ranked)" in text
    assert "5 Hz" in text and "67 [57–75] (33) ×1" in text
    assert "`PassagePassing__tracker__5hz__to20hz__seeds20000-20010__train0.json` | 100 (0) | 10 |" in text
    plotted = (results / "plots" / "PassagePassing.png").read_bytes()
    (results / "PassagePassing__tracker__5hz__to20hz__seeds20000-20010__train0.json").unlink()
    regenerate(results, output)
    assert (results / "plots" / "PassagePassing.png").read_bytes() == plotted  # the smoke run drew nothing


def test_missing_or_empty_results_folder_is_an_error_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "leaderboard.md"
    output.write_text("kept")
    (tmp_path / "empty").mkdir()
    for folder, message in [(tmp_path / "nonexistent", "does not exist"), (tmp_path / "empty", "holds no")]:
        with pytest.raises(SystemExit) as exit_info:
            leaderboard_main(["--results-dir", str(folder), "--output", str(output)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert output.read_text() == "kept"


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        from cfbench.files import _file_mode

        assert _file_mode() == 0o644
    finally:
        os.umask(old)
    path = write_record(_record(), tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == _FILE_MODE and _FILE_MODE & 0o044  # group and others may read


def test_a_results_folder_refuses_misnamed_files_and_doubled_keys(tmp_path):
    path = write_record(_record(), tmp_path)
    path.rename(tmp_path / "Other__name.json")
    with pytest.raises(RecordError, match=r"Other__name.json: the file records PassagePassing__tracker__2.5hz"):
        read_all(tmp_path)
    (tmp_path / "Other__name.json").unlink()
    text = json.dumps(_record(), indent=1)
    doubled = text.replace('"train_seed": 0', '"train_seed": 0,\n "train_seed": 9', 1)
    path.write_text(doubled)
    with pytest.raises(RecordError, match="key 'train_seed' appears twice"):
        read_record(path)


@pytest.mark.parametrize("text, message", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"a": ' + "9" * 5000 + "}", "Exceeds the limit"),
])
def test_hostile_json_is_named_not_a_traceback(tmp_path, text, message):
    path = tmp_path / "hostile.json"
    path.write_text(text)
    with pytest.raises(RecordError, match=f"hostile.json: .*{message}"):
        read_record(path)


@pytest.mark.parametrize("code, way_out", [(28, "free some space"), (30, "the disk is read-only")])
def test_a_failed_write_names_the_path_and_the_way_out(tmp_path, monkeypatch, code, way_out):
    import os

    from cfbench.files import WriteError, atomic_write_text

    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path / 'x.json'}: .*; {way_out}"):
        atomic_write_text(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_a_record_is_verified_by_re_running_its_episodes_and_marked_on_the_board(tmp_path, capsys):
    """A forged but consistent record could not be caught by reading it: --verify re-runs its test
    episodes (the Tracker needs no checkpoint) and the leaderboard marks the records so checked."""
    from cfbench.app.run import run
    from cfbench.app.spec import RunSpec

    results = tmp_path / "results"
    _, path = run(RunSpec("tracker", "PassagePassing", (5.0,), episodes=4), results_dir=results, progress=False)
    leaderboard_main(["--results-dir", str(results), "--output", str(tmp_path / "lb.md"), "--verify", str(path)])
    out = capsys.readouterr().out
    assert f"verified {path.name}: all 4 test episodes identical" in out and "verified.jsonl" in out
    assert f"| `{path.name}` | " in (board := (tmp_path / "lb.md").read_text()) and "| ✓ 20" in board
    forged = json.loads(path.read_text())
    row = forged["episodes"][0]
    row.update(success=not row["success"], collision=row["success"])
    forged["metrics"].update(success_rate=sum(r["success"] for r in forged["episodes"]) / 4,
                             collision_rate=sum(r["collision"] for r in forged["episodes"]) / 4,
                             mean_steps_to_success=None if not any(r["success"] for r in forged["episodes"]) else
                             float(np.mean([r["steps"] for r in forged["episodes"] if r["success"]])))
    path.write_text(json.dumps(forged))
    leaderboard_main(["--results-dir", str(results), "--output", str(tmp_path / "lb.md")])
    assert "| ✓ 20" not in (tmp_path / "lb.md").read_text(), "the verification was of other numbers"
    with pytest.raises(SystemExit) as stopped:
        leaderboard_main(["--results-dir", str(results), "--verify", str(path)])
    assert stopped.value.code == 2
    assert re.search(r"does not reproduce at \d torch thread\(s\): 1 of 4 test episodes differ \(seeds 20000;",
                     capsys.readouterr().err)


def test_a_learned_record_is_verified_with_the_checkpoint_it_names(tmp_path, capsys):
    from cfbench.app.run import run
    from cfbench.app.spec import RunSpec, Workspace

    spec = RunSpec("dp-c", "PassagePassing", (10.0,), episodes=3, n_demos=2, val_episodes=0,
                   overrides={"down_dims": [8, 16], "n_groups": 4, "batch_size": 8, "train_steps": 4,
                              "eval_every": 4, "warmup_steps": 2})
    record, path = run(spec, Workspace(tmp_path / "demos", tmp_path / "ckpt"), results_dir=tmp_path / "r",
                       progress=False)
    policy_dir = next((tmp_path / "ckpt").rglob("policy"))
    with pytest.raises(SystemExit):
        leaderboard_main(["--results-dir", str(tmp_path / "r"), "--verify", str(path)])
    assert "give its checkpoint with --checkpoint DIR" in capsys.readouterr().err
    leaderboard_main(["--results-dir", str(tmp_path / "r"), "--verify", str(path), "--checkpoint", str(policy_dir)])
    assert "all 3 test episodes identical" in capsys.readouterr().out
    # the board names the commit that trained the model beside the one that tested it
    trained = record["training"]["trained_at"]
    row = [line for line in render_markdown([record]).splitlines() if line.startswith(f"| `{path.name}`")][-1]
    assert row.split(" | ")[1:3] == [trained["git_commit"][:10] + "+dirty" * trained["git_dirty"]] * 2
    untracked = copy.deepcopy(record)
    del untracked["training"]["trained_at"]  # a model trained before summaries named the commit
    assert " | not recorded | " in render_markdown([untracked])
    other = tmp_path / "other"
    shutil.copytree(policy_dir, other)
    (other / "model.safetensors").write_bytes(b"not these weights")
    with pytest.raises(SystemExit):
        leaderboard_main(["--results-dir", str(tmp_path / "r"), "--verify", str(path), "--checkpoint", str(other)])
    assert "not the checkpoint" in capsys.readouterr().err


def test_a_submission_must_carry_its_policys_privileged_mark(tmp_path, capsys):
    forged = [_record(policy="dp-t"), _record(policy="tracker")]
    forged[0]["privileged"], forged[1]["privileged"] = True, False
    for record in forged:
        path = tmp_path / "in" / record_filename(record)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record))
        with pytest.raises(SystemExit):
            leaderboard_main(["--results-dir", str(tmp_path / "results"), "--submit", str(path)])
        assert "privileged" in capsys.readouterr().err and not (tmp_path / "results").exists()


def test_a_verification_runs_at_the_records_thread_count():
    """Actions of a learned policy round differently at another torch thread count (a DP-T record
    made at 1 thread re-ran with 29 of 100 episodes different at 2): records say theirs."""
    from cfbench.app.verify import record_threads
    from cfbench.results import provenance

    record = _record()
    assert record_threads(record) is None
    record["provenance"]["command"] = "cfbench-eval --policy dp-t --threads 1"
    assert record_threads(record) == 1
    import torch

    assert provenance(["x"], (20000, 20100), {})["torch_threads"] == torch.get_num_threads()
    record["provenance"]["torch_threads"] = 3
    assert record_threads(record) == 3
