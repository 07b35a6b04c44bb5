"""`python -m alarm.embed AUDIO --prompt "..."`: audio + prompt -> the LLM prompt embeddings, with a summary.

Runs the whole model core in this process (decode, per-encoder front-ends, frozen encoders, adapter, fusion,
prompt assembly) and prints the layout; `--out FILE.safetensors` saves `prompt_embeds (S, D_llm)` for vLLM's
`{"prompt_embeds": ...}` input. With the tiny preset it is a quick check that an installation works.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from alarm.cli import add_config_args, config_from_args
from alarm.config import ModelConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.embed", description=__doc__.split("\n")[0])
    parser.add_argument("audio", help="audio file path or URI (wav/flac/ogg/mp3; s3:// and file:// work)")
    parser.add_argument("--prompt", default="What do you hear?")
    parser.add_argument("--system", default=None, help="system turn (default: the preset's system_prompt)")
    parser.add_argument("--adapter", default=None, help="trained adapter checkpoint (folder or s3://)")
    parser.add_argument("--out", default=None, help="save prompt_embeds to this .safetensors file")
    add_config_args(parser, "model", "tiny", ModelConfig)
    args = parser.parse_args(argv)
    cfg = config_from_args(args, ModelConfig, "model")

    from alarm.errors import AlarmError
    from alarm.model.alarm_model import summarize_prompt

    try:
        t0 = time.perf_counter()
        summary = summarize_prompt(cfg, args.audio, args.prompt, args.system, args.adapter, args.out)
    except AlarmError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    summary["wall_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
