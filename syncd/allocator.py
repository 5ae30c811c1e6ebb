"""How the process's C allocator hands large blocks back, set once when syncd starts.

glibc's malloc serves a block of 128 KiB or more with a mapping of its own, given back to the system when it is
freed; but each time such a block is freed it raises that threshold (up to 32 MiB), and from then on the large
tables of a pass over a million members (lists, dict and set tables of 8 to 64 MiB, made in worker threads) come
from the heap of whichever thread made them, where freed space stays in the process. Measured with
`bench/large_group.py` (1,000,000 members, Communic8 steady pass, the same world each run): peak RSS 565 to 605 MB
with the moving threshold, 532 MB in every run with it fixed, at no cost in wall time. `mallopt(M_MMAP_THRESHOLD)`
fixes it (which also stops it moving), as `MALLOC_MMAP_THRESHOLD_` in the environment does; an operator's own
setting of that variable is left alone. Other C libraries (musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept from then on
ENV_SETTING = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 128 KiB; whether it was set here (False: not glibc, or set by the operator)."""
    if not sys.platform.startswith("linux") or ENV_SETTING in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or one without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
