"""Observations are an array (state mode) or a dict of arrays, nested (pixel modes:
``{"state": ..., "pixels": {view: ...}}``). These helpers apply array operations leaf by leaf,
so code that handles observations never branches on the mode itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def state_of(observations):
    """The state part of observations: the array itself, or the "state" entry of a pixel-mode dict."""
    return observations["state"] if isinstance(observations, dict) else observations


def tree_map(fn: Callable, *trees):
    """``fn`` applied to the matching leaves of one or more trees of the same structure."""
    if isinstance(trees[0], dict):
        return {key: tree_map(fn, *(tree[key] for tree in trees)) for key in trees[0]}
    return fn(*trees)


def tree_index(tree, index):
    """Rows ``index`` (an int, a slice or an index array) of every leaf."""
    return tree_map(lambda leaf: np.asarray(leaf)[index], tree)


def tree_stack(trees: list):
    """A list of trees -> one tree whose leaves gain a leading axis."""
    return tree_map(lambda *leaves: np.stack(leaves), *trees)


def tree_concat(trees: list):
    """A list of trees -> one tree whose leaves are concatenated along the first axis."""
    return tree_map(lambda *leaves: np.concatenate(leaves), *trees)
