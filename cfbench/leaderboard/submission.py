"""``cfbench-leaderboard --submit FILE...``: result files validated and added to ``results/``,
all of them or none when one is bad."""

from __future__ import annotations

import json
from pathlib import Path

from cfbench.files import atomic_write_bytes, atomic_write_text, exclusive
from cfbench.results import RecordError, read_all, read_record, record_filename, run_key


def submit(files: list[Path], results_dir: Path) -> list[Path]:
    """Validate result files and copy them (with the GIFs they list) into ``results_dir`` under
    their canonical names: all, or (when any is malformed or duplicates an experiment) none."""
    results_dir = Path(results_dir)
    if not files:
        return []
    published = read_all(results_dir, allow_empty=True) if results_dir.is_dir() else []
    existing = {run_key(r): record_filename(r) for r in published}
    incoming = {}
    for path in files:
        record = read_record(path)
        if run_key(record) in existing:
            raise RecordError(f"{path} duplicates an experiment already in {results_dir} "
                              f"({existing[run_key(record)]}); re-run cfbench-eval to replace it instead")
        if run_key(record) in incoming:
            raise RecordError(f"{path} and {incoming[run_key(record)][0]} record the same experiment")
        missing = [video for video in record.get("videos", []) if not (Path(path).parent / video).is_file()]
        if missing:
            raise RecordError(f"{path} lists videos that are not beside it: {', '.join(missing[:3])}")
        linked = [video for video in record.get("videos", []) if _linked(Path(path).parent, video)]
        if linked:
            raise RecordError(f"{path} lists videos that are links, not files: {', '.join(linked[:3])}; "
                              "copy the GIFs themselves beside it")
        incoming[run_key(record)] = (path, record)
    written: list[Path] = []
    with exclusive(results_dir):
        try:
            for path, record in incoming.values():
                for video in record.get("videos", []):  # the GIFs first, so a listed file always exists
                    (results_dir / video).parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(results_dir / video, (Path(path).parent / video).read_bytes())
                    written.append(results_dir / video)
                target = results_dir / record_filename(record)
                atomic_write_text(target, json.dumps(record, indent=1, sort_keys=True) + "\n")
                written.append(target)
        except BaseException:
            for target in written:
                target.unlink(missing_ok=True)
            raise
    return written


def _linked(folder: Path, video: str) -> bool:
    """Whether a listed video, or a folder on its way from the record's folder, is a symbolic
    link (a submission copies only regular files from the record's own video folder)."""
    path = Path(folder)
    for part in Path(video).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False
