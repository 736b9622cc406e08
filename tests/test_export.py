"""Checkpoints users can publish: cfbench-export writes a Hub-ready folder whose model card's own
commands evaluate it again without training and verify its records."""

import json
import re
import shlex

import pytest

from cfbench import paths
from cfbench.app.commands import eval_main, leaderboard_main
from cfbench.app.export import main as export_main
from cfbench.app.run import run
from cfbench.app.spec import RunSpec, Workspace
from cfbench.results import read_record

TINY = {"down_dims": [8, 16], "n_groups": 4, "batch_size": 8, "train_steps": 4, "eval_every": 4, "warmup_steps": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DP-C run and its two records (the policy's rollout and straight lines: one model)."""
    root = tmp_path_factory.mktemp("export")
    workspace = Workspace(root / "demos", root / "checkpoints")
    records = [run(RunSpec("dp-c", "PassagePassing", (10.0,), variant=variant, episodes=3, n_demos=2,
                           val_episodes=0, overrides=TINY), workspace, results_dir=root / "results", progress=False)
               for variant in ("", "straight")]
    return root, records


def _commands(card: str, program: str) -> list[list[str]]:
    return [shlex.split(line) for line in card.splitlines() if line.startswith(program + " ")]


def test_an_exported_folder_is_evaluated_and_verified_by_its_cards_commands(trained, monkeypatch, capsys):
    root, records = trained
    run_dir = root / records[0][0]["training"]["run_dir"]
    out = root / "hub" / "dp-c-passage-10hz"
    export_main([str(run_dir), str(out), "--results-dir", str(root / "results")])
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "records",
                                                     "training_summary.json"]
    for name in ("config.json", "model.safetensors"):
        assert (out / name).read_bytes() == (run_dir / "policy" / name).read_bytes()
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: cfbench\n")
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["weights_sha256"] in card and summary["config_sha256"] in card
    for record, _ in records:
        assert record["provenance"]["git_commit"] in card
    evaluations, verifications = _commands(card, "cfbench-eval"), _commands(card, "cfbench-leaderboard")
    assert len(evaluations) == len(verifications) == 2
    assert "huggingface-cli upload USER/dp-c-passage-10hz dp-c-passage-10hz" in card

    monkeypatch.chdir(out.parent)  # the card's commands run from the folder that holds it
    monkeypatch.setenv(paths.HOME_VARIABLE, str(root / "home"))  # their records go to this home's runs/
    for (record, _), words in zip(sorted(records, key=lambda made: made[1].name), evaluations):
        n_success = sum(row["success"] for row in record["episodes"])
        assert re.search(rf"\| {100 * n_success / 3:.1f} % \(\d+\.\d-\d+\.\d\) \| {n_success}/3 \|", card)
        eval_main([*words[1:], "--no-leaderboard"])  # into the scratch area: no training, the same episodes
        remade = read_record(RunSpec.from_record(record).record_path(paths.runs_dir()))
        assert remade["episodes"] == record["episodes"] and remade["training"] == record["training"]
    for words in verifications:
        leaderboard_main(words[1:])
        assert "all 3 test episodes identical" in capsys.readouterr().out


def _fails(main, argv, capsys, message):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_export_and_checkpoint_mistakes_are_one_line(trained, tmp_path, monkeypatch, capsys):
    root, records = trained
    run_dir = str(root / records[0][0]["training"]["run_dir"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    _fails(export_main, [run_dir, str(tmp_path / "full"), "--results-dir", str(root / "results")], capsys,
           "is not an empty folder")
    _fails(export_main, [run_dir, str(tmp_path / "out"), "--results-dir", str(tmp_path)], capsys,
           "evaluate it with cfbench-eval first")
    _fails(export_main, [str(root), str(tmp_path / "out")], capsys, "is not a finished training run")
    assert not (tmp_path / "out").exists()

    out = tmp_path / "out"
    export_main([run_dir, str(out), "--results-dir", str(root / "results")])
    words = _commands((out / "README.md").read_text(), "cfbench-eval")[0][1:]
    monkeypatch.chdir(tmp_path)
    other = [word.replace("train_steps=4", "train_steps=8") for word in words]
    _fails(eval_main, other, capsys, "was trained with train_steps=4, not what this")
    _fails(eval_main, [*words[:-1], str(root)], capsys, "is not a folder cfbench-export wrote")
    _fails(eval_main, [*words, "--source-hz", "10", "5"], capsys, "--checkpoint evaluates one trained model")
    _fails(eval_main, ["--policy", "tracker", "--checkpoint", str(out)], capsys, "it needs no --checkpoint")
    (out / "model.safetensors").write_bytes(b"other weights")
    _fails(eval_main, words, capsys, "model.safetensors is missing or not the weights this run trained")
