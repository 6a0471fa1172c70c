"""Time an actor's BC step and one chunk: the compact actor against a LeRobot SmolVLA,
with and without camera pixels (the lerobot extra; see README, "A LeRobot VLA as the actor").

    python benchmarks/lerobot_step.py [--batch 128] [--repeats 5] [--vlm DIR] [--device cpu]

Without `--vlm` the SmolVLA is the tiny random one the tests build offline
(`write_tiny_smolvlm`); with it, the SmolVLM at DIR (random action expert, `load_vlm_weights`
off, so nothing is downloaded). Prints one JSON object: per actor its trainable parameters,
the median ms of one BC step (forward, backward, Adam) at `--batch` and of one chunk
(`sample` on one observation), and each figure's ratio to the compact actor's, all measured
in this one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from aloe.policies.flow import ActorConfig, FlowPolicy
from aloe.speed.measure import time_calls

STATE, ACTION, HORIZON, IMAGE = 39, 4, 10, 64
TASKS = ["pick the puck and place it at the goal"]


def timings(actor: Any, batch: int, repeats: int, cameras: int, device: torch.device) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    state = torch.randn(batch, STATE, generator=g, device=device)
    task = torch.zeros(batch, dtype=torch.long, device=device)
    actions = torch.rand(batch, HORIZON, ACTION, generator=g, device=device) * 2 - 1
    valid = torch.ones(batch, HORIZON, device=device)
    images = None
    if cameras:
        images = torch.randint(
            0, 256, (batch, cameras, IMAGE, IMAGE, 3), generator=g, device=device, dtype=torch.uint8
        )
    params = [p for p in actor.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)

    def bc_step() -> None:
        loss = actor.flow_loss_per_sample(state, task, actions, valid, g, images=images).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def chunk() -> None:
        one = None if images is None else images[:1]
        actor.sample(state[:1], task[:1], 1, g, images=one)

    return {
        "trainable_params": sum(p.numel() for p in params),
        "bc_step_ms": 1e3 * time_calls(bc_step, repeats, device=device).median,
        "chunk_ms": 1e3 * time_calls(chunk, repeats, device=device).median,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vlm", default=None, help="a local SmolVLM directory (default: tiny)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import lerobot.policies.smolvla.modeling_smolvla  # noqa: F401  (before aloe's MuJoCo)

    from aloe.policies.lerobot_actor import build_actor
    from aloe.policies.lerobot_config import LeRobotConfig
    from aloe.policies.lerobot_tiny import write_tiny_smolvlm

    device = torch.device(args.device)
    torch.manual_seed(0)
    out: dict[str, Any] = {"batch": args.batch, "horizon": HORIZON, "image_px": IMAGE}
    compact = FlowPolicy(ActorConfig(), STATE, ACTION, 1, horizon=HORIZON).to(device)
    out["compact"] = timings(compact, args.batch, args.repeats, 0, device)
    with tempfile.TemporaryDirectory() as tmp:
        vlm = args.vlm or str(write_tiny_smolvlm(Path(tmp) / "vlm"))
        out["smolvla"] = "tiny (random, offline)" if args.vlm is None else args.vlm
        for name, cameras in (("smolvla_state", ()), ("smolvla_1_camera", ("corner",))):
            cfg = LeRobotConfig(vlm=vlm, num_flow_steps=10)
            actor = build_actor(
                cfg, TASKS, state_dim=STATE, action_dim=ACTION, horizon=HORIZON, cameras=cameras
            ).to(device)
            out[name] = timings(actor, args.batch, args.repeats, len(cameras), device)
    for name in ("smolvla_state", "smolvla_1_camera"):
        for key in ("bc_step_ms", "chunk_ms"):
            out[name][f"{key}_vs_compact"] = out[name][key] / out["compact"][key]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
