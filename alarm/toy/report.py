"""The toy world's report: its targets and the text `python -m alarm.toy` prints and writes to report.md."""

from __future__ import annotations

TARGETS = {"audio_vs_teacher": 0.9, "leak_after": 0.01}


def render(r: dict) -> str:
    a, leak = r["accuracy"], r["corpus"]["leak_rate"]
    ok = "met" if r["targets_met"] else "NOT met"
    lines = [
        "# ALARM toy world",
        "",
        f"{r['size']['train_clips']} training clips -> {r['corpus']['kept']} corpus rows kept of {r['corpus']['rows']}; "
        f"{r['train']['steps']} adapter steps (loss {r['train']['first_loss']:.3f} -> {r['train']['last_loss']:.3f}); "
        f"{r['size']['eval_clips']} held-out clips, 4 options each.",
        "",
        "| held-out multiple choice | accuracy | answers parsed |",
        "|---|---|---|",
        f"| trained model, audio only | {a['audio']:.1%} | {r['parse_ok']['audio']:.1%} |",
        f"| teacher reading the description (upper bound) | {a['teacher_text']:.1%} | "
        f"{r['parse_ok']['teacher_text']:.1%} |",
        f"| chance | {a['chance']:.1%} | |",
        "",
        "Audio only, per sound kind: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["audio_per_kind"].items())) + ".",
        "",
        f"Audio-only accuracy is {a['audio_vs_teacher']:.1%} of the teacher's (target >= "
        f"{r['targets']['audio_vs_teacher']:.0%})." if a["audio_vs_teacher"] is not None else
        "The teacher answered nothing correctly: no ratio.",
        f"Leak rate of the targets: {leak['generated']:.1%} before rephrasing (R0), {leak['rephrased']:.1%} after "
        f"(R; target <= {r['targets']['leak_after']:.0%}).",
        "",
        "| stage (this invocation; a resumed stage only checks) | seconds |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in r["seconds"].items()),
        f"| total | {r['total_s']:.1f} |",
        "",
        f"Targets {ok}.",
    ]
    return "\n".join(lines)
