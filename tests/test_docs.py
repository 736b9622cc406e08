"""Generated documentation is current: the tables of docs/results.md (and of the archived
protocol-1 discussion) are what the records say."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cfbench.results import read_all

ROOT = Path(__file__).resolve().parent.parent


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "scripts" / "results_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    return page


@pytest.mark.parametrize(("page_path", "folder", "protocol"), [
    ("docs/results.md", "results", 2),
    ("results/archive/protocol1/results.md", "results/archive/protocol1", 1)])
def test_the_results_pages_tables_are_computed_from_the_records(page_path, folder, protocol):
    page = _results_page()
    text = (ROOT / page_path).read_text()
    records = read_all(ROOT / folder, protocol=protocol)
    assert page.render(text, records, folder, protocol, ROOT / folder / page.PERIODS) == text, \
        f"{page_path} is stale: run python scripts/results_page.py --results-dir {folder} --protocol {protocol} " \
        f"--page {page_path}"


def test_the_headline_names_each_coarse_cells_best_learner_and_its_paired_gain_over_the_smooth_indicator():
    """Checked against the records themselves: the best learner's mean is the cell's highest, and
    its gain, p and Bonferroni p are paired_test's against tracker (smooth)."""
    from cfbench.envs import ENV_IDS
    from cfbench.leaderboard.comparison import paired_test
    from cfbench.leaderboard.standings import outcomes

    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    table, sentence = page.headline_table(records).split("\n\n")
    rows = [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]
    assert rows, "the protocol-2 records hold coarse cells with tracker (smooth)"
    sides: dict[str, list[str]] = {"above": [], "below": [], "level": []}
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
        sides["level" if float(corrected) >= 0.05 else "above" if gain.startswith("+") else "below"].append(demos)
    assert sentence == ("The best learner against `tracker (smooth)` (p × learners < 0.05): " + "; ".join(
        f"{side} in {', '.join(cells) or 'no cell'}" for side, cells in sides.items()) + ".")


def _block(page, name: str, body: str) -> str:
    names = {"name": name, "folder": "results", "protocol": 2}
    return f"{page.BLOCK_START.format(**names)}\n{body}\n{page.BLOCK_END.format(name=name)}"


def test_a_page_gets_the_tables_whose_markers_it_carries_and_keeps_its_text():
    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    text = f"intro\n{_block(page, 'headline', 'old')}\nmiddle\n{_block(page, 'execution', 'old')}\nend\n"
    rendered = page.render(text, records, "results", 2)
    assert page.headline_table(records) in rendered and page.pairs_table(records, page.PAIRS["execution"])
    assert page.pairs_table(records, page.PAIRS["execution"]) in rendered
    assert "old" not in rendered and rendered.startswith("intro\n") and "\nmiddle\n" in rendered
    assert page.comparison_table(records) not in rendered  # no markers, no table
    with pytest.raises(ValueError, match="carries no generated table"):
        page.render("intro\n", records, "results", 2)
    with pytest.raises(ValueError, match="generated cost has no end marker"):
        page.render(_block(page, "cost", "old").rsplit("\n", 1)[0], records, "results", 2)


def test_a_variant_table_is_the_paired_test_of_every_cell_both_configurations_ran_in():
    """Each row of the folded table is paired_test's; the summary counts its rows and their
    significant differences."""
    from cfbench.leaderboard.comparison import paired_test

    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    pairs = (("tracker (smooth)", "tracker"), ("dp-t", "dp-t (straight)"))
    summary, detail = page.pairs_table(records, pairs).split("<details>")
    rows = [line.strip("| ").split(" | ") for line in detail.splitlines() if line.startswith("| tracker")
            or line.startswith("| dp-t")]
    assert rows
    for pair, demos, seeds, first, second, difference, p in rows:
        env, rates = demos.split()[0], tuple(float(x) for x in demos.split()[1].split("+"))
        test = paired_test(records, *pair.split(" against "), env, rates)
        assert (int(seeds), first, second) == (len(test["seeds"]), f"{test['rates'][0]:.0f}",
                                              f"{test['rates'][1]:.0f}")
        assert difference.startswith(f"{100 * test['difference']:+.0f} [") and float(p) == float(f"{test['p']:.2g}")
    for line in summary.splitlines()[2:]:
        if line.strip():
            pair, cells, _, ahead, behind = line.strip("| ").split(" | ")
            mine = [r for r in rows if r[0] == pair]
            assert int(cells) == len(mine)
            for count, sign in ((ahead, "+"), (behind, "-")):  # p < 0.05 never comes with a zero difference
                assert int(count) == sum(float(r[6]) < 0.05 and r[5].startswith(sign) for r in mine)


def test_table_one_puts_the_mixed_rate_cell_beside_the_papers_numbers():
    page = _results_page()
    records = read_all(ROOT / "results", protocol=2)
    rows = {line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")[1:]
            for line in page.table_one(records).splitlines()[2:]}
    assert rows["dp-t"][1] == "81" and rows["tracker (smooth) †"][1] == "–"
    assert list(rows)[-1].endswith("†")  # the indicators last


def test_the_cost_table_names_the_commits_and_sums_the_records_hours():
    from cfbench.leaderboard.standings import ranked

    page = _results_page()
    records = [r for r in read_all(ROOT / "results", protocol=2) if ranked(r)]
    count, tested, _, train_h, _, test_h, wall = page.cost_table(records).splitlines()[2].strip("| ").split(" | ")
    assert int(count) == len(records) and wall == "not recorded"
    assert tested.split(", ") == sorted({r["provenance"]["git_commit"][:10] for r in records})
    assert abs(float(train_h) - sum(r["metrics"]["train_wall_s"] or 0 for r in records) / 3600) <= 0.06


def test_the_sweeps_wall_time_sums_its_periods_across_midnight_and_counts_the_estimated_ends(tmp_path):
    page = _results_page()
    periods = tmp_path / page.PERIODS
    periods.write_text("# when it ran (UTC)\n2026-12-03 18:10 - 21:10 (stopped)\n"
                       "2026-12-03 23:30 - about 01:00 (ended with the session)\n\n2026-12-04 02:00 - 02:30\n")
    assert page.wall_time(periods) == "5.0 in 3 periods, 1 of their ends estimated"
    assert page.wall_time(tmp_path / "absent.txt") == page.wall_time(None) == "not recorded"
    periods.write_text("2026-12-03 18:10 - ~21:10 (still running)\n")
    with pytest.raises(ValueError, match="line 1 is not 'YYYY-MM-DD HH:MM - HH:MM"):
        page.wall_time(periods)


def test_the_comparisons_sentence_names_the_cells_by_their_verdict():
    page = _results_page()
    records = read_all(ROOT / "results" / "archive" / "protocol1", protocol=1)
    table, sentence = page.comparison_table(records).split("\n\n")
    sides: dict[str, list[str]] = {"ahead": [], "behind": [], "level": []}
    for line in table.splitlines()[2:]:
        demos, _, _, verdict, _, _ = line.strip("| ").split(" | ")
        if verdict != "–":
            sides[verdict.split(",")[0]].append(demos)
    assert sides["ahead"] and sides["behind"] and sides["level"]  # the archive has all three
    assert sentence == "DiSPo against the best other learner (p < 0.05): " + "; ".join(
        f"{side} in {', '.join(cells)}" for side, cells in sides.items()) + "."
