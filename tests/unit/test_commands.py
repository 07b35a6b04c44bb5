"""The `alarm` console script (alarm/__main__.py) and the config keys every config-driven command's --help lists."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from alarm.__main__ import COMMANDS, command_module, main
from alarm.cli import key_help
from alarm.config import ClusterConfig, CorpusConfig, EvalConfig, ModelConfig, ServeConfig, TrainConfig
from alarm.config.keys import config_keys

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, about) in COMMANDS.items():
        assert f"  {name} " in out and about in out
    assert main([]) == 2 and "usage: alarm <command>" in capsys.readouterr().err
    assert main(["genrate"]) == 2 and "unknown command 'genrate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_runs_the_main_of_its_python_m_form(name):
    assert callable(importlib.import_module(command_module(name)).main)


def test_the_console_form_and_the_python_m_form_agree():
    console = run("-m", "alarm", "config", "--preset", "al-whisper", "fusion.kind=sum")
    direct = run("-m", "alarm.config", "--preset", "al-whisper", "fusion.kind=sum")
    assert console.returncode == direct.returncode == 0 and console.stdout == direct.stdout
    bad = run("-m", "alarm", "config", "fusion.nope=1")
    assert bad.returncode == 2 and "valid keys under fusion" in bad.stderr


@pytest.mark.parametrize("argv, schema", [
    (["generate"], CorpusConfig), (["train"], TrainConfig), (["serve"], ServeConfig), (["eval"], EvalConfig),
    (["config"], ModelConfig), (["embed"], ModelConfig), (["cluster", "render"], ClusterConfig),
])
def test_help_lists_the_config_keys_with_their_descriptions(argv, schema, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert key_help(schema).splitlines()[2] in out  # the table itself, generated from the schema
    keys = config_keys(schema)
    assert len(keys) > 5
    for k in keys:
        assert f"  {k.key}  {k.type} = {k.default}" in out
        if k.description:
            assert k.description.split()[0] in out


def test_key_table_shows_types_defaults_and_union_members():
    text = key_help(TrainConfig, "tiny")
    assert "  ray.num_cpus  int|null = null" in text
    assert "  batch.window_batches  int = 16" in text and "bucketed and shuffled together" in text
    assert "  model.fusion.num_latents  int = 20  (when fusion.kind=perceiver)" in text
    assert "  model.encoders.<whisper|w2vbert|muq|sslam>.layers  list[int] = required" in text
    assert "--print-config shows what --preset tiny sets" in text
    corpus = key_help(CorpusConfig)
    assert "  sources.N.kind  synthetic|manifest|hf_dataset|parquet = required" in corpus
    assert "  sources.N.path  str = required  (when sources.N.kind=manifest)" in corpus
