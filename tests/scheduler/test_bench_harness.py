"""The benchmark's own arithmetic, on a tiny seeded run (figures are measured by the benchmark, not here)."""

from __future__ import annotations

import pytest

from bench.scheduler import agents_used_ratio, generate, run_one, zone_skew


def test_generator_is_seeded() -> None:
    a, b = generate(300, 30, seed=3, uniform=False), generate(300, 30, seed=3, uniform=False)
    assert a.tasks == b.tasks
    assert len(a.tasks) == 300 and len(a.agents) == 30


def test_lower_bound_is_the_largest_dimension() -> None:
    w = generate(200, 100, seed=1, uniform=True)
    everything_on_one = {t.task_id: "i-00000000" for t in w.tasks}
    ratio, used, bound = agents_used_ratio(w, everything_on_one)
    assert used == 1
    assert ratio == pytest.approx(1 / bound)


@pytest.mark.parametrize("algorithm", ["engine", "first-fit"])
def test_small_run_places_everything_and_reports_figures(algorithm: str) -> None:
    uniform = run_one(algorithm, True, 400, 100, 5)
    mixed = run_one(algorithm, False, 400, 100, 5, batch=100 if algorithm == "engine" else 0)
    assert uniform["placed"] == 400 and mixed["placed"] == 400
    assert uniform["agents_used"] >= uniform["agents_lower_bound"]
    assert mixed["zone_skew"] >= 0 and mixed["peak_rss_mb"] > 0


def test_engine_keeps_zone_balanced_jobs_balanced() -> None:
    w = generate(600, 90, seed=9, uniform=False)
    reply = run_one("engine", False, 600, 90, 9)
    assert reply["zone_skew"] <= 1
    assert zone_skew(w, {}) == (0, 0)
