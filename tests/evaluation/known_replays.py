"""Buffers whose values are known exactly, shared by the OPE tests (test_ope, test_action_ope).

A noise-free scripted demonstration and a random-policy episode with one takeover, stored as
the frames a run's store would give, with a restorer; and MetaWorld's scripted expert as a
deterministic BatchPolicy, so that every restored rollout has one possible return.
"""

import numpy as np

from aloe import data as D
from aloe.collect import run_episode
from aloe.envs.failures import FailureConfig
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.evaluation.restore import EpisodeRestorer
from aloe.operators.scripted import OperatorConfig, ScriptedOperator, expert_policy
from aloe.policies.chunk_policy import RandomPolicy

TASK, GAMMA, H = "pick-place-v3", 0.99, 10
# stall-only takeovers and the oracle: the one outcome of each restore is known by hand
CFG = EnvConfig(task=TASK, c_fail=60.0, max_steps=150, failures=FailureConfig(action_level=False))
QUICK = OperatorConfig(
    profile="oracle", noise_std=0.0, patience=15
)  # noise-free; takes over after 15 idle steps


def frames_of(episodes):
    """The columns a store's `load_frames` gives for these episodes, indexed 0, 1, ..."""
    cols = {k: np.concatenate([ep.steps[k] for ep in episodes]) for k in episodes[0].steps}
    cols["episode_index"] = np.concatenate([np.full(len(ep), i) for i, ep in enumerate(episodes)])
    cols["frame_index"] = np.concatenate([np.arange(len(ep)) for ep in episodes])
    cols["index"] = np.arange(len(cols[D.ACTION]))
    cols["task_index"] = np.zeros(len(cols[D.ACTION]), dtype=np.int64)
    return cols


def recorded_buffer():
    """(frames, restorer): a noise-free demonstration (episode 0) and a random-policy episode
    with a takeover (episode 1), so all three sources are present."""
    env = TaskEnv(CFG)
    demo = run_episode(env, ScriptedOperator(TASK, QUICK), 4, policy=None)
    taken = run_episode(env, ScriptedOperator(TASK, QUICK), 9, policy=RandomPolicy(seed=2))
    assert demo.success and taken.meta["takeovers"] == 1
    frames = frames_of([demo, taken])
    seeds = {0: demo.meta["seed"], 1: taken.meta["seed"]}
    return frames, EpisodeRestorer(frames, seeds, CFG.max_steps)


class Expert:
    """MetaWorld's scripted expert as a deterministic BatchPolicy (one action per chunk)."""

    exec_horizon = 1

    def __init__(self):
        self.expert = expert_policy(TASK)

    def act(self, state):
        return np.clip(self.expert.get_action(np.asarray(state, np.float64)), -1, 1)

    def act_chunks(self, states):
        return np.asarray([self.act(s) for s in states], dtype=np.float32)[:, None]
