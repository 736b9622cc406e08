"""cfbench-sweep: a grid of cfbench-eval runs as one command, on this machine or a Ray cluster.

A **cell** is one (policy, variant, env, source rates, training seed): one run (a
``cfbench.app.spec.RunSpec``, as ``cfbench-eval`` makes) and one record. The grid comes from the
command line or from a small TOML file;
``sweeps/leaderboard.toml`` is the grid behind ``leaderboard.md``::

    cfbench-sweep sweeps/leaderboard.toml --results-dir results --jobs 2 --threads 1
    cfbench-sweep --policy tracker dp-t --env all --source-hz 2.5 20 --dry-run
    cfbench-sweep sweeps/leaderboard.toml --backend ray --address auto

Cells are independent and idempotent. A cell whose record is in the results folder under the
current protocol is skipped (delete or archive a record to run its cell again; ``--dry-run``
marks done cells whose record came from uncommitted code); an interrupted
cell resumes from the checkpoint cache (training state is saved at every validation). Every cell
runs in a process of its own (``python -m cfbench.app.sweep``, torch threads set from ``--threads``)
with its output in ``sweeps/logs/<cell>.log``, and hands its record back to this process, which
validates and writes it and redraws the leaderboard at the end: workers need no shared results
folder. A failing cell is reported with its log and the others go on; the exit code is the
number of cells that failed.

Backends: ``local`` (processes on this machine, ``--jobs`` at a time) and ``ray`` (``pip install
-e ".[ray]"``): one Ray task per cell with ``num_cpus=--threads``; ``--address auto`` (or a URL)
joins a running cluster, none starts a local Ray. On a cluster each node keeps its demos and
checkpoints in its own ``CFBENCH_HOME``; share that folder (at least ``checkpoints/``) between
the nodes for a cell to resume on another node. Records and the leaderboard stay with the
driver; a cell's log stays on the node that ran it (the driver prints its tail on failure).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from cfbench import paths
from cfbench.app.spec import VALIDATION_EPISODES, RunSpec, parse_overrides, parse_seed_range
from cfbench.cli import Interrupted, Parser, command, free_cores, non_negative_int, positive_int, set_threads
from cfbench.envs import ENV_IDS, short_name
from cfbench.protocol import N_DEMOS, PROTOCOL, TARGET_HZ, TEST_SEEDS, parse_rates
from cfbench.results import (
    SHARED_WITH_VARIABLE,
    RecordError,
    archive_dir,
    model_commit,
    read_all,
    read_record,
    validate,
    write_record,
)
from policies import policy_class

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: what a [[policy]] table (or the file's top level, as defaults for every table) may set
GRID_KEYS = {"envs", "source_hz", "train_seeds", "variant", "set", "test_seeds", "target_hz", "episodes",
             "n_demos", "val_episodes", "profile"}
#: lines of a failed cell's log shown in the report
LOG_TAIL_LINES = 15


# ------------------------------------------------------------------ the grid
#: what each grid key holds, as TOML writes it (the message says so when a value is another kind)
GRID_TYPES = {
    "envs": ("a list of env names, or \"all\"", lambda v: v == "all" or _list_of(v, str)),
    "source_hz": ("a list of rates (2.5, \"2.5+5\")", lambda v: _list_of(v, (str, int, float))),
    "train_seeds": ("a list of integers", lambda v: _list_of(v, int)),
    "variant": ("a string", lambda v: isinstance(v, str)),
    "set": ("a table of config values, or a list of \"KEY=VALUE\"", lambda v: isinstance(v, dict) or _list_of(v, str)),
    "test_seeds": ("\"START:END\" or [START, END]", lambda v: isinstance(v, str) or (_list_of(v, int) and len(v) == 2)),
    "target_hz": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "episodes": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "n_demos": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "val_episodes": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "profile": ("a string", lambda v: isinstance(v, str)),
}


def _list_of(value, kinds) -> bool:
    return isinstance(value, list) and all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)


def expand(grid: dict) -> list[RunSpec]:
    """Cells of a grid: the top-level keys are defaults for every ``policy`` table, which must
    name a registered policy (``name``) and may override any of them. Every cell is a checked
    ``RunSpec``, so a bad grid (and ``--dry-run``) is refused before anything runs."""
    unknown = set(grid) - GRID_KEYS - {"policy"}
    if unknown:
        raise ValueError(f"unknown grid key(s) {sorted(unknown)}; allowed: {sorted(GRID_KEYS | {'policy'})}")
    tables = grid.get("policy")
    if not tables:
        raise ValueError("the grid names no policy: add [[policy]] tables with name = \"...\"")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError("policy must be a list of tables: write [[policy]] (two brackets) before each one")
    defaults = {key: grid[key] for key in GRID_KEYS if key in grid}
    cells, seen = [], set()
    for table in tables:
        unknown = set(table) - GRID_KEYS - {"name"}
        if unknown:
            raise ValueError(f"[[policy]] {table.get('name', '?')}: unknown key(s) {sorted(unknown)}; "
                             f"allowed: {sorted(GRID_KEYS | {'name'})}")
        if not isinstance(table.get("name"), str):
            raise ValueError("every [[policy]] table needs a name (a string)")
        spec = {**defaults, **table}
        for key, (kind, fits) in GRID_TYPES.items():
            if key in spec and not fits(spec[key]):
                raise ValueError(f"[[policy]] {spec['name']}: {key} = {spec[key]!r} must be {kind}")
        envs = spec.get("envs", ["PassagePassing"])
        envs = list(ENV_IDS) if envs in ("all", ["all"]) else envs
        overrides = spec.get("set", {})
        shared = {"policy": spec["name"], "variant": spec.get("variant", ""),
                  "overrides": parse_overrides(overrides) if isinstance(overrides, list) else overrides,
                  "test_seeds": _seed_range(spec.get("test_seeds", TEST_SEEDS)),
                  **{key: spec[key] for key in ("target_hz", "episodes", "n_demos", "val_episodes", "profile")
                     if key in spec}}
        for env, rates_text, train_seed in itertools.product(envs, spec.get("source_hz", ["2.5"]),
                                                            spec.get("train_seeds", [0])):
            try:
                cell = RunSpec(env=env, rates=parse_rates(str(rates_text)), train_seed=train_seed, **shared)
            except ValueError as error:
                raise ValueError(f"[[policy]] {spec['name']}, cell {env} {rates_text} Hz training seed "
                                 f"{train_seed}: {error}") from None
            if cell.stem in seen:
                raise ValueError(f"cell {cell.stem} is listed twice: give one of them its own variant")
            seen.add(cell.stem)
            cells.append(cell)
    return cells


def _seed_range(value) -> tuple[int, int]:
    return parse_seed_range(value) if isinstance(value, str) else (int(value[0]), int(value[1]))


def load_grid(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not a valid TOML grid: {error}") from None


def finished_record(cell: RunSpec, results_dir: Path) -> dict | None:
    """This cell's record in the results folder if it is under the current protocol, else None."""
    path = cell.record_path(results_dir)
    if not path.exists():
        return None
    record = read_record(path, protocol=None)  # a malformed record is an error, not a re-run
    return record if record["protocol"] == PROTOCOL else None


def estimate_seconds(cells: list[RunSpec], results_dir: Path) -> dict[str, float | None]:
    """Each cell's expected wall time from the records' own train and test times: the mean over
    records of the same policy and variant on the same env, else on any env, else of the policy;
    the previous protocol's archived records count too (a new protocol changes how a model is run
    or cut into windows, not what a training step costs)."""
    records = []
    for folder, protocol in ((results_dir, PROTOCOL), (archive_dir(results_dir), PROTOCOL - 1)):
        try:
            records += read_all(folder, allow_empty=True, protocol=protocol)
        except RecordError:
            pass
    times: dict[tuple, list[float]] = {}
    for record in records:
        seconds = (record["metrics"]["train_wall_s"] or 0.0) + record["metrics"]["eval_wall_s"]
        for key in ((record["policy"], record["variant"], short_name(record["env_id"])),
                    (record["policy"], record["variant"]), (record["policy"],)):
            times.setdefault(key, []).append(seconds)
    estimates = {}
    for cell in cells:
        keys = ((cell.policy, cell.variant, cell.env), (cell.policy, cell.variant), (cell.policy,))
        found = next((times[key] for key in keys if key in times), None)
        estimates[cell.stem] = sum(found) / len(found) if found else None
    return estimates


def _counted(commits: Counter) -> str:
    """'1 commit: abc (3)' / '2 commits: abc (3), def (1)', the most frequent first."""
    return (f"{len(commits)} commit{'s' * (len(commits) > 1)}: "
            + ", ".join(f"{commit} ({count})" for commit, count in commits.most_common()))


# ------------------------------------------------------------------ running a cell
def worker_command(cell: RunSpec, threads: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "cfbench.app.sweep", cell.to_json(), str(threads), str(out)]


def execute_cell(cell_json: str, threads: int, log_path: str, env: dict[str, str] | None = None) -> dict:
    """Run one cell in a child process, its output in ``log_path``: ``{"record": ...}`` or
    ``{"error": ..., "log_tail": ...}``. The same function runs as a Ray task."""
    cell = RunSpec.from_json(cell_json)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "record.json"
        with open(log_path, "w") as log:
            code = subprocess.call(worker_command(cell, threads, out), stdout=log, stderr=subprocess.STDOUT,
                                   env=child_env)
        if code == 0 and out.is_file():
            return {"record": json.loads(out.read_text())}
    lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return {"error": f"exit code {code}", "log_tail": "\n".join(lines[-LOG_TAIL_LINES:])}


def _run_worker(argv: list[str]) -> None:
    """``python -m cfbench.app.sweep CELL_JSON THREADS OUT``: run the cell as cfbench-eval would
    and write its record to OUT (the driver writes it into the results folder)."""
    from cfbench.app.run import run

    cell, threads, out = RunSpec.from_json(argv[0]), int(argv[1]), Path(argv[2])
    set_threads(threads)  # explicitly: Ray sets OMP_NUM_THREADS but not the affinity set_threads reads
    with tempfile.TemporaryDirectory() as scratch:
        _, path = run(cell, results_dir=Path(scratch), command=cell.command(threads))
        out.write_text(path.read_text())


def run_cells(cells: list[RunSpec], *, backend: str, jobs: int, threads: int, address: str | None, log_dir: Path,
              on_result, progress: bool = True) -> None:
    """Run every cell; ``on_result(cell, result)`` gets each ``execute_cell`` result as it comes."""
    shared = {}
    if backend == "local" and jobs > 1 and not os.environ.get(SHARED_WITH_VARIABLE):
        shared[SHARED_WITH_VARIABLE] = f"{jobs - 1} other cfbench-sweep cell(s), {threads} thread(s) each"
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress)
    failed = 0
    # locally --jobs cells run at a time; Ray runs as many of its tasks as the cluster has CPUs for
    slots, state = (jobs, "running") if backend == "local" else (len(cells), "in_flight")
    bar.set_postfix({state: min(slots, len(cells)), "failed": 0})

    def finish(cell: RunSpec, result: dict) -> None:
        nonlocal failed
        failed += "error" in result
        on_result(cell, result)
        bar.update(1)
        bar.set_postfix({state: min(slots, len(cells) - bar.n), "failed": failed})

    try:
        if backend == "local":
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(execute_cell, cell.to_json(), threads, str(log_dir / f"{cell.stem}.log"),
                                       shared): cell for cell in cells}
                for future in concurrent.futures.as_completed(futures):
                    finish(futures[future], future.result())
        else:
            _run_ray(cells, threads, address, log_dir, finish)
    finally:
        bar.close()


def _run_ray(cells: list[RunSpec], threads: int, address: str | None, log_dir: Path, finish) -> None:
    try:
        import ray
    except ModuleNotFoundError:
        raise ValueError('the ray backend needs Ray: pip install -e ".[ray]"') from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=threads)(execute_cell)
        pending = {task.remote(cell.to_json(), threads, str(log_dir / f"{cell.stem}.log")): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as error:  # the task itself died (node lost, worker killed)
                result = {"error": f"Ray task failed: {error}", "log_tail": ""}
            finish(cell, result)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------ the command
def _grid_from_args(args: argparse.Namespace) -> dict:
    grid = {"policy": [{"name": name} for name in args.policy],
            "envs": args.env, "source_hz": args.source_hz, "train_seeds": args.train_seeds,
            "test_seeds": args.test_seeds, "target_hz": args.target_hz, "n_demos": args.n_demos,
            "val_episodes": args.val_episodes, "profile": args.profile}
    if args.variant:
        grid["variant"] = args.variant
    if args.overrides:
        grid["set"] = args.overrides
    if args.episodes:
        grid["episodes"] = args.episodes
    return grid


def _format_seconds(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


@command("cfbench-sweep")
def main(argv: list[str]) -> int:
    parser = Parser("cfbench-sweep", "Run a grid of cfbench-eval cells (policy, variant, env, rates, training "
                                     "seed), here or on a Ray cluster; cells with a record are skipped.")
    parser.add_argument("grid", nargs="?", type=Path, help="a TOML grid (e.g. sweeps/leaderboard.toml); else the "
                                                           "grid options below")
    grid = parser.add_argument_group("grid options (without a TOML file)")
    grid.add_argument("--policy", nargs="+", help="registered policies")
    grid.add_argument("--env", nargs="+", default=["PassagePassing"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    grid.add_argument("--source-hz", nargs="+", default=["2.5"], help="demo rates; '2.5+5' = mixed dataset")
    grid.add_argument("--train-seeds", nargs="+", type=non_negative_int, default=[0])
    grid.add_argument("--variant", default="", help="label (or declared variant) of every cell")
    grid.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                      help="policy config overrides of every cell")
    grid.add_argument("--test-seeds", default=f"{TEST_SEEDS[0]}:{TEST_SEEDS[1]}", help="START:END (END exclusive)")
    grid.add_argument("--target-hz", type=float, default=TARGET_HZ)
    grid.add_argument("--episodes", type=positive_int, default=None, help="evaluate only the first N test seeds")
    grid.add_argument("--n-demos", type=positive_int, default=N_DEMOS)
    grid.add_argument("--val-episodes", type=non_negative_int, default=VALIDATION_EPISODES)
    grid.add_argument("--profile", default="cpu")
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--jobs", type=positive_int, default=1, help="cells at a time (local backend)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads per cell, and CPUs per Ray task (default: the cores nothing else is busy "
                             "on / --jobs)")
    parser.add_argument("--address", default=None, help="Ray cluster to join ('auto' or a URL); none starts a "
                                                        "local Ray")
    parser.add_argument("--results-dir", type=Path, default=paths.runs_dir(),
                        help="where records go; the published results/ only when named here")
    parser.add_argument("--leaderboard", type=Path, default=None,
                        help="regenerated after the sweep (default: see cfbench.paths.leaderboard_path)")
    parser.add_argument("--no-leaderboard", action="store_true")
    parser.add_argument("--log-dir", type=Path, default=paths.home() / "sweeps" / "logs")
    parser.add_argument("--dry-run", action="store_true", help="list the cells, which are done, and the time left")
    args = parser.parse_args(argv)
    if (args.grid is None) == (args.policy is None):
        parser.error("give the grid as a TOML file or with --policy, not both and not neither")
    if args.backend == "local" and args.address:
        parser.error("--address is for --backend ray")
    cells = expand(load_grid(args.grid) if args.grid else _grid_from_args(args))
    finished = {cell.stem: record for cell in cells if (record := finished_record(cell, args.results_dir))}
    todo = [cell for cell in cells if cell.stem not in finished]
    estimates = estimate_seconds(todo, args.results_dir)
    known = [seconds for seconds in estimates.values() if seconds is not None]
    parallel = args.jobs if args.backend == "local" else 1
    left = sum(known) / parallel
    unknown = len(known) < len(todo)
    print(f"{len(cells)} cells: {len(finished)} done, {len(todo)} to run; time left about {_format_seconds(left)}"
          f"{' (+ cells with no record to estimate from)' if unknown else ''}"
          f"{'' if args.backend == 'local' else ' of cluster CPU time / parallel tasks'}")
    if args.dry_run:
        dirty = {name for name, record in finished.items() if record["provenance"]["git_dirty"]}
        for cell in cells:
            estimate = estimates.get(cell.stem)
            if cell.stem in finished:
                state = "done (from uncommitted code)" if cell.stem in dirty else "done"
            else:
                state = f"to run (~{_format_seconds(estimate)})" if estimate else "to run"
            print(f"  {cell.stem:<70} {state}")
        if dirty:
            print(f"{len(dirty)} done cells come from uncommitted code: rerun them from a clean commit for a "
                  "reproducible board")
        if finished:
            commits = Counter(record["provenance"]["git_commit"][:10] for record in finished.values())
            print(f"done cells come from {_counted(commits)}")
            trained = Counter(model_commit(record) for record in finished.values() if record.get("training"))
            if trained:
                print(f"their models were trained at {_counted(trained)}")
        return 0

    args.threads = args.threads or max(1, free_cores() // args.jobs)  # the cores free as the cells start
    failures = []
    written = 0

    def on_result(cell: RunSpec, result: dict) -> None:
        nonlocal written
        if "record" in result:
            try:
                write_record(validate(result["record"], cell.stem), args.results_dir,
                             neutral=policy_class(cell.policy).config_class.neutral())
                written += 1
                return
            except RecordError as error:
                result = {"error": str(error), "log_tail": ""}
        failures.append(cell)
        log = args.log_dir / f"{cell.stem}.log"
        tqdm.write(f"cfbench-sweep: cell {cell.stem} failed ({result['error']}); log: {log}\n{result['log_tail']}")

    start = time.perf_counter()
    try:
        run_cells(todo, backend=args.backend, jobs=args.jobs, threads=args.threads, address=args.address,
                  log_dir=args.log_dir, on_result=on_result)
    except KeyboardInterrupt:
        raise Interrupted("finished cells are written; the same command runs the rest, and an interrupted "
                          "cell resumes from its checkpoints") from None
    if written and not args.no_leaderboard:
        from cfbench.leaderboard.regenerate import regenerate

        regenerate(args.results_dir, args.leaderboard)
    print(f"{written} cell(s) written to {paths.shown(args.results_dir)}, {len(failures)} failed "
          f"({_format_seconds(time.perf_counter() - start)})" +
          "".join(f"\n  failed: {cell.stem} (log {args.log_dir / (cell.stem + '.log')})" for cell in failures))
    return min(len(failures), 255)


if __name__ == "__main__":
    _run_worker(sys.argv[1:])
