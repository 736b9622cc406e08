"""Rollout settings chosen on the validation seeds, per policy, variant, env and source rates.

How a trained model is executed (``PolicyConfig.ROLLOUT``: the curve through a fixed-rate
policy's actions, how many actions run per prediction) is a hyperparameter like any other:
``benchmarks/rollout_choice.py`` tries each setting on the validation seeds 10000-10049 over
the cached checkpoint and writes the best into ``rollout_choices.json`` beside this file (never
by hand). The runner applies a choice under the user's own ``--set``, so a plain
``cfbench-eval`` runs every policy the way validation chose; the record's config says what ran.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from cfbench.files import atomic_write_text
from cfbench.protocol import rates_label

CHOICES_FILE = Path(__file__).with_name("rollout_choices.json")


@cache
def _choices(path: Path) -> dict[tuple[str, str, str, str], dict]:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())["choices"]
        return {(e["policy"], e["variant"], e["env"], e["source_hz"]): e for e in entries}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a rollout-choice file ({error}); restore it from git") from None


def chosen_rollout(policy: str, variant: str, env: str, rates, path: Path = CHOICES_FILE) -> dict[str, Any]:
    """The rollout settings validation chose for this cell ({} where none was chosen).
    ``env``: the short name (e.g. ``PassagePassing``)."""
    entry = _choices(path).get((policy, variant, env, rates_label(rates)))
    return dict(entry["settings"]) if entry else {}


def choice_entry(policy: str, variant: str, env: str, rates, path: Path = CHOICES_FILE) -> dict | None:
    """The whole entry (settings, validation table, how it was made), or None."""
    return _choices(path).get((policy, variant, env, rates_label(rates)))


def all_choices(path: Path = CHOICES_FILE) -> list[dict]:
    """Every entry, sorted by policy, variant, env and rates."""
    return [entry for _, entry in sorted(_choices(path).items())]


def write_choices(entries: list[dict], path: Path = CHOICES_FILE) -> None:
    """Add or replace entries (by policy, variant, env, rates), atomically; sorted, so the file
    diffs cleanly."""
    merged = {**_choices(path), **{(e["policy"], e["variant"], e["env"], e["source_hz"]): e for e in entries}}
    text = json.dumps({"choices": [merged[key] for key in sorted(merged)]}, indent=1, sort_keys=True) + "\n"
    atomic_write_text(path, text)
    _choices.cache_clear()
