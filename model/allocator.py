"""Keep freed tensor memory in the process on glibc, for batch jobs (training, evaluation).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it
with ``munmap`` on free. A training step at batch 128 allocates and frees hundreds of MB of activations, so
every step faults in and zeroes those pages again (`python benchmarks/bench_train.py --batch-size 128
--default-malloc` vs without the flag: 1.7-1.9x slower on a 2-core machine). With mmap off and trimming off,
freed blocks stay in the heap and the next step reuses them; that memory is not given back to the OS until the
process exits, which is what a batch job wants and a long-lived server may not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # bytes; the largest value mallopt takes (an int)


def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed blocks (no mmap, no trim). True if applied, False off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
