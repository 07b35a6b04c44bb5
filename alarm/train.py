"""`python -m alarm.train [--preset NAME] [key=value ...]`: train the audio adapter on a generated corpus with Ray Train.

    python -m alarm.train                                   # tiny model on runs/tiny-corpus -> runs/tiny-train
    ray job submit --working-dir . -- python -m alarm.train --preset paper corpus=s3://bucket/corpora/paper

Writes checkpoints (trainable weights, optimizer, scheduler, data position), metrics.jsonl, curves.png, the
resolved config.json and the final adapter (loadable for inference) under <output>/<run_id>; rerunning with the
same run_id resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from alarm.cli import add_config_args, config_from_args
from alarm.config import TrainConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.train", description=__doc__.split("\n")[0])
    add_config_args(parser, "train", "tiny", TrainConfig)
    cfg = config_from_args(parser.parse_args(argv), TrainConfig, "train")

    from alarm.errors import AlarmError
    from services.train.driver import run

    try:
        summary = run(cfg)
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
