"""`aloe bench` (aloe.bench, aloe.speed): FLOPs counted exactly on hand-sized cases, the
report's structure at tiny sizes, the side-by-side table, and the new refusals.

No test asserts on a wall time: only on counts, on structure, and on figures that are
arithmetic of other figures.
"""

from __future__ import annotations

import math
import shlex

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aloe.cli import main
from aloe.envs.tasks import DEFAULT_TASK
from aloe.nn import transformer
from aloe.speed import against, learner, loop, measure, targets
from aloe.speed.table import render


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny sizes on a shared CI machine: a second thread buys nothing but contention."""
    with measure.torch_threads(1):
        yield


@pytest.fixture(scope="module")
def smoke(one_thread) -> learner.Sized:
    return learner.build("smoke", DEFAULT_TASK, "cpu")


# FLOPs: 2 per multiply-add, exactly.


def test_a_matmul_counts_two_flops_per_multiply_add():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert measure.count_flops(lambda: torch.mm(a, b)) == 2 * 3 * 5 * 7


def test_a_linear_layer_counts_its_forward_and_both_gradients():
    layer, x = nn.Linear(5, 7), torch.randn(3, 5, requires_grad=True)
    out: list[torch.Tensor] = []
    assert measure.count_flops(lambda: out.append(layer(x))) == 2 * 3 * 5 * 7
    # backward: the input's gradient and the weight's, one matmul each (the bias's is a sum)
    assert measure.count_flops(lambda: out[0].sum().backward()) == 2 * (2 * 3 * 5 * 7)


def test_cpu_attention_is_counted_forward_and_backward():
    b, h, s, d = 2, 3, 5, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    out: list[torch.Tensor] = []
    # Q K^T and (softmax) V: two products of s x d by d x s (and s x s by s x d)
    assert measure.count_flops(lambda: out.append(F.scaled_dot_product_attention(q, k, v))) == 2 * (
        2 * b * h * s * s * d
    )
    # the scores recomputed, then the gradients of the scores, V, Q and K
    assert measure.count_flops(lambda: out[0].sum().backward()) == 5 * (2 * b * h * s * s * d)


def test_the_fused_inference_path_counts_what_training_counts():
    net, x = transformer(16, 2, 2, 4, 0.0), torch.randn(3, 7, 16)
    trained = measure.count_flops(lambda: net(x))
    with torch.no_grad():
        net.eval()
        assert measure.count_flops(lambda: net(x)) == trained > 0
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on after counting


def test_figures_are_arithmetic_of_time_and_counted_flops():
    assert measure.work_figures(0.5, 10**9, 4.0) == {
        "ms": 500.0,
        "gflop": 1.0,
        "gflops": 2.0,
        "peak_share": 0.5,
    }
    peak = measure.matmul_peak(torch.device("cpu"), n=32, repeats=1)
    assert peak["gflops"] == pytest.approx(2 * 32**3 / (peak["ms"] / 1e3) / 1e9)


def test_the_bench_runs_a_thread_per_core_and_restores_the_count():
    before = torch.get_num_threads()
    with measure.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with measure.bench_threads() as threads:
        assert torch.get_num_threads() == threads["torch_threads"] == measure.cores()
        assert threads["torch_threads_before"] == before
    with measure.bench_threads(3) as threads:  # --threads 3
        assert torch.get_num_threads() == threads["torch_threads"] == 3
    assert torch.get_num_threads() == before


# The report at the smoke size.


def test_a_size_reports_steps_parts_and_inference(smoke):
    fig = learner.measure_size(smoke, peak_gflops=1.0, repeats=1, latency_calls=3)
    assert set(fig) == {"sizes", "critic_step", "actor_step", "actor_parts", "inference"}
    for step in ("critic_step", "actor_step"):
        assert set(fig[step]) == {"ms", "gflop", "gflops", "peak_share"}
        assert fig[step]["gflop"] > 0
    parts = {k: v for k, v in fig["actor_parts"].items() if isinstance(v, dict)}
    names = ["value_sampling", "q_data", "flow_forward", "flow_backward", "optimiser"]
    assert list(parts) == names + ["onestep_distil"]  # the smoke preset's sampler: one-step
    # the parts are the whole step: together they count exactly the step's FLOPs
    assert sum(p["gflop"] for p in parts.values()) == pytest.approx(fig["actor_step"]["gflop"])
    assert parts["optimiser"]["gflop"] == 0  # elementwise only
    assert fig["actor_parts"]["sum_ms"] == pytest.approx(sum(p["ms"] for p in parts.values()))
    for p in parts.values():
        assert p["share_of_step"] == pytest.approx(p["ms"] / fig["actor_step"]["ms"])
    assert set(fig["inference"]) == {"p50_ms", "p99_ms", "calls", "gflop"}
    assert fig["inference"]["p50_ms"] <= fig["inference"]["p99_ms"]


def test_the_synthetic_batch_has_the_sizes_of_the_preset(smoke):
    b = learner.batch_for(smoke)
    batch, h = smoke.cfg.optim.batch_size, smoke.cfg.horizon
    assert b.state.shape == (batch, smoke.obs.dim) and b.actions.shape == (batch, h, 4)
    assert bool(b.valid.all()) and b.task_index.dtype == torch.long


def test_the_loop_and_the_iteration_split(smoke, tmp_path):
    figures, frames = loop.measure_loop(smoke, steps=10, root=tmp_path)
    assert list(figures) == ["raw", "collect_demo", "collect_random", "collect_policy", "evaluate"]
    raw = figures["raw"]["steps_per_s"]
    for name in ("collect_demo", "collect_random", "collect_policy", "evaluate"):
        f = figures[name]
        assert f["steps"] >= 10 and f["episodes"] >= 1
        assert f["vs_raw"] == pytest.approx(f["steps_per_s"] / raw)
        assert f["steps_per_s_excl_inference"] >= f["steps_per_s"]
    assert figures["collect_demo"]["inference_ms_per_step"] == 0  # no policy acted
    assert figures["collect_policy"]["inference_ms_per_step"] > 0
    assert figures["evaluate"]["operator_ms_per_step"] == 0  # no operator watched
    assert frames.rows == figures["collect_policy"]["steps"]

    steps = learner.measure_size(smoke, peak_gflops=1.0, repeats=1, latency_calls=1)
    it = loop.measure_iteration(
        smoke, {"steps": {"smoke": steps}, "loop": figures}, frames, tmp_path
    )
    phases = ["collect_s", "critic_s", "actor_s", "evaluate_s", "checkpoint_s"]
    assert it["total_s"] == pytest.approx(sum(it[p] for p in phases))
    assert sum(it[f"{p[:-2]}_share"] for p in phases) == pytest.approx(1.0)
    a = smoke.cfg.aloe
    assert it["critic_s"] == pytest.approx(
        a.critic_steps * (steps["critic_step"]["ms"] + it["batch_ms"]) / 1e3
    )
    assert it["run_estimate_s"] == pytest.approx(
        it["warm_start_s"] + smoke.cfg.iterations * it["total_s"]
    )
    assert "preset's counts" in it["method"]

    # the sampler against steps of the library's default networks, at --horizon and --batch-size
    f = loop.sampler_vs_critic(frames, DEFAULT_TASK, 2, 4, torch.device("cpu"))
    assert (f["horizon"], f["batch"]) == (2, 4)
    assert f["vs_critic_step"] == pytest.approx(f["batches_per_s"] / f["critic_steps_per_s"])


def test_compiled_figures_set_both_ways_side_by_side(smoke, monkeypatch):
    """The structure and arithmetic of --compile's figures (torch.compile stubbed by the
    method itself: compiling for real takes minutes; tests/test_nn.py compiles)."""
    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    fig = learner.measure_size(smoke, peak_gflops=1.0, repeats=1, latency_calls=2, compile=True)
    assert list(fig["compile"]) == ["inference", "critic_step", "actor_step"]
    for f in fig["compile"].values():
        assert set(f) == {"cold_start_s", "eager_ms", "compiled_ms", "compiled_vs_eager"}
        assert f["compiled_vs_eager"] == pytest.approx(f["compiled_ms"] / f["eager_ms"])
    assert not smoke.learner.actor.compiled and not smoke.learner.critic.compiled  # off after


def test_each_target_is_marked_pass_or_miss_per_revision():
    this = {
        "steps.default.inference.p50_ms": 4.0,
        "steps.default.actor_parts.value_sampling.share_of_step": 0.5,
        "loop.collect_policy.vs_raw_excl_inference": 0.8,
    }
    old = {"steps.default.inference.p50_ms": 17.5, "steps.paper.critic_step.peak_share": 0.61}
    marks = targets.check(this)
    assert marks["chunk inference p50, default size"] == {
        "figure": 4.0,
        "target": "<= 5 ms",
        "met": True,
    }
    assert marks["V^π sampling / actor step, default size"]["met"] is False
    assert marks["critic step / matmul peak, paper size"] == {
        "figure": None,
        "target": ">= 0.6",
        "met": None,
    }
    text = targets.render([("this", this), ("HEAD~1", old)])
    rows = {line.split("  ")[0]: " ".join(line.split()) for line in text.splitlines()}
    assert rows["chunk inference p50, default size"].endswith("4 ms pass 17.5 ms miss <= 5 ms")
    assert rows["critic step / matmul peak, paper size"].endswith("- 0.61 pass >= 0.6")
    assert rows["collection (actor's takeovers, inference excluded) / raw stepping"].endswith(
        "0.8 pass - >= 0.8"
    )
    assert "serving round trip <= inference + 2 ms: not measured by the bench" in text


# Side by side.


def test_flatten_names_figures_by_path_and_renames_old_ones():
    flat = against.flatten(
        {
            "env_raw_steps_per_s": 5.0,
            "task": "t",
            "steps": {"default": {"critic_step": {"ms": 2.0}}},
        }
    )
    assert flat == {
        "loop.raw.steps_per_s": 5.0,
        "run.task": "t",
        "steps.default.critic_step.ms": 2.0,
    }


def test_the_table_shows_both_columns_their_ratio_and_dashes():
    text = render(
        [("this", {"a.x": 2.0, "a.n": "text", "b.only": 1}), ("HEAD", {"a.x": 1.0, "c.old": 3.0})]
    )
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["figure"] == ["this", "HEAD", "this/HEAD"]
    assert rows["a.x"] == ["2", "1", "2.00"]
    assert rows["b.only"] == ["1", "-", "-"]
    assert rows["c.old"] == ["-", "3", "-"]
    assert "this a.n: text" in text and "HEAD a.n" not in text


def test_the_other_revision_gets_only_the_options_it_knows():
    known = against.supported_flags("│ --task STR   the task │\n│ --json, --no-json │")
    assert known == {"--task", "--json", "--no-json"}
    argv = against.child_argv({"--task": ["t"], "--sizes": ["default", "paper"]}, known)
    assert argv == ["--task", "t"]


def test_a_revision_is_exported_without_touching_the_repository(tmp_path):
    if against.source_checkout() is None:
        pytest.skip("aloe is not imported from a git checkout")
    root, commit = against.resolve("HEAD")
    assert len(commit) == 40
    src = against.export(root, commit, tmp_path / "tree")
    assert (src / "aloe" / "cli.py").is_file()


@pytest.mark.slow
def test_a_revision_whose_bench_fails_leaves_an_empty_column(tmp_path):
    if against.source_checkout() is None:
        pytest.skip("aloe is not imported from a git checkout")
    with against.Revision("HEAD") as other:
        assert "--steps" in other.flags
        exported = other.dir
        found = other.run({"--steps": ["0"]})  # refused (or failing) in any revision
    assert found["figures"] == {} and found["error"].startswith("exit ")
    assert not exported.exists()  # the export is gone


def test_an_estimate_of_collection_episodes_follows_the_success_rate(smoke):
    loop_figs = {
        "collect_policy": {"successes": 1, "episodes": 4, "episode_s": 2.0},
        "collect_demo": {"episode_s": 1.0},
        "evaluate": {"episode_s": 0.5},
    }
    parts = {k: {"ms": 1.0} for k in ("flow_forward", "flow_backward", "optimiser")}
    steps = {"critic_step": {"ms": 1.0}, "actor_step": {"ms": 1.0}, "actor_parts": parts}
    it = loop.iteration_phases(smoke, steps, loop_figs, batch_ms=0.0, save_s=0.0)
    quota, most = smoke.cfg.collect.success_quota, smoke.cfg.collect.max_episodes
    assert it["collect_episodes"] == min(most, math.ceil(quota / 0.25))
    assert it["collect_s"] == pytest.approx(2.0 * it["collect_episodes"])


# Refusals: one line, before any work (the shared table is tests/test_bad_inputs.py).

REFUSALS = [
    ("bench --sizes default default", "--sizes ('default default'): names a size twice"),
    ("bench --sizes huge", "--sizes ('huge'): one of smoke, default, paper"),
    ("bench --repeats -1", "--repeats (-1): must be >= 0 (0: per size)"),
    ("bench --threads -1", "--threads (-1): must be >= 0 (0: one per core)"),
    ("bench --device tpu", "--device ('tpu'): must be cpu, cuda, cuda:N or auto"),
    ("bench --against no-such-revision", "--against ('no-such-revision'): not a commit, branch"),
    ("bench --against=--all", "--against ('--all'): a revision, not an option of git"),
]


@pytest.mark.parametrize("argv, shows", REFUSALS, ids=[a for a, _ in REFUSALS])
def test_a_bad_option_is_refused_in_one_line(argv, shows, tmp_path, monkeypatch, capsys):
    if "--against" in argv and against.source_checkout() is None:
        pytest.skip("aloe is not imported from a git checkout")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(argv)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("aloe bench: error: ") and shows in err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_missing_gpu_is_refused(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "--device ('cuda'): this machine has 0 CUDA device(s)" in capsys.readouterr().err
