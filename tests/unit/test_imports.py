"""Layering: the alarm core imports without ray/vllm/grpc/services; services never import alarm commands."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"alarm.generate", "alarm.train", "alarm.serve", "alarm.client", "alarm.cluster", "alarm.eval.__main__"}
BLOCKED = ("ray", "vllm", "grpc", "services")


def core_modules() -> list[str]:
    mods = []
    for path in sorted((ROOT / "alarm").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name not in COMMANDS:
            mods.append(name)
    return mods


def test_core_imports_without_ray_vllm_grpc():
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {core_modules()!r}:
    importlib.import_module(m)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("module", ["alarm.config", "alarm.cli"])
def test_config_imports_without_torch(module):
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'transformers'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
import {module}
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]


def test_services_never_import_alarm_commands():
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if n in COMMANDS]
            assert not bad, f"{path} imports command module(s) {bad}"


def test_alarm_init_is_empty():
    assert (ROOT / "alarm" / "__init__.py").read_text().strip() == ""
