"""`python -m alarm.toy`: the ALARM method end to end in miniature, on a CPU, with no model hub.

    python -m alarm.toy                        # the full loop (out: runs/toy); rerun to resume
    python -m alarm.toy --size small           # the smaller loop the slow test runs

Stages, each the real command's code path on the `toy` presets:
1. teacher   `tiny://qwen3-teacher`: a tiny Qwen3 trained on text only (cached after the first build);
             `pretrained://whisper-tiny.en`: the real Whisper tiny.en encoder (converted once).
2. data      synthetic clips of 8 sound kinds with a 4-way question each: a training manifest for the corpus,
             held-out clips as an MMAU-format benchmark.
3. generate  `alarm.generate`: the teacher answers from each clip's description (R0), then rephrases R0 as heard.
4. train     `alarm.train`: the audio adapter learns to make the frozen teacher give those answers from audio.
5. eval      `alarm.eval`: the held-out questions, audio only; and the teacher reading the descriptions instead
             (the upper bound), through the same in-process serving pipeline.

Writes report.md / report.json into --out and prints the report: audio-only accuracy vs chance vs the teacher with
the text, the leak rate of the targets before and after rephrasing, and the time per stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alarm.errors import AlarmError
from alarm.toy.report import render
from services.toy import SIZES, TEACHER, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alarm.toy", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/toy", help="output folder (rerun with the same one to resume)")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--teacher", default=TEACHER, help="the frozen LLM (a Qwen3 checkpoint location)")
    args = p.parse_args(argv)
    try:
        report = run(Path(args.out), SIZES[args.size], args.teacher)
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(render(report))
    return 0 if report["targets_met"] else 2


if __name__ == "__main__":
    sys.exit(main())
