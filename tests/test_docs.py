"""Generated documentation is current: docs/results.md's table is what the records say."""

import importlib.util
from pathlib import Path

from cfbench.results import read_all

ROOT = Path(__file__).resolve().parent.parent


def test_the_results_pages_table_is_computed_from_the_records():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "scripts" / "results_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    folder = ROOT / "results" / "archive" / "protocol1"
    text = page.PAGE.read_text()
    assert page.render(text, read_all(folder, protocol=1), "results/archive/protocol1", 1) == text, \
        "docs/results.md is stale: run python scripts/results_page.py"
