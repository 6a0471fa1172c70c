"""An unmodified `openpi_client.WebsocketClientPolicy` (PyPI openpi-client 0.1.2) gets action
chunks from `aloe serve`.

openpi-client pins numpy<2, which aloe's environment cannot take, so the client runs as a
robot's process would: from a virtualenv of its own (built once into pytest's cache, from
PyPI), talking to the server over loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aloe.serve.server import Options, PolicyServer, Running

pytestmark = pytest.mark.slow
OPENPI = ["openpi-client==0.1.2", "typing_extensions"]  # 0.1.2 imports it without requiring it

CLIENT = r"""
import json, sys
import numpy as np
from openpi_client import action_chunk_broker, websocket_client_policy

port, token = int(sys.argv[1]), sys.argv[2]
policy = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port,
                                                       api_key=token)
meta = policy.get_server_metadata()
obs = {"observation.state": np.zeros(39, dtype=np.float32), "prompt": "pick up the puck"}
out = policy.infer(obs)
broker = action_chunk_broker.ActionChunkBroker(policy, action_horizon=meta["exec_horizon"])
one = broker.infer(obs)
try:
    policy.infer({"observation.state": np.zeros(3, dtype=np.float32)})
    error = None
except RuntimeError as e:
    error = str(e)
print(json.dumps({"numpy": np.__version__, "server": meta["server"], "horizon": meta["horizon"],
                  "shape": list(out["actions"].shape), "dtype": str(out["actions"].dtype),
                  "version": int(out["policy_version"]), "step": list(one["actions"].shape),
                  "timing": sorted(out["server_timing"]), "error": error}))
"""


@pytest.fixture(scope="session")
def openpi_python(request: pytest.FixtureRequest) -> Path:
    venv = Path(request.config.cache.mkdir("openpi-client-0.1.2-venv"))
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True
        )
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *OPENPI],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if made.returncode or pip.returncode:
            pytest.skip(
                f"cannot build openpi-client's virtualenv: {made.stderr}{pip.stderr}"[-500:]
            )
        (venv / "ready").write_text("")
    return python


def test_openpi_client_gets_chunks(openpi_python: Path, untrained_run: Path):
    token = "interop-token-0123456789"
    running = Running(PolicyServer(untrained_run, Options(token=token)))
    try:
        proc = subprocess.run(
            [str(openpi_python), "-c", CLIENT, str(running.port), token],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        running.stop()
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["numpy"].startswith("1.")  # openpi's own numpy, not aloe's
    assert got["server"] == "aloe" and got["horizon"] == 10
    assert got["shape"] == [10, 4] and got["dtype"] == "float32" and got["version"] == 0
    assert got["step"] == [4]  # openpi's ActionChunkBroker hands out one action at a time
    assert got["timing"] == ["infer_ms"]
    assert "bad_request: observation.state: shape (3,)" in got["error"]
