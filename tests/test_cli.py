"""The commands as a user meets them: a mistake is one line and exit code 2 (``--debug`` for the
traceback), Ctrl-C is one line, --help is instant and shows defaults, folders are found from
anywhere in the checkout."""

import subprocess
import sys
from pathlib import Path

import pytest

from cfbench import paths
from cfbench.app.commands import eval_main, train_main
from cfbench.demos import main as demos_main

ROOT = Path(__file__).resolve().parent.parent


def _fails(main, argv, capsys, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--policy", "tracker", "--set", "horizon=3"], "unknown config field(s) ['horizon']"),
    (["--policy", "dp-c", "--profile", "tpu"], "has no profile 'tpu'"),
    (["--policy", "dp-c", "--set", "train_steps=0"], "train_steps=0 must be positive"),
    (["--policy", "dp-c", "--set", "batch_size=0"], "batch_size=0 must be positive"),
    (["--policy", "dp-c", "--set", "train_steps=abc"], "train_steps='abc' must be an integer"),
    (["--policy", "dp-c", "--set", "warmup_steps=1.5"], "warmup_steps=1.5 must be an integer"),
    (["--policy", "dp-c", "--set", "seed=3"], "give the training seed with --train-seeds"),
    (["--policy", "tracker", "--train-seeds", "1"], "its only training seed is 0"),
    (["--policy", "dp-c", "--set", "eval_every=0"], "eval_every=0 must be positive"),
    (["--policy", "dp-c", "--set", "n_obs_steps=0"], "n_obs_steps=0 must be positive"),
    (["--policy", "tracker", "--source-hz", "1e-9"], "between 0.5 and 200 Hz"),
    (["--policy", "tracker", "--source-hz", "40"], "above the target rate"),
    (["--policy", "tracker", "--threads", "-2"], "must be a positive integer"),
    (["--policy", "tracker", "--test-seeds", "-5:2"], "seeds are 0 or more"),
    (["--policy", "tracker", "--test-seeds", "10:12"], "overlap the training seeds 0:90"),
    (["--policy", "tracker", "--test-seeds", "10040:10060"], "overlap the validation seeds"),
    (["--policy", "tracker", "--variant", "../../escaped"], "bad variant name"),
    (["--policy", "tracker", "--variant", "a|b"], "bad variant name"),
    (["--policy", "tracker", "--episodes", "0"], "must be a positive integer"),
    (["--policy", "tracker", "--videos", "-1"], "must be 0 or more"),
    # named before any demo is made (they used to end in tracebacks, some after generating demos)
    (["--policy", "dp-c", "--device", "cuda:7"], "'cuda:7' requested but CUDA is not available"),
    (["--policy", "dp-c", "--device", "foo"], "device='foo' is not a torch device"),
    (["--policy", "dp-t", "--set", "beta_schedule=linear_typo"], "beta_schedule='linear_typo' must be one of linear"),
    (["--policy", "dp-c", "--set", "obs_dim=5"], "obs_dim is filled in from the demos"),
    (["--policy", "dispo", "--set", "reference_hz=5"], "reference_hz is filled in from the demos"),
])
def test_eval_mistakes_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path):
    err = _fails(eval_main, [*argv, "--results-dir", str(tmp_path / "results")], capsys, message)
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()  # refused before anything is written


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="unknown config field"):
        eval_main(["--policy", "tracker", "--set", "horizon=3", "--debug"])


def test_seed_overlap_can_be_allowed(tmp_path):
    eval_main(["--policy", "tracker", "--source-hz", "20", "--test-seeds", "10:12", "--allow-seed-overlap",
               "--results-dir", str(tmp_path / "results")])
    assert len(list((tmp_path / "results").glob("*seeds10-12__train0.json"))) == 1


@pytest.mark.parametrize("argv, message", [
    (["--first-seed", "-1"], "must be 0 or more"),
    (["--n", "0"], "must be a positive integer"),
    (["--hz", "0.001"], "between 0.5 and 200 Hz"),
    (["--env", "Moon"], "unknown environment 'Moon'"),
])
def test_demos_mistakes_are_one_line(argv, message, capsys, tmp_path):
    _fails(demos_main, [*argv, "--demos-dir", str(tmp_path)], capsys, message)


def test_ctrl_c_during_training_is_one_line_saying_where_it_resumes(monkeypatch, capsys, tmp_path):
    from policies.diffusion import DiffusionPolicy

    def interrupted(self, dataset, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionPolicy, "fit", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--policy", "dp-c", "--source-hz", "20", "--n-demos", "2", "--demos-dir", str(tmp_path / "d"),
                    "--checkpoints-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 130
    assert err.strip().splitlines()[-1].startswith("cfbench-train: interrupted: training state is saved")
    assert "the same command resumes" in err and "Traceback" not in err


def test_help_is_instant_and_shows_defaults():
    """--help must not import torch (4.5 s); checked by what is imported, not by a clock."""
    probe = ("import sys, cfbench.app.commands, cfbench.app.sweep, cfbench.leaderboard.regenerate, "
             "cfbench.leaderboard.comparison, cfbench.leaderboard.submission, cfbench.demos; "
             "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", "from cfbench.app.commands import eval_main; eval_main(['--help'])"],
                         capture_output=True, text=True).stdout
    assert "--retrain" in out and "(default: ['2.5'])" in out and "dispo" in out


def test_folders_are_found_from_anywhere_in_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.HOME_VARIABLE)
    monkeypatch.chdir(tmp_path)
    assert paths.home() == ROOT and paths.results_dir() == ROOT / "results"
    assert paths.runs_dir() == ROOT / "runs" / "results"  # where cfbench-eval writes: git ignores it
    assert "runs/" in (ROOT / ".gitignore").read_text().split()
    monkeypatch.setenv(paths.HOME_VARIABLE, str(tmp_path / "elsewhere"))
    assert paths.demos_dir() == tmp_path / "elsewhere" / "demos"
    assert paths.shown(tmp_path / "elsewhere" / "checkpoints" / "x") == "checkpoints/x"


def test_eval_writes_to_the_scratch_area_by_default(tmp_path):
    eval_main(["--policy", "tracker", "--source-hz", "20", "--episodes", "2"])
    written = list(paths.runs_dir().glob("*.json"))
    assert [p.name for p in written] == ["PassagePassing__tracker__20hz__to20hz__seeds20000-20002__train0.json"]
    assert (paths.runs_dir().parent / "leaderboard.md").exists() and not paths.results_dir().exists()


def test_demo_generation_is_announced(capsys, tmp_path):
    from cfbench.datasets import load_demos

    load_demos("PassagePassing", (20.0,), n=1, demos_dir=tmp_path)
    assert "generating 1 expert demos of PassagePassing at 20 Hz" in capsys.readouterr().err


def test_a_relative_results_dir_never_rewrites_the_published_page(monkeypatch, capsys):
    """From the checkout root, ``--results-dir myruns`` used to regenerate ``./leaderboard.md``
    (the published page) from myruns/ alone: cfbench-eval, cfbench-leaderboard and cfbench-sweep."""
    from cfbench.app.commands import leaderboard_main
    from cfbench.app.sweep import main as sweep_main

    home = paths.home()
    monkeypatch.chdir(home)
    published = paths.leaderboard_path(paths.results_dir())
    published.write_text("the published page\n")
    eval_main(["--policy", "tracker", "--env", "PassagePassing", "--source-hz", "20", "--episodes", "2",
               "--results-dir", "myruns"])
    leaderboard_main(["--results-dir", "myruns"])
    sweep_main(["--policy", "tracker", "--env", "PassagePassing", "--source-hz", "10", "--episodes", "2",
                "--results-dir", "myruns2"])
    assert published.read_text() == "the published page\n"
    assert (home / "myruns" / "leaderboard.md").is_file() and (home / "myruns2" / "leaderboard.md").is_file()
    # the published results folder is the one that writes the published page; scratch stays beside
    assert published == home / "leaderboard.md"
    assert paths.leaderboard_path(paths.runs_dir()) == home / "runs" / "leaderboard.md"
    assert paths.leaderboard_path(home / "a" / "b") == home / "a" / "leaderboard.md"
    # an older protocol's folder is an archive: its page is inside it, where the newer page links it
    archive = home / "a" / "archive" / "protocol1"
    assert paths.leaderboard_path(archive, protocol=1) == archive / "leaderboard.md"
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--policy", "dispo", "--variant", "papr"], "declares no variant 'papr'; did you mean 'paper'?"),
    (["--policy", "tracker", "--variant", "smoth"], "did you mean 'smooth'?"),
    (["--policy", "tracker", "--train-seeds", "0", "0"], "--train-seeds names 0 twice"),
    (["--policy", "tracker", "--source-hz", "2.5", "2.5"], "--source-hz names 2.5 twice"),
    (["--policy", "tracker", "--source-hz", "2.5+5", "5+2.5"], "--source-hz names 2.5+5 twice"),
    (["--policy", "tracker", "--source-hz", "2.5+2.5"], "names each rate once"),
])
def test_small_mistakes_that_used_to_run_are_refused(argv, message, capsys, tmp_path):
    """A variant typo used to run the default under the typo's name; duplicates ran twice."""
    _fails(eval_main, [*argv, "--results-dir", str(tmp_path / "results")], capsys, message)
    assert not (tmp_path / "results").exists()


def test_mixed_rates_are_one_experiment_in_any_order():
    from cfbench.protocol import parse_rates

    assert parse_rates("5+2.5") == parse_rates("2.5+5") == (2.5, 5.0)


def test_the_default_thread_count_is_the_cores_nothing_else_is_busy_on(monkeypatch):
    """Two threads beside a busy process on 2 cores ran 7-12x slower than one
    (benchmarks/contention.py): the default leaves out the cores other processes hold."""
    import torch

    from cfbench import cli

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1})
    for idle, threads in ((2.0, 2), (1.1, 1), (0.2, 1), (7.0, 2)):
        monkeypatch.setattr(cli, "idle_cores", lambda seconds, idle=idle: idle)
        assert cli.free_cores() == threads
        assert cli.set_threads(None) == threads and torch.get_num_threads() == threads
    assert cli.set_threads(3) == 3  # --threads wins
    monkeypatch.setattr(cli, "idle_cores", lambda seconds: (_ for _ in ()).throw(OSError("no /proc/stat")))
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    assert cli.free_cores() == 1  # the load average where /proc/stat is missing


def test_the_gpu_checks_commands_are_valid_runs():
    """benchmarks/gpu_check.sh runs where a GPU is lent, rarely: its command lines are checked
    here as cfbench-eval checks them (the device itself is not asked for)."""
    import shlex

    from cfbench.app.commands import eval_parser, spec_options
    from cfbench.app.spec import RunSpec
    from cfbench.protocol import parse_rates

    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                         text=True, check=True).stdout
    commands = [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ cfbench-eval")]
    from policies.registry import BUILTIN

    learned = set(BUILTIN) - {"tracker"}
    assert {words[words.index("--policy") + 1] for words in commands} == learned, "every learned policy is checked"
    assert len(commands) == len(learned) + 1 and "+ python benchmarks/scan_check.py --device cuda" in out
    for words in commands:
        args = eval_parser().parse_args(words[1:])
        spec = RunSpec(env=args.env[0], rates=parse_rates(args.source_hz[0]), episodes=args.episodes,
                       **spec_options(args))
        assert spec.make_policy().config.device == "cuda" and spec.profile == "gpu"
