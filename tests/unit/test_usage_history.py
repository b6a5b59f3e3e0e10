"""A task's usage over time (Task.record_usage) and its drawing (master/ui/charts.py): pure, no I/O."""

from __future__ import annotations

from master.core import states
from master.core.entities import USAGE_SAMPLE_MS, USAGE_SAMPLES, Task
from master.core.states import Status, StatusMachine
from master.ui.charts import HEIGHT, WIDTH, polyline, usage_charts


def _task() -> Task:
    machine = StatusMachine(states.TASK_TRANSITIONS, Status(states.ACCEPTED, "normal", "", 0))
    return Task("t1", "j1", 0, machine)


def test_samples_are_kept_at_most_one_per_period_and_bounded() -> None:
    task = _task()
    for second in range(0, 20):  # a report a second, as agents send them
        task.record_usage(second * 1000, float(second), 10.0 + second, 2)
    assert [s[0] for s in task.usage_history] == [0, 5000, 10000, 15000]
    assert task.usage == {"cpuPct": 19.0, "rssMB": 29.0, "processes": 2, "timestamp": 19000}
    for n in range(USAGE_SAMPLES + 10):
        task.record_usage(20_000 + n * USAGE_SAMPLE_MS, 1.0, 1.0, 1)
    assert len(task.usage_history) == USAGE_SAMPLES
    assert task.usage_history[-1][0] == 20_000 + (USAGE_SAMPLES + 9) * USAGE_SAMPLE_MS


def test_the_polyline_spans_the_box_with_zero_at_the_bottom_and_the_peak_at_the_top() -> None:
    points = [tuple(map(float, p.split(","))) for p in polyline([0.0, 5.0, 10.0]).split()]
    assert points == [(0.0, float(HEIGHT)), (WIDTH / 2, HEIGHT / 2), (float(WIDTH), 0.0)]
    assert polyline([]) == ""
    assert polyline([3.0]) == f"0,0.0 {WIDTH},0.0"  # one sample: a flat line at its own peak
    assert polyline([0.0, 0.0]) == f"0.0,{HEIGHT:.1f} {WIDTH:.1f},{HEIGHT:.1f}"  # all idle: the bottom


def test_usage_charts_say_last_and_peak() -> None:
    cpu, rss, procs = usage_charts([(0, 50.0, 100.0, 3), (5000, 25.0, 120.0, 4)])
    assert (cpu.title, cpu.last, cpu.peak, cpu.samples) == ("CPU %", 25.0, 50.0, 2)
    assert (rss.last, rss.peak) == (120.0, 120.0) and (procs.last, procs.peak) == (4.0, 4.0)
    assert usage_charts([]) == []
