"""`python -m alarm.config [--preset NAME] [key=value ...]`: validate a model config and print it resolved."""

from __future__ import annotations

import argparse

from alarm.cli import add_config_args, config_from_args
from alarm.config.model import ModelConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.config", description=__doc__.split("\n")[0])
    add_config_args(parser, "model", "tiny", ModelConfig)
    args = parser.parse_args(argv)
    args.print_config = True
    config_from_args(args, ModelConfig, "model")


if __name__ == "__main__":
    main()
