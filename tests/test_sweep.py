"""cfbench-sweep: grid expansion, skipping done cells, failures that stop nothing, and the same
records as the equivalent cfbench-eval commands, from local processes and from Ray tasks."""

import copy
import json
import re
import sys
from pathlib import Path

import pytest

from cfbench.app import sweep
from cfbench.app.commands import eval_main
from cfbench.app.run import run
from cfbench.app.spec import RunSpec
from cfbench.app.sweep import expand, finished_record, main

TINY_DPC = ["down_dims=[8,16]", "step_embed_dim=8", "n_groups=4", "batch_size=8", "warmup_steps=2",
            "train_steps=6", "eval_every=3"]
GRID = f"""
envs = ["PassagePassing"]
source_hz = ["20"]
episodes = 3
n_demos = 2
val_episodes = 1

[[policy]]
name = "tracker"

[[policy]]
name = "dp-c"
set = {json.dumps(TINY_DPC)}
"""
#: what differs between two runs of one experiment: timings, the machine's load, where it ran
VOLATILE = {"metrics": ("eval_wall_s", "train_wall_s", "inference_ms_per_call"),
            "training": ("train_seconds",), "provenance": ("command", "machine", "shared_with")}


def _grid(tmp_path, text=GRID):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def _stable(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for block, keys in VOLATILE.items():
        for key in keys:
            (record.get(block) or {}).pop(key, None)
    return record


def test_a_grid_expands_to_one_cell_per_policy_env_rates_and_seed(tmp_path):
    cells = expand(sweep.load_grid(_grid(tmp_path, """
envs = ["PassagePassing", "ButtonTouch"]
source_hz = ["2.5", "20"]

[[policy]]
name = "tracker"

[[policy]]
name = "dispo"
variant = "paper"
envs = ["ButtonTouch"]
source_hz = ["2.5+5"]
train_seeds = [0, 1]
set = {num_inference_steps = 4}
""")))
    assert [c.stem for c in cells] == [
        "PassagePassing__tracker__2.5hz__to20hz__seeds20000-20100__train0",
        "PassagePassing__tracker__20hz__to20hz__seeds20000-20100__train0",
        "ButtonTouch__tracker__2.5hz__to20hz__seeds20000-20100__train0",
        "ButtonTouch__tracker__20hz__to20hz__seeds20000-20100__train0",
        "ButtonTouch__dispo-paper__2.5+5hz__to20hz__seeds20000-20100__train0",
        "ButtonTouch__dispo-paper__2.5+5hz__to20hz__seeds20000-20100__train1",
    ]
    paper = cells[-1]
    assert paper.rates == (2.5, 5.0) and paper.overrides == {"num_inference_steps": 4}
    assert paper.command(1) == ["cfbench-eval", "--policy", "dispo", "--env", "ButtonTouch", "--source-hz", "2.5+5",
                                "--variant", "paper", "--train-seeds", "1", "--threads", "1",
                                "--set", "num_inference_steps=4"]
    assert RunSpec.from_json(paper.to_json()) == paper


@pytest.mark.parametrize("text, message", [
    ('[[policy]]\nname = "tracker"\nepisode = 3', r"unknown key\(s\) \['episode'\]"),
    ('seeds = [0]\n[[policy]]\nname = "tracker"', r"unknown grid key\(s\) \['seeds'\]"),
    ('[[policy]]\nname = "nope"', "unknown policy 'nope'"),
    ('[[policy]]\nvariant = "x"', "needs a name"),
    ('envs = ["PassagePassing"]', "names no policy"),
    ('[[policy]]\nname = "tracker"\n[[policy]]\nname = "tracker"', "listed twice"),
    ('[[policy]\nname = "tracker"', "not a valid TOML grid"),
])
def test_a_bad_grid_is_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        expand(sweep.load_grid(_grid(tmp_path, text)))


def test_a_cell_with_a_record_is_done_and_listed_so(tmp_path, capsys):
    results = tmp_path / "results"
    run(RunSpec("tracker", "PassagePassing", (20.0,), episodes=3), results_dir=results, progress=False)
    cells = expand({"policy": [{"name": "tracker"}], "source_hz": ["20", "10"], "episodes": 3})
    assert [finished_record(c, results) is not None for c in cells] == [True, False]
    assert main([str(_grid(tmp_path, 'source_hz = ["20", "10"]\nepisodes = 3\n[[policy]]\nname = "tracker"')),
                 "--results-dir", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells: 1 done, 1 to run" in out
    assert "__20hz__to20hz__seeds20000-20003__train0" in out.split(" done\n")[0]
    commit = json.loads(cells[0].record_path(results).read_text())["provenance"]["git_commit"][:10]
    assert f"done cells come from 1 commit: {commit} (1)" in out  # a board from one commit says so

    record_path = cells[0].record_path(results)
    record = json.loads(record_path.read_text())
    record["provenance"]["git_dirty"] = True
    record_path.write_text(json.dumps(record))
    main([str(tmp_path / "grid.toml"), "--results-dir", str(results), "--dry-run"])
    out = capsys.readouterr().out
    assert re.search(r"train0 +done \(from uncommitted code\)", out)
    assert "1 done cells come from uncommitted code" in out


def test_a_failing_cell_is_reported_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    real = sweep.worker_command

    def crash_at_10hz(cell, threads, out):
        if cell.rates == (10.0,):
            return [sys.executable, "-c", "import sys; print('boom: the simulated failure'); sys.exit(3)"]
        return real(cell, threads, out)

    monkeypatch.setattr(sweep, "worker_command", crash_at_10hz)
    results, logs = tmp_path / "results", tmp_path / "logs"
    grid = _grid(tmp_path, 'source_hz = ["10", "20", "5"]\nepisodes = 2\n[[policy]]\nname = "tracker"')
    failed = main([str(grid), "--results-dir", str(results), "--log-dir", str(logs), "--jobs", "2",
                   "--threads", "1", "--no-leaderboard"])
    assert failed == 1
    assert sorted(p.name for p in results.glob("*.json")) == [
        "PassagePassing__tracker__20hz__to20hz__seeds20000-20002__train0.json",
        "PassagePassing__tracker__5hz__to20hz__seeds20000-20002__train0.json"]
    out = capsys.readouterr().out
    log = logs / "PassagePassing__tracker__10hz__to20hz__seeds20000-20002__train0.log"
    assert f"failed (exit code 3); log: {log}" in out and "boom: the simulated failure" in out
    assert "boom" in log.read_text()


def _records(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny grid swept by local processes, 2 at a time with 1 thread each."""
    tmp = tmp_path_factory.mktemp("sweep")
    results = tmp / "results"
    assert main([str(_grid(tmp)), "--results-dir", str(results), "--jobs", "2", "--threads", "1",
                 "--log-dir", str(tmp / "logs")]) == 0
    return tmp, _records(results)


def test_the_local_backend_writes_the_records_cfbench_eval_writes(local_sweep, tmp_path):
    tmp, swept = local_sweep
    assert len(swept) == 2 and (tmp / "leaderboard.md").is_file()
    for cell in expand(sweep.load_grid(_grid(tmp_path))):
        record = copy.deepcopy(swept[cell.record_path(Path(".")).name])
        assert record["provenance"]["command"] == " ".join(cell.command(1))
        # the same command by hand, training again in its own checkpoints folder
        eval_main([*cell.command(1)[1:], "--results-dir", str(tmp_path / "by-hand"), "--no-leaderboard",
                   "--checkpoints-dir", str(tmp_path / "checkpoints")])
        by_hand = json.loads(cell.record_path(tmp_path / "by-hand").read_text())
        if record.get("training"):
            for which in (record, by_hand):
                which["training"].pop("run_dir")
                for phase in which["training"].get("phases", []):
                    phase.pop("dir", None)
        assert _stable(by_hand) == _stable(record)


def test_the_dry_run_names_the_commits_that_trained_the_done_cells_models(local_sweep, capsys):
    tmp, swept = local_sweep
    results = tmp / "results"
    learned = next(name for name, record in swept.items() if record.get("training"))
    trained_at = swept[learned]["training"]["trained_at"]
    label = trained_at["git_commit"][:10] + ("+dirty" if trained_at["git_dirty"] else "")
    assert main([str(_grid(tmp)), "--results-dir", str(results), "--dry-run"]) == 0
    assert f"their models were trained at 1 commit: {label} (1)\n" in capsys.readouterr().out

    copied = tmp / "older-model"  # a model from the cache, trained before summaries named the commit
    copied.mkdir()
    for name, record in swept.items():
        record = copy.deepcopy(record)
        (record.get("training") or {}).pop("trained_at", None)
        (copied / name).write_text(json.dumps(record))
    main([str(_grid(tmp)), "--results-dir", str(copied), "--dry-run"])
    assert "their models were trained at 1 commit: not recorded (1)\n" in capsys.readouterr().out


def test_the_ray_backend_writes_the_same_records(local_sweep):
    pytest.importorskip("ray")
    tmp, swept = local_sweep
    results = tmp / "ray-results"
    assert main([str(_grid(tmp)), "--backend", "ray", "--threads", "1", "--results-dir", str(results),
                 "--log-dir", str(tmp / "ray-logs"), "--no-leaderboard"]) == 0
    by_ray = _records(results)
    assert sorted(by_ray) == sorted(swept)
    assert all(_stable(by_ray[name]) == _stable(swept[name]) for name in swept)


def test_the_leaderboard_grid_covers_the_zoo_every_env_and_rate():
    """sweeps/leaderboard.toml is the grid behind leaderboard.md: every registered policy at its
    defaults on every env and rate with training seed 0, Table I for every policy, seeds 1 and 2
    in the 5 Hz column of PassagePassing and ButtonTouch."""
    from cfbench.envs import ENV_IDS
    from cfbench.protocol import rates_label
    from policies.registry import BUILTIN

    cells = expand(sweep.load_grid(Path(__file__).resolve().parent.parent / "sweeps" / "leaderboard.toml"))
    keys = {(c.policy, c.variant, c.env, rates_label(c.rates), c.train_seed) for c in cells}
    assert len(keys) == len(cells)  # no cell twice
    for name in BUILTIN:  # the zoo (tests register policies of their own)
        for env in ENV_IDS:
            for hz in ("2.5", "5", "10", "20"):
                assert (name, "", env, hz, 0) in keys, (name, env, hz)
        assert (name, "", "ButtonTouch", "2.5+5", 0) in keys, name
    for env in ENV_IDS:  # protocol v2: the smooth indicator, and the paper's execution beside the chosen one
        for hz in ("2.5", "5", "10", "20"):
            assert ("tracker", "smooth", env, hz, 0) in keys, (env, hz)
        for name in ("dp-c", "dp-t", "vq-bet"):
            assert {("2.5", env), ("5", env)} <= {(r, e) for p, v, e, r, _ in keys if (p, v) == (name, "straight")}
        if name != "tracker":
            for env in ("PassagePassing", "ButtonTouch"):
                assert {(name, "", env, "5", seed) for seed in (1, 2)} <= keys, (name, env)


@pytest.mark.parametrize("text, message", [
    ('test_seeds = "0:5"\n[[policy]]\nname = "tracker"', "overlap the training seeds"),
    ('target_hz = 1000\n[[policy]]\nname = "tracker"', "--target-hz must lie in"),
    ('episodes = -5\n[[policy]]\nname = "tracker"', "must be a positive integer, got -5"),
    ('episodes = 0\n[[policy]]\nname = "tracker"', "must be a positive integer, got 0"),
    ('train_seeds = [-1]\n[[policy]]\nname = "dp-c"', "must be 0 or more, got -1"),
    ('train_seeds = [1]\n[[policy]]\nname = "tracker"', "its only training seed is 0"),
    ('source_hz = 2.5\n[[policy]]\nname = "tracker"', "source_hz = 2.5 must be a list of rates"),
    ('[policy]\nname = "tracker"', "write \\[\\[policy\\]\\] \\(two brackets\\)"),
    ('policy = "tracker"', "write \\[\\[policy\\]\\] \\(two brackets\\)"),
    ('set = "train_steps=5"\n[[policy]]\nname = "dp-c"', "set = 'train_steps=5' must be a table"),
    ('test_seeds = [20000]\n[[policy]]\nname = "tracker"', r"must be \"START:END\" or \[START, END\]"),
    ('envs = "ButtonTouch"\n[[policy]]\nname = "tracker"', "envs = 'ButtonTouch' must be a list of env names"),
    ('[[policy]]\nname = "dispo"\nvariant = "papr"', "did you mean 'paper'"),
])
def test_a_grid_is_checked_as_cfbench_eval_checks_a_command_line(tmp_path, capsys, text, message):
    """cfbench-sweep used to skip cfbench-eval's checks: records on overlapping seeds, cells that
    re-ran forever or crashed inside, tracebacks; --dry-run accepted all of them."""
    with pytest.raises(SystemExit) as stopped:
        main([str(_grid(tmp_path, text)), "--results-dir", str(tmp_path / "results"), "--dry-run"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists()
