"""Portable numerics (`alarm.numerics`): on Intel CPUs, the bytes a training run computes do not depend on the
CPU's vector units; on others, MKL's branch is the one `numerics.mkl_branch` says.

A second CPU is not at hand in a test, so an AVX2-only CPU is what MKL sees with
`MKL_ENABLE_INSTRUCTIONS=AVX2` (its documented switch for dispatching to a lower instruction set); torch's and
oneDNN's kernels are the AVX2 ones in portable mode on any CPU. Each run is its own process: the kernels are
chosen once per process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from alarm import numerics

TRAIN = """
import hashlib, sys
from alarm import numerics
if sys.argv[1] == "portable":
    numerics.make_portable()
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
# a convolution (oneDNN), attention, layer norms and GELU (ATen's vector kernels), matrix products (MKL)
conv = torch.nn.Conv1d(16, 64, 3, padding=1)
body = torch.nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
head = torch.nn.Linear(64, 500)
params = [*conv.parameters(), *body.parameters(), *head.parameters()]
opt = torch.optim.AdamW(params, 1e-3)
x, y = torch.randn(4, 16, 40), torch.randint(0, 500, (4, 40))
for _ in range(8):
    loss = torch.nn.functional.cross_entropy(head(body(conv(x).transpose(1, 2))).flatten(0, 1), y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
h = hashlib.sha256()
for p in params:
    h.update(p.detach().numpy().tobytes())
print(h.hexdigest(), torch.backends.cpu.get_cpu_capability())
"""


FLAGS = numerics.cpu_flags()
needs_avx2 = pytest.mark.skipif("avx2" not in FLAGS, reason="portable numerics pin x86-64 CPUs with AVX2")


def run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE and k != "MKL_ENABLE_INSTRUCTIONS"}
    return subprocess.run([sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)


def trained(mode: str, **env: str) -> tuple[str, str]:
    done = run(TRAIN, mode, **env)
    assert done.returncode == 0, done.stderr[-2000:]
    digest, capability = done.stdout.split()
    return digest, capability


@needs_avx2
def test_training_computes_the_same_bytes_on_an_avx2_cpu_in_portable_mode():
    here, capability = trained("portable")
    assert capability == "AVX2"
    if numerics.cpu_vendor() == "GenuineIntel":  # elsewhere MKL runs its AUTO branch: its own kernels (`mkl_branch`)
        assert trained("portable", MKL_ENABLE_INSTRUCTIONS="AVX2") == (here, "AVX2")
    assert trained("portable") == (here, "AVX2")  # and again here
    if "avx512f" in FLAGS:  # the CPU's own kernels sum in another order: what the mode exists to pin
        native, capability = trained("native")
        assert capability.startswith("AVX512") and native != here
        assert trained("native", MKL_ENABLE_INSTRUCTIONS="AVX2", ATEN_CPU_CAPABILITY="avx2")[0] != native


@needs_avx2
@pytest.mark.skipif("avx512f" not in FLAGS, reason="on an AVX2-only CPU torch's own kernels are the AVX2 ones")
def test_switching_after_torch_chose_its_kernels_is_refused():
    done = run("import os, torch; torch.ones(64).sum(); from alarm import numerics\n"
               "try:\n    numerics.make_portable()\nexcept RuntimeError as e:\n"
               "    print(e, not numerics.portable(), 'MKL_CBWR' in os.environ)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "call alarm.numerics.make_portable() before torch computes" in done.stdout
    assert done.stdout.strip().endswith("True False")  # the environment is left as it was


def test_the_mode_is_read_from_the_environment(monkeypatch):
    for k, v in numerics.PORTABLE.items():
        monkeypatch.setenv(k, v)
    assert numerics.portable() and numerics.describe()["numerics"].startswith("portable")
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # one of them otherwise: not portable
    assert not numerics.portable() and numerics.describe()["MKL_CBWR"] == "AUTO"


def test_mkl_pins_a_named_branch_on_intel_cpus_only(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert numerics.mkl_branch() == "off"
    cases = {("GenuineIntel", "AVX2,STRICT"): "AVX2", ("AuthenticAMD", "AVX2,STRICT"): "AUTO",
             ("AuthenticAMD", "BRANCH=COMPATIBLE,STRICT"): "COMPATIBLE", ("", "AVX2"): "AUTO",
             ("GenuineIntel", "branch=avx2"): "AVX2", ("GenuineIntel", "AVX512"): "AUTO",  # no avx512f here
             ("GenuineIntel", "FOO"): "AUTO", ("AuthenticAMD", "OFF"): "off", ("GenuineIntel", " "): "off",
             ("HygonGenuine", "AUTO"): "AUTO"}
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "fma"})
    for (vendor, setting), branch in cases.items():
        monkeypatch.setattr(numerics, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setenv("MKL_CBWR", setting)
        assert numerics.mkl_branch() == branch, (vendor, setting)
    assert numerics.describe()["MKL branch"] == "AUTO" and numerics.describe()["CPU"].startswith("HygonGenuine")
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx", "avx2", "avx512f"})
    monkeypatch.setattr(numerics, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setenv("MKL_CBWR", "AVX512")
    assert numerics.mkl_branch() == "AVX512"
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx"})  # an Intel CPU without AVX2: AUTO too
    monkeypatch.setenv("MKL_CBWR", "AVX2,STRICT")
    assert numerics.mkl_branch() == "AUTO"


MKL_CALL = """
from alarm import numerics
import torch
torch.ones(64, 64) @ torch.ones(64, 64)
print("BRANCH", numerics.mkl_branch())
"""


@pytest.mark.parametrize("setting", ["AVX2,STRICT", "BRANCH=AVX2,STRICT", "COMPATIBLE"])
def test_the_branch_recorded_is_the_one_mkl_reports_on_this_cpu(setting):
    """What `mkl_branch` says (Intel's documented rule) against what MKL prints it used (MKL_VERBOSE), here: on an
    Intel CPU the AVX2 branch, on an AMD one AUTO (portable mode's setting), COMPATIBLE on either."""
    done = run(MKL_CALL, MKL_CBWR=setting, MKL_VERBOSE="1")
    assert done.returncode == 0, done.stderr[-2000:]
    used = re.findall(r"CNR:([A-Z0-9_]+)", done.stdout + done.stderr)
    if not used:
        pytest.skip("this torch build does not use MKL for matrix products")
    said = done.stdout.split("BRANCH")[-1].split()[0]
    assert set(used) == {said}, (used, said)
