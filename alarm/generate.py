"""`python -m alarm.generate [--preset NAME] [key=value ...]`: generate (or resume) an ALARM corpus on Ray.

    python -m alarm.generate                                  # tiny model, synthetic clips, local Ray
    ray job submit --working-dir . -- python -m alarm.generate --preset paper output=s3://bucket/corpora

Writes Parquet shards, manifest.json, stats.json and the resolved config.json to <output>/<run_id>; rerunning
with the same run_id resumes and writes every key exactly once.
"""

from __future__ import annotations

import argparse
import json
import sys

from alarm.cli import add_config_args, config_from_args
from alarm.config import CorpusConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.generate", description=__doc__.split("\n")[0])
    add_config_args(parser, "corpus", "tiny", CorpusConfig)
    cfg = config_from_args(parser.parse_args(argv), CorpusConfig, "corpus")

    from alarm.errors import AlarmError
    from services.corpus.pipeline import run

    try:
        stats = run(cfg)
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps({k: stats[k] for k in ("rows", "kept", "throughput") if k in stats}, indent=2))


if __name__ == "__main__":
    main()
