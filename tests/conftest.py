import os
import tempfile

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# Tests never write into the checkout: the default results/, runs/, demos/ and checkpoints/
# folders (cfbench.paths) live in a throw-away home for the whole session.
os.environ["CFBENCH_HOME"] = tempfile.mkdtemp(prefix="cfbench-test-home-")

import pytest

import cfbench

ENV_NAMES = list(cfbench.ENV_IDS)


@pytest.fixture(params=ENV_NAMES)
def env_name(request):
    return request.param

import torch

# Tests build many tiny networks: one intra-op thread avoids oversubscribing the CI's 2 cores.
torch.set_num_threads(1)
