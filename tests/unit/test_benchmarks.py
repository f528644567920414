"""The benchmark scripts measure what they claim: the peak-memory probe sees an allocation of known
size, the loss-path worker gives the same loss on both paths and less memory on the chunked one,
the GPU check skips cleanly without CUDA, and the pure helpers of the step-cost and orchestration
benchmarks compute what their docstrings say. (The full benchmarks are run by hand: see
benchmarks/README.md.)"""

from __future__ import annotations

import torch
import pytest

from tolerances import assert_close_scaled
from benchmarks import gpu_check, loss_path, orchestration, step_cost
from benchmarks.measure import PeakMemory, run_worker, table


def test_peak_memory_sees_a_known_allocation():
    torch.set_num_threads(1)
    size_mib = 192
    with PeakMemory() as peak:
        block = torch.ones(size_mib * 2**20 // 4)  # touched pages: resident
        del block
    assert size_mib * 0.9 <= peak.mib <= size_mib * 1.5, (peak.mib, peak.method)


def test_loss_path_workers_agree_and_chunked_is_leaner():
    common = ["--vocab", "32000", "--tokens", "128", "--hidden", "64", "--components", "none"]
    plain = run_worker(loss_path.SCRIPT, [*common, "--path", "plain"], timeout_s=300)
    chunked = run_worker(loss_path.SCRIPT, [*common, "--path", "chunked", "--chunk-size", "32"], timeout_s=300)
    assert "error" not in plain and "error" not in chunked, (plain, chunked)
    # two float32 paths: a 32000-way softmax per token, then sums over the 128 tokens
    assert_close_scaled(chunked["loss"], plain["loss"], terms=32000 + 128, msg="loss")
    assert_close_scaled(chunked["grad_norm"], plain["grad_norm"], terms=32000 + 128, msg="gradient norm")
    # plain holds several [256, 32000] float32 buffers (31 MiB each); chunked a few [32, V] ones
    assert plain["peak_mib"] > 60
    assert chunked["peak_mib"] < 0.5 * plain["peak_mib"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_gpu_check_skips_without_cuda(capsys):
    assert gpu_check.main([]) == 0
    assert "SKIP: CUDA is not available" in capsys.readouterr().out


def test_gpu_check_flop_count_scales_with_batch_and_tokens():
    shape = gpu_check.QWEN25_05B
    one = gpu_check.step_flops(shape, 358_000_000, 1, 1280, 1408, 1024)
    assert gpu_check.step_flops(shape, 358_000_000, 8, 1280, 1408, 1024) == pytest.approx(8 * one)
    # student fwd+bwd (2 passes' worth) + teacher fwd > 3 x 2 N x student tokens
    assert one > 3 * 2 * 358_000_000 * 1280


def test_step_cost_token_counts_follow_the_enabled_components():
    from types import SimpleNamespace

    from unisd_core.config import TrainConfig
    from unisd_core.presets import UNISD_STAR

    example = SimpleNamespace(student_prompt_ids=[1] * 10, teacher_prompt_ids=[1] * 20,
                              negative_prompt_ids=[1] * 25, context_prompt_ids=([1] * 30, [1] * 31, [1] * 32))
    completions = [[2] * 5]
    empty = step_cost.token_counts(TrainConfig(model="tiny-qwen2"), [example], completions)
    assert empty == {"student": 15, "teacher_side": 25}
    star = step_cost.token_counts(TrainConfig(model="tiny-qwen2", components=UNISD_STAR), [example], completions)
    assert star == {"student": 15, "teacher_side": 25 + 30 + (35 + 36 + 37)}


def test_step_cost_negative_has_a_wrong_letter():
    from unisd_core.data.datasets import load_records

    record = load_records("cose", "train")[0]
    wrong = step_cost.wrong_demonstration(record)
    assert wrong.splitlines()[-1] != record.demonstration.strip().splitlines()[-1]
    assert wrong.splitlines()[-1].startswith("Answer: ")
    assert wrong.splitlines()[:-1] == record.demonstration.rstrip().splitlines()[:-1]


def test_orchestration_figures():
    result = {"slots": 2, "wall_s": 100.0, "work_s": 160.0, "jobs": 4, "startup_s": 10.0}
    metrics = orchestration.grid_metrics(result)
    assert metrics["efficiency"] == pytest.approx(0.8)
    assert metrics["overhead_per_job_s"] == pytest.approx((200 - 160) / 4)
    assert metrics["overhead_per_job_after_start_s"] == pytest.approx((180 - 160) / 4)
    fixed, per_job = orchestration.fit_overheads([(2, 12.0, 2), (8, 18.0, 2), (16, 26.0, 2)])
    assert (fixed, per_job) == (pytest.approx(10.0), pytest.approx(2.0))
    assert orchestration.fit_overheads([(8, 1.0, 2), (8, 2.0, 2)]) is None
    assert orchestration.modelled_efficiency(0.0, 0.0, 10, 60.0, 2) == pytest.approx(1.0)


def test_table_renders_every_row():
    text = table(["a", "b"], [[1, 0.5], ["x", "y"]])
    assert text.splitlines()[0] == "| a | b |" and len(text.splitlines()) == 4


def test_step_cost_padded_counts_follow_the_loop_grouping():
    from types import SimpleNamespace

    from unisd_core.config import TrainConfig
    from unisd_core.presets import component_subset

    short = SimpleNamespace(student_prompt_ids=[1] * 4, teacher_prompt_ids=[1] * 6, negative_prompt_ids=None,
                            context_prompt_ids=([1] * 20, [1] * 20, [1] * 20))
    long = SimpleNamespace(student_prompt_ids=[1] * 8, teacher_prompt_ids=[1] * 10, negative_prompt_ids=None,
                           context_prompt_ids=([1] * 30, [1] * 30, [1] * 30))
    completions = [[2] * 2, [2] * 2]
    empty = step_cost.padded_token_counts(TrainConfig(model="tiny-qwen2", per_device_batch=2),
                                          [short, long], completions)
    assert empty == {"student_padded": 2 * 10, "teacher_side_padded": 2 * 12}
    # teacher = frozen base: teacher rows share one pass with the 6 context rows, padded to 32
    agreement = TrainConfig(model="tiny-qwen2", per_device_batch=2, components=component_subset(["agreement"]))
    assert step_cost.padded_token_counts(agreement, [short, long], completions)["teacher_side_padded"] == 8 * 32
    # EMA teacher: its pass is apart from the contexts' pass
    both = TrainConfig(model="tiny-qwen2", per_device_batch=2,
                       components=component_subset(["agreement", "ema"]))
    assert step_cost.padded_token_counts(both, [short, long], completions)["teacher_side_padded"] == 2 * 12 + 6 * 32


def test_step_cost_pass_shapes_split_by_weights():
    from types import SimpleNamespace

    from unisd_core.config import TrainConfig
    from unisd_core.presets import UNISD_STAR

    example = SimpleNamespace(student_prompt_ids=[1] * 4, teacher_prompt_ids=[1] * 6, negative_prompt_ids=[1] * 7,
                              context_prompt_ids=([1] * 20, [1] * 21, [1] * 22))
    completions = [[2] * 2]
    empty = step_cost.pass_shapes(TrainConfig(model="tiny-qwen2"), [example], completions)
    assert empty == [step_cost.PassShape("student", (6,)), step_cost.PassShape("base", (8,))]
    star = step_cost.pass_shapes(TrainConfig(model="tiny-qwen2", components=UNISD_STAR), [example], completions)
    # EMA teacher + bad teacher with the adapter's weights; the contexts with the frozen base's
    assert star == [step_cost.PassShape("student", (6,)), step_cost.PassShape("adapter", (8, 9)),
                    step_cost.PassShape("base", (22, 23, 24))]
    assert star[2].padded == 3 * 24


def test_step_cost_length_aware_prediction_prices_each_row_at_its_length():
    curves = {"student": [(10, 1.0), (30, 3.0)], "base": [(10, 0.5), (30, 1.5)], "adapter": [(10, 0.0), (30, 0.0)]}
    assert step_cost.interpolate(curves["student"], 20) == pytest.approx(2.0)
    assert step_cost.interpolate(curves["student"], 5) == 1.0 and step_cost.interpolate(curves["student"], 99) == 3.0
    shapes = [step_cost.PassShape("student", (10,)), step_cost.PassShape("base", (10, 30))]
    real, padded = step_cost.predict(shapes, curves)
    assert real == pytest.approx(10 * 1.0 + 10 * 0.5 + 30 * 1.5)
    assert padded == pytest.approx(10 * 1.0 + 2 * 30 * 1.5)  # the short row padded to 30
    grid = step_cost.length_grid(shapes, points=3)
    assert grid[0] == 10 and grid[-1] == 30 and len(grid) == 3
