"""The C heap of long-lived serving replicas: what a burst of requests frees goes back to the system, so a replica's
resident memory returns to its working set instead of staying at the burst's high-water mark
(`deployments.free_memory`)."""

from __future__ import annotations

import ctypes
import threading
import time

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value
TRIM_PERIOD_S = 2.0
_M_MMAP_THRESHOLD = -3  # <malloc.h>
_trimming = threading.Event()  # one trimming thread per process


def free_memory(mode: str) -> bool:
    """Apply `deployments.free_memory` in this process (a replica's constructor); False where it does not apply.

    glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), so after a burst of
    variable-length batches later buffers of that size come from the heap and, once freed, stay resident: an
    encoder replica grew from 0.5 GB to 1.0-1.3 GB over bursts of 64 clips and stayed there; malloc_trim(0) took it
    back to 0.57 GB (a high-water mark, not a leak).

    Args:
        mode: "trim": a thread returns the free heap every TRIM_PERIOD_S (malloc_trim(0), a few ms each);
            "mmap": every allocation of MMAP_THRESHOLD bytes or more gets its own mapping, unmapped when freed, so
            each pays its page faults again (the encoder replicas spent about 30% more CPU per clip);
            "off": glibc's default.
    """
    if mode == "trim":
        return trim_periodically()
    if mode == "mmap":
        return return_freed_memory()
    return False


def trim_periodically(period_s: float = TRIM_PERIOD_S) -> bool:
    """Start (once per process) a daemon thread that calls glibc's malloc_trim(0) every `period_s` seconds."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # ctypes releases the GIL for the call
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators return memory differently
        return False
    if _trimming.is_set():
        return True
    _trimming.set()

    def run() -> None:
        while True:
            time.sleep(period_s)
            trim(0)

    threading.Thread(target=run, name="heap-trim", daemon=True).start()
    return True


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of `threshold` bytes or more with its own mmap, so that free() unmaps it (glibc only;
    fixing the threshold also turns glibc's adaptation off)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators return memory differently
        return False
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
