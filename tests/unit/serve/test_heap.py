"""A replica's freed large buffers go back to the system: measured in a fresh process, as a replica runs."""

import subprocess
import sys

import pytest

# Frees one 8 MiB block (glibc then raises its mmap threshold to 8 MiB), then allocates 40 blocks of 4 MiB, each
# followed by a 1 MiB block that stays (so the heap cannot shrink from its top), touches them and frees them all.
WORKLOAD = """
import ctypes, sys
from pathlib import Path
from services.serve.heap import return_freed_memory

def rss_mb():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert return_freed_memory()
libc.free(libc.malloc(8 << 20))
start, big, small = rss_mb(), [], []
for _ in range(40):
    big.append(libc.malloc(4 << 20))
    ctypes.memset(big[-1], 1, 4 << 20)
    small.append(libc.malloc(1 << 20))  # never touched: not resident
for p in big:
    libc.free(p)
print(rss_mb() - start)
"""


def grown_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=120,
                          check=True)
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_buffers_leave_the_resident_set():
    assert grown_mb("default") > 100  # the high-water mark the replicas kept: 160 MiB touched, freed, resident
    assert grown_mb("fixed") < 20
