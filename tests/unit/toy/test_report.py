"""The toy loop's report text."""

from alarm.toy.report import TARGETS, render


def test_report_names_every_figure_and_whether_the_targets_are_met():
    report = {
        "size": {"train_clips": 400, "eval_clips": 96, "epochs": 10}, "corpus": {"rows": 400, "kept": 398,
                                                       "leak_rate": {"generated": 1.0, "rephrased": 0.0}},
        "train": {"steps": 450, "first_loss": 2.5, "last_loss": 0.04},
        "accuracy": {"audio": 0.8125, "teacher_text": 1.0, "chance": 0.25, "audio_vs_teacher": 0.8125},
        "parse_ok": {"audio": 0.927, "teacher_text": 1.0}, "audio_per_kind": {"tone": 0.5, "clicks": 1.0},
        "seconds": {"teacher + encoder": 227.9, "generate": 196.7}, "total_s": 424.6,
        "targets": TARGETS, "targets_met": False,
    }
    text = render(report)
    for needle in ("| trained model, audio only | 81.2% | 92.7% |", "| chance | 25.0% | |",
                   "teacher reading the description (upper bound) | 100.0%", "81.2% of the teacher's (target >= 90%)",
                   "100.0% before rephrasing (R0), 0.0% after", "clicks 100%, tone 50%", "| generate | 196.7 |",
                   "| total | 424.6 |", "Targets NOT met."):
        assert needle in text, needle
    assert "Targets met." in render({**report, "targets_met": True})
