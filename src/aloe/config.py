"""One dataclass per run, with presets, validated before any work is done.

`aloe train --preset P --<field> VALUE` starts from preset P and overrides single fields;
nested fields are spelled with dots (`--aloe.beta 10`, `--critic.num-q 4`). Each algorithm's
own settings are a group of their own (its row's `group` in `aloe.algos.table`), what every
learner shares is `optim.*`; a config.json saved before that layout is read through
`aloe.config_json.LEGACY_KEYS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aloe.algos.aloe_config import AloeConfig
from aloe.algos.awr import AwrConfig
from aloe.algos.dagger import DaggerConfig
from aloe.algos.optimised import OptimConfig, optim_preset
from aloe.algos.ppo_sbc import PpoConfig
from aloe.algos.recap import RecapConfig
from aloe.algos.table import ALGORITHMS
from aloe.collect import CollectConfig
from aloe.config_json import FIELD, check_types, jsonable, parse
from aloe.critics.chunked_q import CriticConfig
from aloe.datasets.demos import DemosMap
from aloe.envs.base import EnvConfig, PresetSizes
from aloe.envs.registry import preset_sizes, simulated
from aloe.envs.tasks import DEFAULT_TASK, check_task, task_list
from aloe.errors import UsageError, bad, require
from aloe.observation import INSTRUCTION_KINDS, OBS_KINDS, VisionConfig
from aloe.operators.scripted import OperatorConfig
from aloe.policies.flow import ActorConfig
from aloe.policies.lerobot_config import LeRobotConfig
from aloe.progress import Progress
from aloe.vision import language
from aloe.vision.encoders import VISION_EXTRA

ALGOS = tuple(ALGORITHMS)  # aloe, awr, dagger, bc, ppo-sbc, recap (aloe.algos.table)
PRESETS = ("smoke", "default", "paper", "mt10")


@dataclass
class TrainConfig:
    """A whole run of Algorithm 1 (or of a baseline on the same loop)."""

    task: str = DEFAULT_TASK
    """MetaWorld v3 task (`aloe tasks`). The default, pick-place-v3: with 2 noisy
    demonstrations BC alone succeeds 7-10 % of the time, the paper's BC range
    (peg-insert-side: 0 % with 2 demos, 30 % with 5; assembly: 3 % with 2). `robot`: a
    robot without a simulator, whose sizes come from `demos` and whose episodes from
    `aloe robot` (docs/real-robot.md)."""
    algo: str = "aloe"
    """Algorithm: aloe | awr | dagger | bc | ppo-sbc | recap (BC = the warm start alone)."""
    preset: str = "default"
    """Preset the run started from (smoke | default | paper | mt10); fields below override
    it."""
    out: Path = Path("runs/aloe")
    """Run directory (config.json, metrics.jsonl, TensorBoard events, checkpoints/, dataset/)."""
    seed: int = 0
    """Seed of everything: episode seeds, sampling, network initialisation."""
    iterations: int = 5
    """RL iterations T after the BC warm start (iteration 0)."""
    device: str = "cpu"
    """Torch device: cpu | cuda | cuda:N | auto."""
    compile: bool = False
    """Run the flow actor's sampling and velocity network and the chunked critic's forward
    through torch.compile (a C++ compiler needed; without one, one warning and eager). Off:
    on 2 CPU cores each graph's first call compiles for tens of seconds (docs/speed.md)."""
    horizon: int = 10
    """Action chunk length h of actor and critic, and of the sampler's chunks: the one field
    that sets it (paper: 50 at 30 Hz; MetaWorld runs at 80 Hz and its expert episodes last
    ~100 steps, so 10 steps = 0.125 s)."""
    exec_horizon: int = 5
    """Actions executed from each chunk before replanning (paper: 25 for precision tasks)."""
    num_demos: int = 10
    """Successful operator demonstrations for the BC warm start (Algorithm 1, line 1), per
    task (a multi-task run collects num_demos × tasks, the tasks taken in turn). 10: from 2
    of the human profile's demonstrations BC succeeds 2 % of the time and the loop's data
    are nearly all takeovers; from 10 BC starts near 0.5 (docs/results.md). Unused with
    `demos`, whose every usable episode is a demonstration."""
    demos: Path | None = None
    """A LeRobotDataset v3 directory (written by LeRobot, on local disk), an aloe store or a
    run directory whose episodes are the warm start's demonstrations instead of the
    simulated operator's: every episode at least `horizon` long, whatever num_demos says
    (aloe.datasets.demos; docs/usage.md, "Demonstrations from a dataset"). Read-only, and
    checked against the run before any work. The run's store then records no sim.state."""
    demos_map: DemosMap = field(default_factory=DemosMap)
    """Which features of `demos` are the state, the action, the cameras, the instruction."""
    bc_steps: int = 3000
    """Gradient steps of the BC warm start."""
    eval_episodes: int = 20
    """Operator-free evaluation episodes per iteration, on fixed seeds."""
    final_eval_episodes: int = 0
    """Evaluation episodes of the last iteration, whose success is the run's result (20
    episodes cannot separate 0.4 from 0.5; 50 give a standard error of about 0.07);
    0 = eval_episodes. The first eval_episodes seeds are the same as every iteration's."""
    eval_batch: int = 10
    """Evaluation episodes played together, one policy call per chunk for all of them, each
    with its own seed and noise; 1 = one at a time. The same episodes as one at a time up to
    a batched matmul's rounding (success and steps matched in every episode measured); 10
    evaluates the default preset ~4-5x faster on 2 cores."""
    progress: Progress = None
    """Progress on stderr: neither flag, bars when stderr is a terminal, else one line per
    phase with its duration; --progress, bars; --no-progress, neither (aloe.progress)."""
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
    actor_kind: str = "flow"
    """The actor: flow (the compact flow VLA, `actor.*`) | lerobot (a LeRobot SmolVLA, π0 or
    π0.5 through aloe.policies.lerobot_actor, `lerobot.*`; the lerobot extra)."""
    lerobot: LeRobotConfig = field(default_factory=LeRobotConfig)
    """The LeRobot policy of `actor_kind lerobot` runs."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    """What every algorithm's learner shares: optimiser, schedule, batch size, γ."""
    aloe: AloeConfig = field(default_factory=AloeConfig)
    """ALOE's own settings (algo aloe)."""
    awr: AwrConfig = field(default_factory=AwrConfig)
    """AWR with a distributional value (algo awr)."""
    dagger: DaggerConfig = field(default_factory=DaggerConfig)
    """HG-DAgger's steps per iteration (algo dagger)."""
    ppo: PpoConfig = field(default_factory=PpoConfig)
    """Action-chunked PPO with self behaviour cloning (algo ppo-sbc)."""
    recap: RecapConfig = field(default_factory=RecapConfig)
    """RECAP, advantage-conditioned flow matching (algo recap)."""

    def resolved(self) -> TrainConfig:
        """Copy shared fields into the sub-configs so that each part reads one value."""
        cfg = dataclasses.replace(self)
        cameras = tuple(self.vision.cameras) if self.obs == "image" else ()
        cfg.env = dataclasses.replace(
            self.env, task=self.task, cameras=cameras, image_size=self.vision.image_size
        )
        # sim.state's size differs between tasks; a dataset's demonstrations have none
        if len(task_list(self.task)) > 1 or self.demos is not None:
            cfg.collect = dataclasses.replace(self.collect, record_sim_state=False)
        if self.demos is not None:  # the run's config.json names it wherever it runs
            cfg.demos = Path(os.path.abspath(self.demos))
        return cfg

    def clock_limit(self) -> int | None:
        """The time limit the episode clock is divided by (`aloe.data.episode_clock`) when
        the critic reads the clock (`critic.time_features`); None when it does not."""
        return self.env.max_steps if self.critic.time_features else None

    def validate(self) -> None:
        """Raise UsageError naming the first bad field and what is allowed: every field's
        type (its annotation) first, then the ranges, then the sub-configs'. Flags and a
        saved config.json (`from_json`) both come through here."""
        check_types(self)
        try:
            task_list(check_task(self.task))
        except ValueError as e:  # aloe.envs.tasks names the task and what is allowed
            raise UsageError(str(e)) from None
        checks: list[tuple[str, bool, str]] = [
            ("algo", self.algo in ALGOS, f"must be one of {', '.join(ALGOS)}"),
            ("preset", self.preset in PRESETS, f"must be one of {', '.join(PRESETS)}"),
            ("obs", self.obs in OBS_KINDS, f"must be one of {', '.join(OBS_KINDS)}"),
            (
                "instructions",
                self.instructions in INSTRUCTION_KINDS,
                f"must be one of {', '.join(INSTRUCTION_KINDS)}",
            ),
            (
                "device",
                DEVICE.fullmatch(self.device) is not None,
                "must be cpu, cuda, cuda:N, mps or auto",
            ),
            ("seed", self.seed >= 0, "must be >= 0"),
            ("iterations", self.iterations >= 0, "must be >= 0"),
            ("horizon", self.horizon >= 1, "must be >= 1"),
            (
                "exec_horizon",
                1 <= self.exec_horizon <= self.horizon,
                f"must be in 1..horizon ({self.horizon})",
            ),
            ("num_demos", self.num_demos >= 1, "must be >= 1"),
            ("bc_steps", self.bc_steps >= 0, "must be >= 0"),
            ("eval_episodes", self.eval_episodes >= 1, "must be >= 1"),
            (
                "final_eval_episodes",
                self.final_eval_episodes >= 0,
                "must be >= 0 (0 = eval_episodes)",
            ),
            ("eval_batch", self.eval_batch >= 1, "must be >= 1"),
        ]
        for name, ok, allowed in checks:
            require(ok, f"{FIELD}{name}", getattr(self, name), allowed)
        self._validate_sizes()
        if self.instructions == "minilm":
            require(
                language.available(),
                f"{FIELD}instructions",
                self.instructions,
                f"needs the vision extra: {VISION_EXTRA}",
            )
        cameras = tuple(self.vision.cameras) if self.obs == "image" else ()
        require(
            tuple(self.env.cameras) in ((), cameras),
            f"{FIELD}env.cameras",
            self.env.cameras,
            "must be empty: a run's cameras are --obs image with --vision.cameras",
        )
        if self.obs == "image":
            self.vision.validate(FIELD, self.task)
            if self.vision.encoder == "lerobot":  # the tower of the --lerobot.* VLA
                self.lerobot.validate(FIELD)
        self._validate_actor_kind()
        self.demos_map.validate(FIELD)
        self._validate_robot()
        own = [row.settings(self) for row in ALGORITHMS.values() if row.group is not None]
        shared = [self.env, self.operator, self.collect, self.actor, self.critic, self.optim]
        for part in (*shared, *own):  # every algorithm's: a saved config holds them all
            part.validate(FIELD)

    def _validate_sizes(self) -> None:
        """The bounds below `aloe.config_json.MAX_INT` that keep a run's seeds distinct and its
        episodes in memory (see SEEDS_PER_ITERATION and MAX_EPISODE_STEPS)."""
        seeds = f"an iteration has {SEEDS_PER_ITERATION} episode seeds"
        held = "an episode is held in memory until it is stored"
        tasks = len(task_list(self.task))
        checks: list[tuple[str, int, int, str]] = [
            (
                "num_demos",
                self.num_demos,
                SEEDS_PER_ITERATION // (3 * tasks),
                f"per task: the warm start may run 3 episodes a demonstration, and {seeds}",
            ),
            ("collect.max_episodes", self.collect.max_episodes, SEEDS_PER_ITERATION, seeds),
            ("env.max_steps", self.env.max_steps, MAX_EPISODE_STEPS, held),
            (
                "collect.operator_max_steps",
                self.collect.operator_max_steps,
                MAX_EPISODE_STEPS,
                held,
            ),
        ]
        for name, value, most, why in checks:
            require(value <= most, f"{FIELD}{name}", value, f"must be <= {most} ({why})")

    def _validate_robot(self) -> None:
        """A run without a simulator (`--task robot`) takes its sizes from `demos`, and its
        episodes are the robot's, with the person watching: no algorithm that collects its
        own rollouts in a simulator."""
        if simulated(self.task):
            return
        why = f"--task {self.task} has no simulator"
        require(
            self.demos is not None,
            f"{FIELD}demos",
            self.demos,
            f"{why}: its sizes come from a LeRobot dataset of the robot (give --demos PATH)",
        )
        takes = [a for a, row in ALGORITHMS.items() if row.collect is None]
        require(
            ALGORITHMS[self.algo].collect is None,
            f"{FIELD}algo",
            self.algo,
            f"{why}, where {self.algo} collects its own rollouts; one of {', '.join(takes)}",
        )

    def _validate_actor_kind(self) -> None:
        require(
            self.actor_kind in ACTOR_KINDS,
            f"{FIELD}actor_kind",
            self.actor_kind,
            f"must be one of {', '.join(ACTOR_KINDS)}",
        )
        if self.actor_kind != "lerobot":
            return
        require(
            self.algo in LEROBOT_ALGOS,
            f"{FIELD}algo",
            self.algo,
            f"must be one of {', '.join(LEROBOT_ALGOS)} with actor_kind lerobot",
        )
        row = ALGORITHMS[self.algo]
        if row.lerobot_check is not None:
            row.lerobot_check(row.settings(self))
        self.lerobot.validate(FIELD)

    def to_json(self) -> str:
        """The config as saved beside a run, without `out`: a run directory is wherever it is
        (moved or copied, it resumes in place). Only `optim.q_abs_max` may be inf: "inf"."""
        fields = dataclasses.asdict(self)
        del fields["out"]
        return json.dumps(jsonable(fields), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> TrainConfig:
        """A saved config, checked as strictly as flags are (types, ranges, and that the
        shared fields agree as `resolved` left them); errors are prefixed with `source`.
        A config saved by an older version is read as today's (`aloe.config_json.LEGACY_KEYS`;
        an `out` it holds is ignored, see `to_json`)."""
        try:
            return parse(cls, text)
        except UsageError as e:
            if source is None:
                raise
            raise UsageError(f"{source}: {e}") from None

    @classmethod
    def load(cls, run_dir: Path) -> TrainConfig:
        """A run directory's config.json (`from_json`), with `out` = run_dir."""
        path = Path(run_dir) / "config.json"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise bad(str(path), allowed=f"unreadable ({e}); restore it") from None
        return dataclasses.replace(cls.from_json(text, path), out=Path(run_dir))


ACTOR_KINDS = ("flow", "lerobot")
LEROBOT_ALGOS = tuple(a for a, row in ALGORITHMS.items() if row.trains_actor)
DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")
# `aloe.data.episode_seed` spaces iterations 10 000 seeds apart: more episodes in one
# iteration would reuse the next iteration's seeds, and the store would hold a seed twice.
SEEDS_PER_ITERATION = 10_000
# An episode is held in memory until it is stored whole (and sampled whole by the chunk
# sampler); MetaWorld's own limit is 500 steps, OGBench's 1 000.
MAX_EPISODE_STEPS = 100_000


def _task_sizes(cfg: TrainConfig, name: str, sizes: PresetSizes) -> None:
    """What the task's simulator changes in every preset (`aloe.envs.base.PresetSizes`;
    `--exec-horizon` and the other flags override it)."""
    if sizes.exec_horizon is not None:
        cfg.exec_horizon = min(sizes.exec_horizon, cfg.horizon)
    cfg.vision = dataclasses.replace(cfg.vision, cameras=(sizes.camera,))
    cfg.operator = dataclasses.replace(cfg.operator, patience=sizes.patience)
    cfg.env.failures = dataclasses.replace(cfg.env.failures, stall_steps=sizes.stall_steps)
    if name == "smoke":
        return  # the smoke preset's limits: its episodes are cut short by design
    cfg.env.max_steps = sizes.max_steps
    cfg.collect = dataclasses.replace(cfg.collect, operator_max_steps=sizes.max_steps)
    if name == "default" and sizes.eval_episodes is not None:
        cfg.eval_episodes = sizes.eval_episodes


def _mt10_sizes(cfg: TrainConfig, task: str | None) -> None:
    """The `mt10` preset: action-chunked PPO with self-BC on MetaWorld's MT10 from the multi-
    task BC start, as the chunked-PPO paper tests it (issue 18), on the default preset's
    networks: one policy for the 10 tasks told apart by frozen MiniLM instructions, 5
    demonstrations per task (BC: 0.82 ± 0.07 success, 78 steps to success over 3 seeds),
    50 evaluation episodes (5 per task), 12 PPO iterations of 9 000 operator-free
    environment steps each (~55 s an iteration on one free core, 23-29 minutes a seed
    measured side by side; README, "Results"). The PPO fields are PpoConfig's defaults,
    measured on MT10. Another --task or --algo runs on the same sizes."""
    cfg.task = task or "mt10"
    cfg.algo = "ppo-sbc"
    cfg.iterations = 12
    cfg.num_demos = 5
    cfg.eval_episodes = 50
    cfg.instructions = "minilm"


def preset(name: str, task: str | None = None) -> TrainConfig:
    """The preset's config; `aloe train` overrides single fields on top of it. Each
    algorithm's own settings are its row's `preset`, the shared ones `optim_preset`."""
    require(name in PRESETS, "--preset", name, f"unknown preset; one of {', '.join(PRESETS)}")
    cfg = TrainConfig(preset=name)
    if task:
        cfg.task = task
    cfg.optim = optim_preset(name)
    for row in ALGORITHMS.values():
        if row.group is not None and row.preset is not None:
            setattr(cfg, row.group, row.preset(name))
    if name == "smoke":  # seconds on 2 cores: for tests and CI, not for results
        cfg.iterations = 2
        cfg.num_demos = 2
        cfg.bc_steps = 40
        cfg.eval_episodes = 2
        cfg.env.max_steps = 120
        cfg.collect = CollectConfig(success_quota=2, max_episodes=2, operator_max_steps=200)
        cfg.actor = dataclasses.replace(cfg.actor, hidden_dim=32, num_layers=1, num_heads=2)
        cfg.critic = dataclasses.replace(
            cfg.critic, hidden_dim=32, num_layers=1, num_heads=2, num_q=2
        )
        cfg.vision = dataclasses.replace(cfg.vision, image_size=32, encoder="siglip-tiny")
    elif name in ("default", "mt10"):  # default: ≤ 20 minutes on 2 CPU cores (README)
        cfg.actor = dataclasses.replace(cfg.actor, hidden_dim=64, num_layers=2, num_heads=4)
        cfg.critic = dataclasses.replace(cfg.critic, hidden_dim=64, num_layers=2, num_heads=4)
        if name == "mt10":
            _mt10_sizes(cfg, task)
    elif name == "paper":  # Appendix C; meant for a GPU
        cfg.horizon = 50
        cfg.exec_horizon = 25
        cfg.critic = dataclasses.replace(cfg.critic, hidden_dim=256, num_layers=6, num_heads=8)
    sizes = preset_sizes(task)
    if sizes is not None:
        _task_sizes(cfg, name, sizes)
    return cfg
