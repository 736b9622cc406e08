"""The benchmark's vocabulary (cfbench.protocol) and the observation-tree helpers."""

import numpy as np
import pytest

from cfbench import protocol
from cfbench.tree import state_of, tree_concat, tree_index, tree_stack


def test_seed_ranges_are_disjoint():
    train = range(protocol.TRAIN_SEED_START, protocol.TRAIN_SEED_START + protocol.N_DEMOS)
    validation, test = range(*protocol.VALIDATION_SEEDS), range(*protocol.TEST_SEEDS)
    assert not set(train) & set(validation) and not set(validation) & set(test) and not set(train) & set(test)
    assert protocol.seed_list(protocol.VALIDATION_SEEDS) == list(validation) and len(validation) == 50


def test_rates_parse_and_label_round_trip():
    for text, rates in [("2.5", (2.5,)), ("2.5+5", (2.5, 5.0)), ("20", (20.0,))]:
        assert protocol.parse_rates(text) == rates and protocol.rates_label(rates) == text
    for bad in ("fast", "0", "-2", "nan", "2.5+"):
        with pytest.raises(ValueError, match="sample rate"):
            protocol.parse_rates(bad)


def test_mixed_seeds_differ_per_salt_and_keep_their_formula():
    assert protocol.mix_seed(0, 20000) == 20000 and protocol.mix_seed(1, 4) == 1_000_007  # unchanged from v0
    assert len({protocol.mix_seed(seed, salt) for seed in range(3) for salt in range(20000, 20100)}) == 300


def test_tree_helpers_treat_arrays_and_nested_dicts_alike():
    def obs(value):
        return {"state": np.full(3, value), "pixels": {"global": np.full((2, 2), value)}}

    stacked = tree_stack([obs(0), obs(1), obs(2)])
    assert stacked["state"].shape == (3, 3) and stacked["pixels"]["global"].shape == (3, 2, 2)
    picked = tree_index(stacked, np.array([2, 0]))
    assert picked["pixels"]["global"][:, 0, 0].tolist() == [2, 0]
    joined = tree_concat([picked, tree_index(stacked, slice(1, 2))])
    assert state_of(joined)[:, 0].tolist() == [2, 0, 1]
    plain = tree_stack([np.zeros(3), np.ones(3)])
    assert state_of(tree_index(plain, 1)).tolist() == [1, 1, 1]
