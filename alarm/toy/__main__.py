"""`python -m alarm.toy`: the ALARM method end to end in miniature, on a CPU, with no model hub.

    python -m alarm.toy                      # world seed 0, the full loop (out: runs/toy); rerun to resume
    python -m alarm.toy --seeds 3            # seeds 0, 1, 2: mean and worst per question type, 95% intervals
    python -m alarm.toy --seed 4 --size small
    python -m alarm.toy --train-per-type 300 --epochs 6   # twice the training questions, half the passes
    python -m alarm.toy --train-type count=225            # one type's own number of training questions
    python -m alarm.toy --numerics native    # the CPU's own kernels (default portable: the same bytes on any
                                             # Intel x86-64 CPU with AVX2, `alarm.numerics`)

Per world seed (the clips, the questions and the teacher's data all follow it), each stage the real command's
code path on the `toy` presets:
1. teacher   a tiny Qwen3 trained on text only (`tiny://qwen3-teacher` for seed 0, cached after the first build);
             `pretrained://whisper-tiny.en`, the real Whisper tiny.en encoder (converted once).
2. data      the training questions of every type (8 types, `alarm.toy.world.train_items`: the clips in
             order until the rarest type has its share), and a held-out MMAU-format benchmark with the
             same number of questions of every type, each on its own clip.
3. generate  `alarm.generate`: R0 from the descriptions, then self-rephrasing (R); and R0 alone (the ablation).
4. train     `alarm.train` on R and on R0; the second run reads the encoder states the first cached on disk.
5. eval      the held-out questions, audio only, through one in-process serving pipeline: R at thinking budgets
             256, 64 and 0, R0 at 256; the teacher reading the descriptions (text only, the upper bound) at the
             same time; then the text-only prompts again on a pipeline without the adapters (identical answers).

Writes report.md / report.json into --out (one result.json per seed under seed-N/) and prints the report; exits 2
when a target is missed (`alarm.toy.report.TARGETS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from alarm.errors import AlarmError
from alarm.toy.report import render
from alarm.toy.world import QTYPES
from services.toy import SIZES, run, use_portable_numerics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alarm.toy", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/toy", help="output folder (rerun with the same one to resume)")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--seed", type=int, default=0, help="the (first) world seed: clips, questions, teacher data")
    p.add_argument("--seeds", type=int, default=1, help="how many world seeds, from --seed on")
    p.add_argument("--train-per-type", type=int, default=None, metavar="N",
                   help="training questions of every type, the size's own per-type numbers included (default: the "
                        "size's; full 150, small 36)")
    p.add_argument("--train-type", action="append", default=[], metavar="TYPE=N",
                   help="training questions of one question type (repeat for more types); every other type keeps "
                        "--train-per-type's number")
    p.add_argument("--epochs", type=float, default=None, help="passes over the corpus for each adapter (default: "
                                                               "the size's; full 12, small 6)")
    p.add_argument("--teacher", default=None, help="the frozen LLM for every seed (default: the toy teacher built "
                                                   "for each seed)")
    p.add_argument("--numerics", choices=("portable", "native"), default="portable",
                   help="portable (default): torch, MKL, oneDNN and vLLM on their AVX2 kernels and fixed threads, so "
                        "any Intel x86-64 CPU with AVX2 gives the same bytes (another vendor's CPU: its own, the same "
                        "run after run); native: the CPU's own kernels (faster, but another CPU gives other teachers "
                        "and adapters)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.seed < 0:
        p.error(f"--seeds must be >= 1 and --seed >= 0, found {args.seeds} and {args.seed}")
    if args.train_per_type is not None and args.train_per_type < 1:
        p.error(f"--train-per-type must be >= 1, found {args.train_per_type}")
    if args.epochs is not None and not 0 < args.epochs < float("inf"):
        p.error(f"--epochs must be a number > 0, found {args.epochs}")
    own = {}
    for given in args.train_type:
        qtype, _, n = given.partition("=")
        if qtype not in QTYPES or not n.isdigit() or int(n) < 1:
            p.error(f"--train-type takes TYPE=N with TYPE one of {', '.join(QTYPES)} and N >= 1, found {given!r}")
        own[qtype] = int(n)
    size = SIZES[args.size]
    if args.train_per_type is not None:
        size = dataclasses.replace(size, train_per_type=args.train_per_type, train_types=())
    if own:  # a type given the number every type has is no type of its own (size.json records the same size)
        merged = {**dict(size.train_types), **own}
        size = dataclasses.replace(size, train_types=tuple((q, n) for q, n in merged.items()
                                                           if n != size.train_per_type))
    if args.epochs is not None:
        size = dataclasses.replace(size, epochs=args.epochs)
    if args.numerics == "portable":
        use_portable_numerics()
    try:
        summary = run(Path(args.out), size, range(args.seed, args.seed + args.seeds), args.teacher)
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(render(summary))
    return 0 if summary["targets_met"] else 2



if __name__ == "__main__":
    sys.exit(main())
