"""One dataclass per run, with presets, validated before any work is done.

`aloe train --preset P --<field> VALUE` starts from preset P and overrides single fields;
nested fields are spelled with dots (`--aloe.beta 10`, `--critic.num-q 4`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.algos.aloe import AloeConfig
from aloe.algos.awr import AwrConfig
from aloe.algos.ppo_sbc import PpoConfig
from aloe.collect import CollectConfig
from aloe.critics.chunked_q import CriticConfig
from aloe.envs.metaworld import EnvConfig
from aloe.envs.tasks import DEFAULT_TASK, check_task, task_list
from aloe.observation import INSTRUCTION_KINDS, OBS_KINDS, VisionConfig
from aloe.operators.scripted import OperatorConfig
from aloe.policies.flow import ActorConfig

ALGOS = ("aloe", "awr", "dagger", "bc", "ppo-sbc")
PRESETS = ("smoke", "default", "paper")


@dataclass
class TrainConfig:
    """A whole run of Algorithm 1 (or of a baseline on the same loop)."""

    task: str = DEFAULT_TASK
    """MetaWorld v3 task (`aloe tasks`). The default, pick-place-v3: with 2 noisy
    demonstrations BC alone succeeds 7-10 % of the time, the paper's BC range
    (peg-insert-side: 0 % with 2 demos, 30 % with 5; assembly: 3 % with 2)."""
    algo: str = "aloe"
    """Algorithm: aloe | awr | dagger | bc | ppo-sbc (BC = the warm start alone)."""
    preset: str = "default"
    """Preset the run started from (smoke | default | paper); fields below override it."""
    out: Path = Path("runs/aloe")
    """Run directory (config.json, metrics.jsonl, TensorBoard events, checkpoints/, dataset/)."""
    seed: int = 0
    """Seed of everything: episode seeds, sampling, network initialisation."""
    iterations: int = 5
    """RL iterations T after the BC warm start (iteration 0)."""
    device: str = "cpu"
    """Torch device: cpu | cuda | cuda:N | auto."""
    horizon: int = 10
    """Action chunk length h of actor and critic (paper: 50 at 30 Hz; MetaWorld runs at 80 Hz
    and its expert episodes last ~100 steps, so 10 steps = 0.125 s)."""
    exec_horizon: int = 5
    """Actions executed from each chunk before replanning (paper: 25 for precision tasks)."""
    num_demos: int = 2
    """Successful operator demonstrations for the BC warm start (Algorithm 1, line 1), per
    task (a multi-task run collects num_demos × tasks, the tasks taken in turn)."""
    bc_steps: int = 3000
    """Gradient steps of the BC warm start."""
    eval_episodes: int = 20
    """Operator-free evaluation episodes per iteration, on fixed seeds."""
    progress: bool = True
    """Show progress bars."""
    obs: str = "state"
    """What the policy and the critic see: state (39-dim MetaWorld state) | image (the state
    plus camera images through a frozen encoder, `vision.*`; needs the `vision` extra)."""
    instructions: str = "learned"
    """Instruction token: learned (an embedding per task) | minilm (frozen all-MiniLM-L6-v2
    sentence embeddings, the `vision` extra; what tells tasks apart in a multi-task run)."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """Cameras and frozen image encoder of `obs image` runs."""
    env: EnvConfig = field(default_factory=EnvConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    aloe: AloeConfig = field(default_factory=AloeConfig)
    """ALOE; also the optimiser, batch size and γ every algorithm shares (and DAgger's
    aloe.actor_steps BC steps per iteration)."""
    awr: AwrConfig = field(default_factory=AwrConfig)
    """AWR with a distributional value (algo awr)."""
    ppo: PpoConfig = field(default_factory=PpoConfig)
    """Action-chunked PPO with self behaviour cloning (algo ppo-sbc)."""

    def resolved(self) -> TrainConfig:
        """Copy shared fields into the sub-configs so that each part reads one value."""
        cfg = dataclasses.replace(self)
        cameras = tuple(self.vision.cameras) if self.obs == "image" else ()
        cfg.env = dataclasses.replace(self.env, task=self.task, cameras=cameras,
                                      image_size=self.vision.image_size)  # fmt: skip
        cfg.actor = dataclasses.replace(self.actor, horizon=self.horizon)
        cfg.critic = dataclasses.replace(self.critic, horizon=self.horizon)
        if len(task_list(self.task)) > 1:  # sim.state's size differs between tasks
            cfg.collect = dataclasses.replace(self.collect, record_sim_state=False)
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and what is allowed."""
        check_task(self.task)
        task_list(self.task)
        _check(self.algo in ALGOS, "algo", self.algo, f"one of {ALGOS}")
        _check(self.obs in OBS_KINDS, "obs", self.obs, f"one of {OBS_KINDS}")
        _check(self.instructions in INSTRUCTION_KINDS, "instructions", self.instructions,
               f"one of {INSTRUCTION_KINDS}")  # fmt: skip
        if self.obs == "image":
            self.vision.validate()
        _check(not self.env.cameras, "env.cameras", self.env.cameras,
               "empty: a run's cameras are --obs image with --vision.cameras")  # fmt: skip
        _check(self.preset in PRESETS, "preset", self.preset, f"one of {PRESETS}")
        _check(self.iterations >= 0, "iterations", self.iterations, ">= 0")
        _check(self.horizon >= 1, "horizon", self.horizon, ">= 1")
        _check(1 <= self.exec_horizon <= self.horizon, "exec_horizon", self.exec_horizon,
               f"1..horizon ({self.horizon})")  # fmt: skip
        _check(self.num_demos >= 1, "num_demos", self.num_demos, ">= 1")
        _check(self.bc_steps >= 0, "bc_steps", self.bc_steps, ">= 0")
        _check(self.eval_episodes >= 1, "eval_episodes", self.eval_episodes, ">= 1")
        _check(self.env.max_steps >= 1, "env.max_steps", self.env.max_steps, ">= 1")
        _check(self.env.c_fail is None or self.env.c_fail > 0, "env.c_fail", self.env.c_fail,
               "> 0 or None")  # fmt: skip
        _check(self.operator.noise_std >= 0, "operator.noise_std", self.operator.noise_std, ">= 0")
        _check(self.operator.delay_steps >= 0, "operator.delay_steps",
               self.operator.delay_steps, ">= 0")  # fmt: skip
        _check(self.collect.success_quota >= 1, "collect.success_quota",
               self.collect.success_quota, ">= 1")  # fmt: skip
        _check(self.collect.max_episodes >= 1, "collect.max_episodes",
               self.collect.max_episodes, ">= 1")  # fmt: skip
        for name in ("hidden_dim", "num_layers", "num_heads", "num_flow_steps"):
            _check(
                getattr(self.actor, name) >= 1, f"actor.{name}", getattr(self.actor, name), ">= 1"
            )
        for name in ("hidden_dim", "num_layers", "num_heads", "num_q"):
            _check(
                getattr(self.critic, name) >= 1,
                f"critic.{name}",
                getattr(self.critic, name),
                ">= 1",
            )
        _check(self.actor.hidden_dim % self.actor.num_heads == 0, "actor.hidden_dim",
               self.actor.hidden_dim, f"a multiple of actor.num_heads ({self.actor.num_heads})")  # fmt: skip
        _check(self.critic.hidden_dim % self.critic.num_heads == 0, "critic.hidden_dim",
               self.critic.hidden_dim, f"a multiple of critic.num_heads ({self.critic.num_heads})")  # fmt: skip
        self.aloe.validate()
        self.awr.validate()
        self.ppo.validate()

    def to_json(self) -> str:
        return json.dumps(_jsonable(dataclasses.asdict(self)), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return _from_dict(cls, json.loads(text))


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"config field {name} = {value!r} is not allowed: must be {allowed}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _from_dict(cls: Any, d: dict[str, Any]) -> Any:
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        f = hints.get(k)
        if f is None:
            raise ValueError(f"unknown config field {k!r} for {cls.__name__}")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            kwargs[k] = _from_dict(type(default), v)
        elif isinstance(default, Path):
            kwargs[k] = Path(v)
        elif isinstance(default, tuple):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def preset(name: str, task: str | None = None) -> TrainConfig:
    """The preset's config; `aloe train` overrides single fields on top of it."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    cfg = TrainConfig(preset=name)
    if task:
        cfg.task = task
    if name == "smoke":  # seconds on 2 cores: for tests and CI, not for results
        cfg.iterations, cfg.num_demos, cfg.bc_steps, cfg.eval_episodes = 2, 2, 40, 2
        cfg.env.max_steps = 120
        cfg.collect = CollectConfig(success_quota=2, max_episodes=2, operator_max_steps=200)
        cfg.actor = dataclasses.replace(cfg.actor, hidden_dim=32, num_layers=1, num_heads=2)
        cfg.critic = dataclasses.replace(cfg.critic, hidden_dim=32, num_layers=1, num_heads=2,
                                         num_q=2)  # fmt: skip
        cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=20, actor_steps=10, batch_size=32,
                                       num_value_samples=2, warmup_steps=5)  # fmt: skip
        cfg.ppo = dataclasses.replace(cfg.ppo, epochs=2, minibatch_size=32, bc_batch_size=16,
                                      sbc_buffer_episodes=10)  # fmt: skip
        cfg.vision = dataclasses.replace(cfg.vision, image_size=32, encoder="siglip-tiny")
    elif name == "default":  # ≤ 20 minutes on 2 CPU cores (see README for the measured time)
        cfg.actor = dataclasses.replace(cfg.actor, hidden_dim=64, num_layers=2, num_heads=4)
        cfg.critic = dataclasses.replace(cfg.critic, hidden_dim=64, num_layers=2, num_heads=4)
        cfg.aloe = dataclasses.replace(cfg.aloe, critic_steps=400, actor_steps=200,
                                       batch_size=128, num_value_samples=2)  # fmt: skip
    elif name == "paper":  # Appendix C; meant for a GPU
        cfg.horizon, cfg.exec_horizon = 50, 25
        cfg.critic = dataclasses.replace(cfg.critic, hidden_dim=256, num_layers=6, num_heads=8)
        cfg.aloe = dataclasses.replace(cfg.aloe, batch_size=256, gamma=0.99, polyak=0.005,
                                       critic_lr=3e-5, warmup_steps=100)  # fmt: skip
    # AWR gets ALOE's update budget, so that the two differ only in the value they weight with.
    cfg.awr = dataclasses.replace(cfg.awr, value_steps=cfg.aloe.critic_steps,
                                  actor_steps=cfg.aloe.actor_steps)  # fmt: skip
    return cfg
