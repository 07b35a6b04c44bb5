"""Portable CPU numerics: the same float results from the same code, seeds and thread counts on any x86-64 CPU
with AVX2, whatever wider vector units it also has.

    numerics.make_portable()   # before torch computes anything in this process; children inherit it
    numerics.describe()        # what the results of this process depend on, for a report

torch, the MKL inside it and oneDNN each pick their kernels for the CPU they find: an AVX-512 machine sums in
other orders than an AVX2 one, and a model trained for thousands of steps ends elsewhere (a toy teacher built
by the same code on two machines read one question type at chance on one of them). Portable mode pins all
three to their AVX2 code paths through the environment variables they document (`PORTABLE`): ATen's
`ATEN_CPU_CAPABILITY`, MKL's Conditional Numerical Reproducibility (`MKL_CBWR`, strict: independent of memory
alignment too) and oneDNN's `ONEDNN_MAX_CPU_ISA`. vLLM's CPU kernels follow torch's choice
(`services.engines.llm.prepare_cpu` loads vLLM's AVX2 build when `ATEN_CPU_CAPABILITY=avx2`). The price is
speed: a small training run took 19% longer on an AVX-512 CPU.

What it does not cover: the number of threads (a reduction split over 2 threads sums in another order than
over 1; MKL reproduces only for a fixed count), the versions of torch and vLLM, and an engine core vLLM runs
in a second process (`VLLM_ENABLE_V1_MULTIPROCESSING=1`), which loads the kernels of its CPU.
"""

from __future__ import annotations

import os
import platform

PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def portable() -> bool:
    """Whether this process's environment asks for portable numerics (all of `PORTABLE` set as it says)."""
    return all(os.environ.get(k) == v for k, v in PORTABLE.items())


def make_portable() -> None:
    """Portable numerics for this process and the processes it starts from now on (a local Ray cluster started
    after this call included; a cluster started before needs the variables in its own environment or the job's
    `runtime_env`).

    Raises:
        RuntimeError: torch already chose its kernels in this process (it had computed something first), so
            the setting would apply to the children only: call this before any torch computation.
    """
    before = {k: os.environ.get(k) for k in PORTABLE}
    os.environ.update(PORTABLE)
    import torch

    # ATen reads the variable at its first dispatch; reading the choice now fixes it (or shows it was fixed)
    if _has_avx2() and torch.backends.cpu.get_cpu_capability() != "AVX2":
        for k, v in before.items():  # as it was: neither this process nor its children half portable
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
        raise RuntimeError(f"torch chose its {torch.backends.cpu.get_cpu_capability()} kernels before portable "
                           f"numerics were set: call alarm.numerics.make_portable() before torch computes anything, or "
                           f"export {' '.join(f'{k}={v}' for k, v in PORTABLE.items())} before starting Python")


def describe() -> dict:
    """What the float results of this process depend on beyond code and seeds: the mode, the kernels torch
    uses, its threads, and the variables of `PORTABLE` as set."""
    import torch

    return {"numerics": "portable (AVX2 kernels)" if portable() else "native (the CPU's own kernels)",
            "torch": torch.__version__, "torch CPU capability": torch.backends.cpu.get_cpu_capability(),
            "torch threads (this process)": torch.get_num_threads(),
            **{k: os.environ.get(k, "") for k in PORTABLE}}


def cpu_flags() -> set[str]:
    """The CPU's feature flags ("avx2", "avx512f", ...) from Linux's /proc/cpuinfo; empty where it cannot be
    read."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


def _has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 (Linux: /proc/cpuinfo; elsewhere assumed for x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()
    return "avx2" in flags if flags else True
