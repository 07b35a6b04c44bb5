"""Layering, read statically from every import statement (inside functions too) of alarm/ and services/:

- alarm/, less the command entry points below, never imports services, ray, vllm or grpc;
- services/ never imports a command module;
- no import cycle among the project's modules;

and checked at run time: the alarm core imports with those packages blocked, alarm.config without torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("alarm", "services")
# Commands that run on the services (they may import services, ray, vllm, grpc).
ENTRY_POINTS = {"alarm.generate", "alarm.train", "alarm.serve", "alarm.client", "alarm.cluster",
                "alarm.eval.__main__", "alarm.toy.__main__"}
# Every command module: services/ never imports one (commands sit on top of both packages).
COMMANDS = ENTRY_POINTS | {"alarm.__main__", "alarm.config.__main__", "alarm.embed", "alarm.pretrained",
                           "alarm.tiny.__main__"}
BLOCKED = ("services", "ray", "vllm", "grpc")


@cache
def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the project's packages (a package is its __init__)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "_proto" in path.parts:  # generated stubs
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """Every node under `node`, except the bodies of `if TYPE_CHECKING:` (they never run)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            for sub in child.orelse:
                yield sub
                yield from _walk(sub)
            continue
        yield child
        yield from _walk(child)


@cache
def imports(name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement of module `name`, at any depth; `from a import b`
    names a.b when that is a module of ours, else a; relative imports are resolved."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in modules() else base))
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_static_reader_sees_imports_inside_functions_and_skips_type_checking(tmp_path, monkeypatch):
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ray\nelse:\n    import json\n"
           "def f():\n    from services.toy import run\n    from . import keys\n")
    (tmp_path / "alarm" / "config").mkdir(parents=True)
    for f in ("alarm/__init__.py", "alarm/config/__init__.py", "alarm/config/keys.py"):
        (tmp_path / f).write_text("")
    (tmp_path / "alarm/config/x.py").write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    modules.cache_clear()
    imports.cache_clear()
    try:
        assert [m for _, m in imports("alarm.config.x")] == ["typing", "json", "services.toy", "alarm.config.keys"]
    finally:
        modules.cache_clear()
        imports.cache_clear()


def test_alarm_core_never_imports_services_ray_vllm_or_grpc():
    bad = [f"{name} line {line}: imports {mod}" for name in modules() if _top(name) == "alarm"
           and name not in ENTRY_POINTS for line, mod in imports(name) if _top(mod) in BLOCKED]
    assert not bad, "alarm/ is the pure library (commands: ENTRY_POINTS):\n" + "\n".join(bad)


def test_services_never_import_commands():
    bad = [f"{name} line {line}: imports {mod}" for name in modules() if _top(name) == "services"
           for line, mod in imports(name) if mod in COMMANDS]
    assert not bad, "\n".join(bad)


def test_every_listed_command_exists():
    assert COMMANDS <= set(modules())


def import_cycles() -> list[tuple[set[str], list[str]]]:
    """The strongly connected components of the import graph (more than one module each), each with one cycle's
    path through it: `a -> b -> ... -> a`."""
    graph = {name: sorted({m for _, m in imports(name) if m in modules() and m != name}) for name in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while not comp or w != v:
                w = stack.pop()
                comp.add(w)
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [(c, _cycle_in(graph, c)) for c in comps]


def _cycle_in(graph: dict[str, list[str]], comp: set[str]) -> list[str]:
    start = min(comp)
    paths = {start: [start]}
    todo = [start]
    while todo:  # breadth first inside the component, back to start
        v = todo.pop(0)
        for w in graph[v]:
            if w == start:
                return [*paths[v], start]
            if w in comp and w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(comp)


def test_no_import_cycle_among_the_projects_modules():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(path) for _, path in cycles)


def test_the_cycle_finder_reports_a_path(monkeypatch):
    fake = {"a": [(1, "b")], "b": [(2, "c")], "c": [(3, "a"), (4, "d")], "d": []}
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: dict.fromkeys(fake))
    monkeypatch.setattr(sys.modules[__name__], "imports", lambda name: fake[name])
    assert import_cycles() == [({"a", "b", "c"}, ["a", "b", "c", "a"])]


def core_modules() -> list[str]:
    return [n for n in modules() if _top(n) == "alarm" and n not in ENTRY_POINTS]


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


@pytest.mark.parametrize("module", ["alarm.config", "alarm.cli", "alarm.__main__"])
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


def test_alarm_init_is_empty():
    assert (ROOT / "alarm" / "__init__.py").read_text().strip() == ""
