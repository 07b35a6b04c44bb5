"""Shared command-line handling: `--preset NAME`, dotted `key=value` overrides, `--print-config`.

Every command (`alarm.generate`, `alarm.train`, `alarm.serve`, `alarm.config`) parses the same way, so a user
learns it once. Imports nothing heavy: `--help` and `--print-config` are instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from pydantic import BaseModel

from alarm.config import ConfigError, dump_config, load_config, preset_names

C = TypeVar("C", bound=BaseModel)


def add_config_args(parser: argparse.ArgumentParser, section: str, default_preset: str) -> None:
    parser.add_argument(
        "--preset", default=default_preset,
        help=f"named preset ({', '.join(preset_names(section))}) or a .yaml path (default: {default_preset})",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, values in YAML")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


def config_from_args(args: argparse.Namespace, cls: type[C], section: str) -> C:
    """Validate the preset + overrides; on error print the message and exit 2 (argparse's usage-error code)."""
    try:
        cfg = load_config(cls, args.preset, args.overrides, section=section)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        raise SystemExit(0)
    return cfg
