"""The figures a node-loss drill reports (services.drills), from a timeline written by hand: what bench/scale.py
prints and docs/deploy.md quotes must mean what they say."""

from __future__ import annotations

import json
import time

import pytest

from alarm.progress import Progress
from services.drills import Timeline, figures, last_step, rows_committed, worker_nodes


def drill() -> Timeline:
    """Submitted at 0; a worker node at 10, a second at 15; first rows at 20; a node killed at 30 (gone at 31,
    replaced at 45; its engine back at 50); the job ends at 60; the nodes are gone at 100."""
    t = Timeline()
    t.series = {
        "nodes/gpu": [(0, 0), (5, 0), (10, 1), (15, 2), (31, 1), (45, 2), (70, 1), (100, 0)],
        "nodes/cpu": [(0, 0), (100, 0)],
        "progress/rows": [(5, 0), (20, 4), (29, 8), (40, 8), (55, 24)],
        "actors/engines": [(12, 1), (16, 2), (31, 1), (50, 2), (62, 0)],
    }
    t.events = [{"t": 0, "event": "submit"}, {"t": 30, "event": "node killed"}, {"t": 60, "event": "job end"}]
    return t


def test_the_figures_of_a_drill():
    assert figures(drill(), "progress/rows", "actors/engines") == {
        "scale_up_s": 10, "first_progress_s": 20, "node_replaced_s": 15, "recovered_s": 20, "scale_down_s": 40}


def test_without_an_actor_series_recovery_is_progress_past_its_value_at_the_kill():
    assert figures(drill(), "progress/rows")["recovered_s"] == 25  # 8 rows at the kill, 24 at 55


def test_what_did_not_happen_is_none_not_zero():
    t = drill()
    t.series["nodes/gpu"] = [(0, 0), (10, 1), (15, 2), (31, 1)]  # never replaced, never scaled down
    out = figures(t, "progress/rows", "actors/engines")
    assert out["node_replaced_s"] is None and out["scale_down_s"] is None


def test_timeline_lookups():
    t = drill()
    assert t.value_at("nodes/gpu", 32) == 1 and t.value_at("nodes/gpu", -1) is None
    assert t.first("progress/rows", lambda v: v > 4, after=0) == 29
    assert worker_nodes(t, 46) == 2 and t.at("node killed") == 30 and t.at("nothing") is None
    assert json.loads(json.dumps(t.to_json()))["events"][1]["event"] == "node killed"


def _line(step: int) -> str:
    """Rank 0's progress line as the trainer prints it (the same Progress the monitor uses)."""
    return Progress("train", 10, 0, unit="steps").line(step, "epoch 0 loss 2.0000")


@pytest.mark.parametrize("logs, step", [
    (f"{_line(1)}\n{_line(2)}\n", 2),
    (f"(RayTrainWorker pid=31, ip=10.0.0.2) {_line(1)}\n(RayTrainWorker pid=31, ip=10.0.0.2) {_line(3)}\n"
     "the first train 7/10 (70%) of a sentence\nvalidation step 9: loss 1.0\n", 3),  # a job's log: worker lines
    (f"\x1b[36m(RayTrainWorker pid=31)\x1b[0m {_line(4)}\n", 4),  # and coloured
    ("nothing yet\n", None),
])
def test_last_step_reads_rank_zeros_lines(logs, step):
    assert last_step(logs) == step


def test_rows_committed_reads_the_index(tmp_path):
    assert rows_committed(tmp_path) is None
    (tmp_path / "manifest.json").write_text('{"rows": 12}')
    assert rows_committed(tmp_path) == 12
    (tmp_path / "manifest.json").write_text('{"ro')  # being rewritten: no sample, not a failed drill
    assert rows_committed(tmp_path) is None


def test_sampler_records_the_state_it_exits_on(monkeypatch):
    """A block that waits for no worker node ends on that state: the sampler's last sample is taken on exit, so the
    scale-down figure never depends on where the sampling period fell (it read None for one scenario)."""
    from services import drills
    from services.cluster import Nodes

    workers = iter([1, 0])
    monkeypatch.setattr(drills, "nodes", lambda gcs: Nodes({"gpu": next(workers), "ray.head.default": 1}, {}, {}))
    t = Timeline()
    with drills.Sampler(t, "gcs", {}, every_s=3600):  # one sample on entry, then none until the exit
        t.event("job end")
        deadline = time.monotonic() + 10
        while not t.series.get("nodes/gpu") and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [v for _, v in t.series["nodes/gpu"]] == [1, 0]
    assert figures(t, "progress/rows")["scale_down_s"] is not None
