"""The C heap of long-lived serving replicas: large freed buffers go back to the system at once, so a replica's
resident memory after a burst of requests returns to its working set instead of the burst's high-water mark."""

from __future__ import annotations

import ctypes

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of `threshold` bytes or more with its own mmap, so that free() unmaps it (glibc only).

    glibc starts there but raises the threshold to the largest block freed so far (up to 32 MiB). After a burst of
    variable-length batches, later tensors of that size come from the heap, and once freed they stay resident: an
    encoder replica grew from 0.5 GB to 1.0-1.3 GB over bursts of 64 clips and stayed there, and malloc_trim(0)
    took it back to 0.57 GB, so a high-water mark, not a leak. Fixing the threshold (which also turns the
    adaptation off) kept the same replica flat at 0.54 GB, no slower. Returns False where it does not apply.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators return memory differently
        return False
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
