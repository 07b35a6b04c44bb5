"""Portable CPU numerics: the same float results from the same code, seeds and thread counts on any Intel x86-64
CPU with AVX2, whatever wider vector units it also has (on other vendors' CPUs, see below).

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

Nor CPUs of other vendors than Intel. MKL honours a named branch such as AVX2 on Intel CPUs only; on any other
CPU the same `MKL_CBWR` runs its AUTO branch, MKL's own dispatch for that CPU (Intel's oneMKL developer guide,
"Getting Started with Conditional Numerical Reproducibility"; MKL_VERBOSE=1 prints the branch a call used:
`CNR:AUTO,STRICT` on an AMD EPYC). An AMD machine in portable mode therefore computes the same bytes run after
run, but not an Intel machine's: a toy teacher built there differed from the Intel build of the same code at its
first attempt. `mkl_branch()` says which applies, `describe()` records it, and `make_portable()` warns. MKL's
COMPATIBLE branch (SSE2) is the one it documents for every vendor, at about 2.4 times the time of a toy LLM's
training step on an AMD EPYC, so the mode does not use it.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

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
    if mkl_branch() != "AVX2":
        log.warning("portable numerics: MKL pins its AVX2 branch on Intel CPUs with AVX2 only, and this CPU (%s) "
                    "gets its AUTO branch, so this machine computes the same bytes run after run but not those of an "
                    "Intel machine (the report's MKL branch row says so)", machine())


def mode() -> str:
    """This process's mode as a run folder records it: "native", "portable", or "portable, MKL AUTO (<machine>)"
    where MKL does not pin the mode's branch (a CPU of another vendor than Intel): AUTO is MKL's dispatch for that
    CPU, so its results are those of CPUs of the same vendor, family and model (`machine`), as far as MKL goes."""
    if not portable():
        return "native"
    return "portable" if mkl_branch() == "AVX2" else f"portable, MKL {mkl_branch()} ({machine()})"


def machine() -> str:
    """The CPU as MKL's AUTO branch tells CPUs apart, as far as Linux shows it: vendor, family and model, and
    whether it has AVX-512 (e.g. "AuthenticAMD family 25 model 1"); "unknown CPU" without /proc/cpuinfo."""
    vendor = cpu_vendor()
    if not vendor:
        return "unknown CPU"
    avx512 = " with AVX-512" if "avx512f" in cpu_flags() else ""
    return f"{vendor} family {_cpuinfo_field('cpu family')} model {_cpuinfo_field('model')}{avx512}"


def describe() -> dict:
    """What the float results of this process depend on beyond code and seeds: the mode, the kernels torch
    uses, its threads, and the variables of `PORTABLE` as set."""
    import torch

    mkl = "" if mkl_branch() == "AVX2" else f"; MKL's {mkl_branch()} branch"
    return {"numerics": f"portable (AVX2 kernels{mkl})" if portable() else "native (the CPU's own kernels)",
            "torch": torch.__version__, "torch CPU capability": torch.backends.cpu.get_cpu_capability(),
            "torch threads (this process)": torch.get_num_threads(),
            **{k: os.environ.get(k, "") for k in PORTABLE},
            "CPU": machine(), "MKL branch": mkl_branch()}


def mkl_branch() -> str:
    """The code branch MKL computes with in this process's environment: the branch `MKL_CBWR` names where MKL
    honours it (COMPATIBLE and AUTO on any CPU, AVX2 on Intel CPUs with AVX2, the others on Intel CPUs),
    otherwise AUTO; "off" where `MKL_CBWR` is unset (no reproducibility mode: MKL's own dispatch, whose results
    may differ from run to run). Intel documents that a named branch falls back to AUTO on other vendors' CPUs
    and on Intel CPUs without its instructions; `tests/unit/test_numerics.py` checks this against what
    MKL_VERBOSE prints on the machine running it."""
    branch = os.environ.get("MKL_CBWR", "").split(",")[0].strip().upper().removeprefix("BRANCH=")
    if branch in ("", "OFF"):
        return "off"
    if branch in ("AUTO", "COMPATIBLE"):
        return branch
    needs = _BRANCH_FLAGS.get(branch)
    if cpu_vendor() != "GenuineIntel" or needs is None or not needs <= cpu_flags():
        return "AUTO"  # another vendor's CPU, a branch MKL does not know, or one this CPU cannot run
    return branch


_BRANCH_FLAGS = {"SSE2": {"sse2"}, "SSE4_2": {"sse4_2"}, "AVX": {"avx"}, "AVX2": {"avx2"},
                 "AVX512": {"avx512f"}, "AVX512_E1": {"avx512f", "avx512_vnni"}}  # what each named branch runs on


def cpu_vendor() -> str:
    """The CPU's vendor as Linux's /proc/cpuinfo names it ("GenuineIntel", "AuthenticAMD"); "" where it cannot
    be read (another OS: `mkl_branch` then takes the CPU for another vendor's, and portable keys are its own)."""
    return _cpuinfo_field("vendor_id")


def cpu_flags() -> set[str]:
    """The CPU's feature flags ("avx2", "avx512f", ...) from Linux's /proc/cpuinfo; empty where it cannot be
    read."""
    return set(_cpuinfo_field("flags").split())


@functools.cache  # the CPU does not change under a process (read for every tiny checkpoint's key)
def _cpuinfo_field(name: str) -> str:
    """The first CPU's `name` line of /proc/cpuinfo, its value stripped; "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.split(":")[0].strip() == name), "")
    except OSError:
        return ""
    return line.partition(":")[2].strip()


def _has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 (Linux: /proc/cpuinfo; elsewhere assumed for x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()
    return "avx2" in flags if flags else True
