"""The plain progress line: counts, percent, rate and ETA from a resumed start, durations."""

from alarm.progress import Progress, duration


def test_line_counts_rate_and_eta_from_where_the_run_resumed():
    now = [100.0]
    p = Progress("train", total=400, done=100, unit="steps", clock=lambda: now[0])
    assert p.line(100) == "train 100/400 (25%) - steps/s eta -"
    now[0] += 50.0
    assert p.line(200, "loss 1.2") == "train 200/400 (50%) 2 steps/s eta 1m40s loss 1.2"
    assert Progress("eval", None, clock=lambda: 0.0).line(3) == "eval 3 -/s"


def test_durations():
    assert [duration(s) for s in (0, 45, 325, 7260)] == ["0s", "45s", "5m25s", "2h01m"]
