import numpy as np

from aloe.collect import evaluate
from aloe.envs.metaworld import EnvConfig, TaskEnv
from aloe.evaluation.rollout import SerialPolicy, play, rollout
from aloe.policies.chunk_policy import RandomPolicy


def test_rollout_matches_collect_evaluate_on_the_same_seeds():
    env = TaskEnv(EnvConfig(task="reach-v3", c_fail=50.0, max_steps=30))
    seeds = [100, 101, 102]
    reference = evaluate(env, RandomPolicy(seed=3), seeds)
    policy = RandomPolicy(seed=3)
    trajs = [rollout(env, policy, s) for s in seeds]
    assert [len(t) for t in trajs] == reference.lengths
    assert [t.success for t in trajs] == reference.successes
    t = trajs[0]
    assert len(t.states) == len(t) + 1 and t.chunk_starts[:3] == [0, 10, 20]
    assert (
        t.failure_reason == "timeout" and t.rewards[-1] == -50.0 and set(t.rewards[:-1]) == {-1.0}
    )
    assert t.discounted_return(0.5) == sum(r * 0.5**k for k, r in enumerate(t.rewards))


class Alarm:
    def __init__(self, after):
        self.after, self.seen = after, 0

    def start_watching(self):
        self.seen = 0

    def watch(self, obs, info):
        self.seen += 1
        return "bored" if self.seen >= self.after else None


def test_play_executes_the_prefix_then_the_policy_and_ends_at_an_alarm():
    envs = [TaskEnv(EnvConfig(task="reach-v3", c_fail=50.0, max_steps=100)) for _ in range(2)]
    states = [e.reset(seed=7)[0]["state"] for e in envs]
    prefix = np.full((3, 4), 0.25, dtype=np.float32)
    trajs = play(
        envs,
        states,
        SerialPolicy(RandomPolicy(horizon=4, seed=0)),
        prefixes=[prefix, prefix[:0]],
        watchers=[Alarm(6), None],
    )
    a, b = trajs
    np.testing.assert_array_equal(np.stack(a.actions[:3]), prefix)
    assert a.chunk_starts[:2] == [0, 3] and b.chunk_starts[:2] == [0, 4]
    assert len(a) == 6 and a.failure_reason == "takeover: bored" and a.rewards[-1] == -50.0
    assert len(b) == 100 and b.failure_reason == "timeout"
