"""Shared command-line handling: `--preset NAME`, dotted `key=value` overrides, `--print-config`, and the config's
keys in `--help`.

Every config-driven command (`alarm generate`, `train`, `serve`, `eval`, `config`, `embed`, `cluster render`)
parses the same way, so a user learns it once. Imports nothing heavy: `--help` and `--print-config` are instant.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TypeVar

from pydantic import BaseModel

from alarm.config import ConfigError, dump_config, load_config, preset_names
from alarm.config.keys import Key, config_keys

C = TypeVar("C", bound=BaseModel)


def add_config_args(parser: argparse.ArgumentParser, section: str, default_preset: str | None,
                    schema: type[BaseModel]) -> None:
    """--preset (unless `default_preset` is None: the command has no presets), the overrides, --print-config, and
    every key of `schema` with its type, default and description in the help's epilog."""
    if default_preset is not None:
        parser.add_argument(
            "--preset", default=default_preset,
            help=f"named preset ({', '.join(preset_names(section))}) or a .yaml path (default: {default_preset})",
        )
    else:
        parser.set_defaults(preset=None)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, values in YAML")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n\n".join(filter(None, [parser.epilog, key_help(schema, default_preset)]))


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


def key_help(schema: type[BaseModel], preset: str | None = None, width: int = 110) -> str:
    """The keys of `schema` grouped by top-level section: `key  type = default` and the description below."""
    seen = f"; --print-config shows what --preset {preset} sets" if preset else ""
    lines = [f"config keys (key=value, the value in YAML; N = a list index, <a|b> = a map key; the defaults are "
             f"the schema's{seen}):"]
    group = None
    keys = config_keys(schema)
    for k in [k for k in keys if "." not in k.key] + [k for k in keys if "." in k.key]:
        top = k.key.split(".")[0] if "." in k.key else "top level"
        if top != group:
            field = schema.model_fields.get(top)
            about = f" {field.description}" if field is not None and field.description else ""
            lines += [""] + textwrap.wrap(f"{top}:{about}", width=width, subsequent_indent="    ")
            group = top
        lines.append(f"  {_head(k)}")
        if k.description:
            lines += textwrap.wrap(k.description, width=width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def _head(k: Key) -> str:
    when = f"  (when {k.when})" if k.when else ""
    return f"{k.key}  {k.type} = {k.default}{when}"
