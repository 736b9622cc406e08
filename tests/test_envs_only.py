"""``pip install cfbench`` without the zoo's packages (torch, safetensors, diffusers,
vector-quantize-pytorch): the environments, demos, evaluation of a user's own policy and the
leaderboard tools work, and a zoo policy says which extra it needs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from policies.registry import ZOO_PACKAGES

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import importlib.abc, json, sys

    ZOO = {zoo!r}


    class WithoutTheZoo(importlib.abc.MetaPathFinder):
        """As if the zoo's packages were not installed."""

        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ZOO:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)


    sys.meta_path.insert(0, WithoutTheZoo())

    import gymnasium as gym

    import cfbench
    from cfbench.app.commands import eval_main, leaderboard_main
    from cfbench.datasets import load_demos
    from cfbench.demos import main as demos_main

    for env_id in cfbench.ENV_IDS.values():
        env = gym.make(env_id)
        env.reset(seed=0)
        env.step(env.action_space.sample())
    demos_main(["--env", "ButtonTouch", "--hz", "5", "--n", "1", "--demos-dir", "demos"])
    assert len(load_demos("ButtonTouch", (5.0,), n=1, demos_dir="demos").episodes) == 1
    eval_main(["--policy-module", "examples.centreline", "--policy", "centreline", "--source-hz", "2.5",
               "--results-dir", "runs", "--no-leaderboard"])
    record = "runs/PassagePassing__centreline__2.5hz__to20hz__seeds20000-20100__train0.json"
    leaderboard_main(["--results-dir", "results", "--output", "leaderboard.md", "--submit", record])
    assert "| centreline |" in open("leaderboard.md").read()
    try:
        eval_main(["--policy", "dp-c", "--results-dir", "runs"])
    except SystemExit as stop:
        assert stop.code == 2
    print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ZOO)))
''')


def test_the_core_works_without_the_zoos_packages(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "CFBENCH_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "SDL_VIDEODRIVER": "dummy"}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(zoo=ZOO_PACKAGES)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # none of the zoo's packages was imported
    assert ("cfbench-eval: error: policy 'dp-c' is part of the policy zoo, which needs torch (not installed): "
            'pip install torch==2.13.0 && pip install "cfbench[zoo]"') in done.stderr
    assert (tmp_path / "results" / "eval_info").is_dir()
