import warnings

import pytest

warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")


@pytest.fixture(scope="session")
def peg_env():
    from aloe.envs.metaworld import EnvConfig, TaskEnv

    return TaskEnv(EnvConfig(task="peg-insert-side-v3", c_fail=100.0))


def _can_render() -> bool:
    """MuJoCo can render off-screen: OSMesa (CPU) is installed, or another GL is chosen."""
    import ctypes.util
    import os

    gl = os.environ.get("MUJOCO_GL", "osmesa" if not os.environ.get("DISPLAY") else "glfw")
    return gl != "osmesa" or ctypes.util.find_library("OSMesa") is not None


def _xdist_group(item: pytest.Item) -> str | None:
    """Which tests one pytest-xdist worker runs together (`-n 2`; `--dist loadgroup` is in
    pyproject's addopts): every test on the session's local Ray, so that one Ray cluster
    starts, not one per worker; and the tests of a module that share a module-scoped
    fixture (a trained run, a recorded buffer), so that it is built once, not per worker."""
    defs = getattr(item, "_fixtureinfo", None)
    if defs is None:
        return None
    if "local_ray" in defs.name2fixturedefs:
        return "ray"
    for fixturedefs in defs.name2fixturedefs.values():
        if any(d.scope == "module" for d in fixturedefs):
            return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    import torch

    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if not _can_render():
        skips["render"] = pytest.mark.skip(reason="needs OSMesa: apt-get install libosmesa6")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
        group = _xdist_group(item)
        if group is not None and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


def _tree_hashes(root):
    import hashlib

    return {
        str(p.relative_to(root)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def tree_hashes():
    """`tree_hashes(root)`: every path under `root` -> its file's sha256, or `dir`: equal
    before and after, nothing there was created, changed or removed."""
    return _tree_hashes


@pytest.fixture
def same_metrics():
    """Compare two runs' metrics.jsonl rows: integers and strings exactly, floats to 1e-6.

    Two processes can differ in the last bits of a float: the BLAS kernels' summation order
    depends on memory alignment, which differs between processes. Resume itself is exact.
    """

    def check(a, b):
        assert len(a) == len(b)
        for row_a, row_b in zip(a, b, strict=True):
            assert row_a.keys() == row_b.keys()
            for key, value in row_a.items():
                if isinstance(value, float):
                    assert value == pytest.approx(row_b[key], rel=1e-6, abs=1e-9), key
                else:
                    assert value == row_b[key], key

    return check
