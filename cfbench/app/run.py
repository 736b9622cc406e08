"""One run: train (through the checkpoint cache) or build the policy, evaluate it on the test
seeds, probe its open-loop fidelity on the validation seeds, and write the record.

The demos are loaded once per run: their reference rate is the rate the policy observes and
replans at, and the same dataset trains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import policies
from cfbench import paths
from cfbench.app.cache import TRAINING_FIELDS, train_or_load
from cfbench.app.export import load_exported
from cfbench.app.spec import RunSpec, Workspace
from cfbench.evaluate import TRACE_KEYS, evaluate
from cfbench.fidelity import probe
from cfbench.results import VIDEOS, check_replaceable, check_writable, make_record, write_record
from cfbench.videos import write_videos


def run(spec: RunSpec, workspace: Workspace | None = None, *, results_dir: Path | None = None, num_envs: int = 10,
        vector: str = "sync", videos: int = 0, retrain: bool = False, command: list[str] | None = None,
        progress: bool = True, checkpoint: Path | None = None) -> tuple[dict, Path]:
    """Make a run's record, in ``results_dir`` (the scratch area ``runs/results`` by default),
    with GIFs of ``videos`` episodes and as many failures in ``videos/<record name>/`` beside it;
    ``command`` is what the record says made it (default: this process's command line); a
    learned policy comes from the exported folder ``checkpoint`` when given (``cfbench-export``)."""
    results_dir = Path(results_dir or paths.runs_dir())
    check_writable(results_dir)  # before training, not after it
    policy, training, reference_hz = trained_policy(spec, workspace, retrain=retrain, progress=progress,
                                                    checkpoint=checkpoint)
    # whether the record may be written is decided before anything (a GIF) is written
    check_replaceable(spec.record_path(results_dir), policy.config.to_dict(), policy.config.neutral())
    outcome = evaluate(policy, spec.env_id, reference_hz, target_hz=spec.target_hz,
                       seeds=list(range(*spec.tested_seeds)), num_envs=num_envs, vector=vector, progress=progress,
                       traces=bool(videos))
    video_files = None
    if videos:
        films = write_videos(spec.env_id, spec.target_hz, outcome["episodes"], videos,
                             results_dir / VIDEOS / spec.stem)
        video_files = [str(path.relative_to(results_dir)) for path in films]
        outcome["episodes"] = [{k: v for k, v in row.items() if k not in TRACE_KEYS} for row in outcome["episodes"]]
    fidelity = probe(policy, spec.env_id, reference_hz, target_hz=spec.target_hz)
    record = make_record(spec, policy, reference_hz, outcome, fidelity, training, command=command or sys.argv,
                         videos=video_files)
    return record, write_record(record, results_dir, neutral=policy.config.neutral())


def trained_policy(spec: RunSpec, workspace: Workspace | None = None, *, retrain: bool = False,
                   progress: bool = True, checkpoint: Path | None = None) -> tuple[policies.Policy, dict | None, float]:
    """The policy a run evaluates (a learned one trained, loaded from the cache or from the
    exported folder ``checkpoint``), what its record keeps of its training (None for a policy
    that does not learn) and the rate it replans at (its demos' reference rate; demos are loaded
    for it only where several rates make a mixed set, unless the policy trains on them)."""
    workspace = workspace or Workspace()
    reference_hz = spec.rates[0] if len(spec.rates) == 1 else None
    if not spec.trainable:
        return spec.make_policy(), None, reference_hz or workspace.demos(spec).reference_hz
    if checkpoint is not None:
        policy, summary = load_exported(spec, checkpoint)
        return policy, training_record(summary), reference_hz or workspace.demos(spec).reference_hz
    dataset = workspace.demos(spec, spec.make_policy().config.obs_mode)
    policy, summary = train_or_load(spec, workspace, dataset=dataset, retrain=retrain, progress=progress)
    return policy, training_record(summary), dataset.reference_hz


def training_record(summary: dict) -> dict:
    """What a record keeps of a training summary."""
    return {key: summary[key] for key in TRAINING_FIELDS if key in summary}
