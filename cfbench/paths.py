"""Where cfbench keeps its folders, wherever a command is started from.

Every folder hangs off one home: ``$CFBENCH_HOME`` when set; otherwise the checkout cfbench is
imported from (an editable install, or a run from the repository), so a command started in a
sub-folder still finds the project's ``results/``; otherwise (a plain ``pip install``) the
current directory.

- ``results/`` and ``leaderboard.md``: the published results, written on purpose only
  (``cfbench-leaderboard --submit``, or ``cfbench-eval --results-dir results``);
- ``runs/results/`` and ``runs/leaderboard.md``: where ``cfbench-eval`` writes by default, a
  scratch area git ignores, so trying the benchmark never touches a published number;
- ``demos/`` and ``checkpoints/``: generated on demand, git-ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from cfbench.protocol import PROTOCOL

HOME_VARIABLE = "CFBENCH_HOME"
_CHECKOUT = Path(__file__).resolve().parent.parent


def home() -> Path:
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "cfbench" / "protocol.py").is_file():
        return _CHECKOUT
    return Path.cwd()


def results_dir() -> Path:
    """The published results."""
    return home() / "results"


def leaderboard_path(results: Path, protocol: int = PROTOCOL) -> Path:
    """The one rule for where the page regenerated from a results folder goes: the published
    ``leaderboard.md`` for the published ``results/``; inside the folder for an archive of an older
    protocol's records (``results/archive/protocol1/leaderboard.md``, where the newer page links
    it); for any other folder the page beside it (``runs/results`` -> ``runs/leaderboard.md``), or
    inside it where beside it would be the published page (e.g. ``--results-dir myruns`` from the
    checkout), so no scratch run ever rewrites what is published."""
    folder = Path(results).absolute()
    published = home() / "leaderboard.md"
    if protocol < PROTOCOL:
        return folder / "leaderboard.md"
    if folder.resolve() == results_dir().absolute().resolve():
        return published
    beside = folder.parent / "leaderboard.md"
    return folder / "leaderboard.md" if beside.resolve() == published.absolute().resolve() else beside


def runs_dir() -> Path:
    """The scratch area: ``cfbench-eval``'s records and leaderboard unless told otherwise."""
    return home() / "runs" / "results"


def demos_dir() -> Path:
    return home() / "demos"


def checkpoints_dir() -> Path:
    return home() / "checkpoints"


def shown(path: Path) -> str:
    """A path as records and messages show it: relative to the home when inside it (no
    machine-specific prefix in a published record), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(home().absolute()))
    except ValueError:
        return str(path)
