"""A researcher's own policy, in one file outside cfbench: evaluated with --policy-module (or an
installed package's entry point), submitted, ranked and verified like any other."""

import textwrap
from pathlib import Path

import pytest

import policies
from cfbench.app.commands import eval_main, leaderboard_main
from cfbench.results import read_record

ROOT = Path(__file__).resolve().parent.parent
RECORD = "PassagePassing__centreline__2.5hz__to20hz__seeds20000-20100__train0.json"


def test_the_example_policy_is_evaluated_submitted_ranked_and_verified(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # as the example's docstring runs it
    module = ["--policy-module", "examples.centreline"]
    eval_main([*module, "--policy", "centreline", "--source-hz", "2.5", "--results-dir", str(tmp_path / "runs"),
               "--no-leaderboard"])
    record = read_record(tmp_path / "runs" / RECORD)
    assert record["policy"] == "centreline" and not record.get("privileged") and "training" not in record
    assert "examples.centreline" in record["provenance"]["command"]

    published = tmp_path / "results"
    leaderboard_main(["--results-dir", str(published), "--output", str(tmp_path / "lb.md"),
                      "--submit", str(tmp_path / "runs" / RECORD)])
    assert f"added {published / RECORD}" in capsys.readouterr().out
    assert "| centreline |" in (tmp_path / "lb.md").read_text()  # ranked: a full test run
    leaderboard_main([*module, "--results-dir", str(published), "--output", str(tmp_path / "lb.md"),
                      "--verify", str(published / RECORD)])
    assert "all 100 test episodes identical" in capsys.readouterr().out


def test_an_installed_packages_entry_point_makes_its_policy_known(tmp_path, monkeypatch):
    package = tmp_path / "site" / "cfbench_extra_policy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hold.py").write_text(textwrap.dedent('''
        import numpy as np

        import policies


        @policies.register("hold-still")
        class HoldStill(policies.Policy):
            trainable = False

            def reset(self, slot, context):
                pass

            def act(self, obs_history, *, slots, reference_hz, target_hz):
                return np.asarray(obs_history)[:, -1:, :2]
    '''))
    info = tmp_path / "site" / "cfbench_extra_policy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cfbench-extra-policy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cfbench.policies]\nhold-still = cfbench_extra_policy.hold\n"
                                           "misnamed = cfbench_extra_policy.hold\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert {"hold-still", "misnamed"} <= set(policies.available())
    assert policies.policy_class("hold-still").__name__ == "HoldStill"
    with pytest.raises(ValueError, match="registers no policy named 'misnamed'"):
        policies.policy_class("misnamed")
    eval_main(["--policy", "hold-still", "--source-hz", "20", "--episodes", "2", "--results-dir",
               str(tmp_path / "runs"), "--no-leaderboard"])
    assert len(list((tmp_path / "runs").glob("PassagePassing__hold-still__*.json"))) == 1


@pytest.mark.parametrize("module, message", [
    ("no_such_package.policy", "--policy-module no_such_package.policy: no module 'no_such_package' in the current"),
    ("json", "--policy-module json registers no policy: decorate its Policy subclass"),
])
def test_a_policy_module_that_is_not_one_is_named_in_one_line(module, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        eval_main(["--policy-module", module, "--policy", "tracker", "--results-dir", str(tmp_path)])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
