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


@pytest.fixture(scope="session")
def two_demos(tmp_path_factory):
    """Two PassagePassing 10 Hz demos, made once for every test that only reads them."""
    from cfbench.datasets import load_demos

    return load_demos("PassagePassing", (10.0,), n=2, demos_dir=tmp_path_factory.mktemp("demos"))

import torch  # noqa: E402  (after CFBENCH_HOME and SDL_VIDEODRIVER are set)

# Tests build many tiny networks: one intra-op thread avoids oversubscribing the CI's 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Commands under test set torch's threads to all cores (``--threads``); every test starts
    and ends with one again, so a later test does not spin a second OpenMP thread on a busy
    machine, and a module's shared fixture (built before a test's own fixtures) trains with one
    thread whatever ran before it (two threads round differently: a retraining would not match)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
