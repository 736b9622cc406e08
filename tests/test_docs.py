"""Generated documentation is current: docs/results.md's table is what the records say."""

import importlib.util
from pathlib import Path

import numpy as np

from cfbench.results import read_all

ROOT = Path(__file__).resolve().parent.parent


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "scripts" / "results_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    return page


def test_the_results_pages_table_is_computed_from_the_records():
    page = _results_page()
    folder = ROOT / "results" / "archive" / "protocol1"
    text = page.PAGE.read_text()
    assert page.render(text, read_all(folder, protocol=1), "results/archive/protocol1", 1) == text, \
        "docs/results.md is stale: run python scripts/results_page.py"


def test_the_headline_names_each_coarse_cells_best_learner_and_its_paired_gain_over_the_smooth_indicator():
    """Checked against the records themselves: the best learner's mean is the cell's highest, and
    its gain, p and Bonferroni p are paired_test's against tracker (smooth)."""
    from cfbench.envs import ENV_IDS
    from cfbench.leaderboard.comparison import paired_test
    from cfbench.leaderboard.standings import outcomes

    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    rows = [line.strip("| ").split(" | ") for line in page.headline_table(records).splitlines()[2:]]
    assert rows, "the protocol-2 records hold coarse cells with tracker (smooth)"
    for demos, learners, best, _, smooth, gain, p, corrected in rows:
        env, hz = demos.split()[0], float(demos.split()[1])
        means: dict[str, list[float]] = {}
        for r in records:
            if r["env_id"] == ENV_IDS[env] and tuple(r["source_hz"]) == (hz,) and not r.get("privileged"):
                label = f"{r['policy']} ({r['variant']})" if r["variant"] else r["policy"]
                means.setdefault(label, []).append(outcomes(r).mean())
        assert int(learners) == len(means) and max(map(np.mean, means.values())) == np.mean(means[best])
        test = paired_test(records, best, "tracker (smooth)", env, (hz,))
        assert gain.startswith(f"{100 * test['difference']:+.0f} [") and smooth == f"{test['rates'][1]:.0f}"
        assert float(p) == float(f"{test['p']:.2g}")
        assert float(corrected) == float(f"{min(1, test['p'] * len(means)):.2g}")


def test_a_page_with_headline_markers_gets_both_tables_and_one_without_keeps_its_text():
    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    names = {"folder": "results", "protocol": 2}
    text = (f"intro\n{page.HEADLINE_START.format(**names)}\nold\n{page.HEADLINE_END}\nmiddle\n"
            f"{page.START.format(**names)}\nold\n{page.END}\nend\n")
    rendered = page.render(text, records, "results", 2)
    assert page.headline_table(records) in rendered and page.comparison_table(records) in rendered
    assert "old" not in rendered and rendered.startswith("intro\n") and "\nmiddle\n" in rendered
    assert page.headline_table(records) not in page.render(text.split(page.HEADLINE_END)[1], records, "results", 2)
