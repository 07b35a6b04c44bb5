"""`alarm <command> ...` (the console script; also `python -m alarm <command>`): every command of the project.

    alarm generate --preset tiny              # = python -m alarm.generate --preset tiny
    alarm --help                              # the commands, one line each

Each command is the `main(argv)` its `python -m alarm.<command>` form runs, so both forms take the same arguments
(`ray job submit -- python -m alarm.generate ...` keeps working). Imports nothing but the chosen command.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

COMMANDS = {
    "generate": ("alarm.generate", "generate (or resume) a corpus on Ray Data with vLLM workers"),
    "train": ("alarm.train", "train the audio adapter on a corpus with Ray Train"),
    "serve": ("alarm.serve", "serve the model over gRPC with Ray Serve (or write its Serve config)"),
    "client": ("alarm.client", "ask a running server about a clip; --health checks readiness"),
    "eval": ("alarm.eval", "multiple-choice benchmarks (MMAU, MMAR, MMSU, AIR-Bench) through the serving path"),
    "embed": ("alarm.embed", "audio + prompt -> the LLM prompt embeddings, in this process"),
    "cluster": ("alarm.cluster", "render the KubeRay manifests from the presets"),
    "config": ("alarm.config", "validate a model config and print it resolved"),
    "tiny": ("alarm.tiny", "build the tiny checkpoints into $ALARM_CACHE"),
    "pretrained": ("alarm.pretrained", "convert the real Whisper tiny.en weights into $ALARM_CACHE"),
    "toy": ("alarm.toy", "the toy world end to end: teacher, corpus, adapter, held-out evaluation"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: alarm <command> [args ...]   (the same as: python -m alarm.<command> [args ...])", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "`alarm <command> --help`: the command's options and, for config-driven commands, every config "
              "key with its type, default and meaning."]
    return "\n".join(lines)


def command_module(name: str) -> str:
    """The module whose `main` the command runs: `module`, or `module.__main__` when it is a package."""
    module = COMMANDS[name][0]
    spec = importlib.util.find_spec(module)
    return f"{module}.__main__" if spec is not None and spec.submodule_search_locations is not None else module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}\n\n{usage()}",
              file=sys.stderr)
        return 2
    return importlib.import_module(command_module(argv[0])).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
