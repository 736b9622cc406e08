"""The leaderboard's files: the page, the plots and each record's LeRobot-style eval_info.json of
a results folder, redrawn under the folder's lock. Output is deterministic, so regenerating an
unchanged folder changes no file."""

from __future__ import annotations

import os
from pathlib import Path

from cfbench import paths
from cfbench.envs import short_name
from cfbench.eval_info import write_eval_info
from cfbench.files import exclusive, write_if_changed
from cfbench.leaderboard.markdown import render_markdown
from cfbench.leaderboard.plots import PLOTS, plot_env
from cfbench.leaderboard.standings import ranked
from cfbench.protocol import PROTOCOL
from cfbench.results import archive_dir, read_all, read_verified, record_filename


def regenerate(results_dir: Path, output: Path | None = None, protocol: int = PROTOCOL) -> Path:
    """Redraw the page (``output``, else ``cfbench.paths.leaderboard_path``), the plots and the
    records' eval_info.json from ``results_dir`` (records of ``protocol``) under the folder's
    lock, so that the last of several runs writing one folder leaves a leaderboard of every
    record. Returns the page's path."""
    results_dir = Path(results_dir)
    output = Path(output) if output else paths.leaderboard_path(results_dir, protocol)
    read_all(results_dir, protocol=protocol)  # a missing or empty folder is an error, before anything is written
    with exclusive(results_dir):
        records = read_all(results_dir, protocol=protocol)
        write_if_changed(output, page(records, results_dir, output, protocol).encode())
        write_plots(results_dir, records)
        for record in records:
            write_eval_info(record, results_dir / record_filename(record))
    return output


def page(records: list[dict], results_dir: Path, output: Path, protocol: int = PROTOCOL) -> str:
    """The page ``regenerate`` writes to ``output`` for these records of ``results_dir``: it
    links the plots and, where the folder archives one, the previous protocol's page."""
    page_dir = Path(output).absolute().parent
    plots_link = Path(os.path.relpath(Path(results_dir) / PLOTS, page_dir)).as_posix()
    archive = paths.leaderboard_path(archive_dir(results_dir, protocol), protocol - 1)
    archive_link = Path(os.path.relpath(archive, page_dir)).as_posix() if archive.is_file() else None
    return render_markdown(records, plots_link, protocol, archive_link, read_verified(results_dir))


def write_plots(results_dir: Path, records: list[dict]) -> list[Path]:
    """Redraw ``results_dir/plots/<Env>.png`` for every env that has ranked results."""
    written = []
    for env_id in sorted({r["env_id"] for r in filter(ranked, records)}):
        path = Path(results_dir) / PLOTS / f"{short_name(env_id)}.png"
        write_if_changed(path, plot_env(records, env_id))
        written.append(path)
    return written
