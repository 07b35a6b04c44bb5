"""A replica's freed large buffers go back to the system (`deployments.free_memory`): measured in a fresh process,
as a replica runs."""

import subprocess
import sys

import pytest

# Frees one 8 MiB block (glibc then raises its mmap threshold to 8 MiB), then allocates 40 blocks of 4 MiB, each
# followed by a 1 MiB block that stays (so the heap cannot shrink from its top), touches them and frees them all.
WORKLOAD = """
import ctypes, sys, time
from pathlib import Path
from services.serve import heap

def rss_mb():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] != "off":
    assert heap.trim_periodically(0.05) if sys.argv[1] == "trim" else heap.free_memory(sys.argv[1])
libc.free(libc.malloc(8 << 20))
start, big, small = rss_mb(), [], []
for _ in range(40):
    big.append(libc.malloc(4 << 20))
    ctypes.memset(big[-1], 1, 4 << 20)
    small.append(libc.malloc(1 << 20))  # never touched: not resident
for p in big:
    libc.free(p)
time.sleep(0.5)  # a few trim periods
print(rss_mb() - start)
"""


def grown_mb(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=120,
                          check=True)
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("mode", ["trim", "mmap"])
def test_freed_large_buffers_leave_the_resident_set(mode):
    assert grown_mb("off") > 100  # the high-water mark the replicas kept: 160 MiB touched, freed, resident
    assert grown_mb(mode) < 20
