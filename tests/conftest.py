import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest

import cfbench

ENV_NAMES = list(cfbench.ENV_IDS)


@pytest.fixture(params=ENV_NAMES)
def env_name(request):
    return request.param

import torch

# Tests build many tiny networks: one intra-op thread avoids oversubscribing the CI's 2 cores.
torch.set_num_threads(1)
