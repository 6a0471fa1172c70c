import warnings

import pytest

warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")


@pytest.fixture(scope="session")
def peg_env():
    from aloe.envs.metaworld import EnvConfig, TaskEnv

    return TaskEnv(EnvConfig(task="peg-insert-side-v3", c_fail=100.0))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
