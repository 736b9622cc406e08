"""``cfbench-leaderboard --compare A B``: two policies' success on the same test episodes, as a
sentence naming the paired test."""

from __future__ import annotations

import numpy as np

from cfbench.envs import resolve_env, short_name
from cfbench.leaderboard.standings import outcomes, ranked
from cfbench.protocol import rates_label
from cfbench.results import RecordError, parse_label
from cfbench.stats import paired_difference


def paired_test(records: list[dict], first: str, second: str, env: str, rates: tuple[float, ...]) -> dict:
    """Two policies, each named by its label (``cfbench.results.parse_label``: ``dp-t`` or
    ``'tracker (smooth)'``), on the same test episodes, per training seed both have (a privileged
    side, an indicator, pairs with every seed of the other): their success rates (``rates``, %),
    the training seeds and episodes paired, and ``cfbench.stats.paired_difference``'s test (exact
    McNemar for one seed, else a paired bootstrap)."""
    env_id = resolve_env(env)

    def by_seed(label: str) -> dict[int, dict]:
        policy_variant = parse_label(label)
        chosen = [r for r in filter(ranked, records) if r["env_id"] == env_id and tuple(r["source_hz"]) == rates
                  and (r["policy"], r["variant"]) == policy_variant]
        if not chosen:
            raise RecordError(f"no ranked record of {label!r} on {short_name(env_id)} from {rates_label(rates)} Hz "
                              "(a policy is named POLICY or 'POLICY (VARIANT)', as on the page)")
        return {r["train_seed"]: r for r in chosen}

    a, b = by_seed(first), by_seed(second)
    untrained = [len(side) == 1 and next(iter(side.values())).get("privileged", False) for side in (a, b)]
    if untrained[0] and not untrained[1]:
        a = dict.fromkeys(b, next(iter(a.values())))
    elif untrained[1] and not untrained[0]:
        b = dict.fromkeys(a, next(iter(b.values())))
    seeds = sorted(a.keys() & b.keys())
    if not seeds:
        raise RecordError(f"{first} and {second} share no training seed on these test episodes")
    pairs = [(a[s], b[s]) for s in seeds]
    if any([row["seed"] for row in x["episodes"]] != [row["seed"] for row in y["episodes"]] for x, y in pairs):
        raise RecordError(f"{first} and {second} were not tested on the same episodes")
    test = paired_difference([outcomes(x) for x, _ in pairs], [outcomes(y) for _, y in pairs])
    rates_percent = tuple(100 * float(np.mean([outcomes(r).mean() for r in side])) for side in zip(*pairs))
    return {**test, "rates": rates_percent, "seeds": seeds, "episodes": sum(len(x["episodes"]) for x, _ in pairs)}


def compare(records: list[dict], first: str, second: str, env: str, rates: tuple[float, ...]) -> str:
    """``paired_test`` as a sentence a reader can quote."""
    test = paired_test(records, first, second, env, rates)
    (rate_a, rate_b), seeds = test["rates"], test["seeds"]
    verdict = (f"{first if test['difference'] > 0 else second} is better" if test["p"] < 0.05
               else "the difference is not significant at the 5 % level")
    return (f"On {short_name(resolve_env(env))} from {rates_label(rates)} Hz demos ({test['episodes']} paired test "
            f"episodes, {len(seeds)} training seed{'s' * (len(seeds) > 1)}), {first} succeeds in {rate_a:.0f} % and "
            f"{second} in {rate_b:.0f} %: a difference of {100 * test['difference']:+.0f} points [95 % interval "
            f"{100 * test['low']:+.0f} to {100 * test['high']:+.0f}]; {verdict} ({test['test']}, p = {test['p']:.3g}).")
