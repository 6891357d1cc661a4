"""Hand freed native memory back to the operating system between the stages of one slide.

glibc's allocator keeps the pages that torch's activations, the decoded tile batches and the decode
threads' buffers were freed into, in its arenas, for later allocations. After a slide's tiles are encoded,
nothing will reuse them: the next stages import scikit-learn and run the aggregator instead, and would add
their memory on top (measured: 113 MB kept after encoding 4,000 tiles, which set the peak RSS of
``predict``; ``benches/bench_start.py``). glibc's ``malloc_trim`` returns them; no library wraps it, hence
the few lines of ctypes. On other C libraries (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the OS (glibc ``malloc_trim(0)``); True if anything was."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # the process's own symbols, which include the C library's (no ldconfig lookup)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no glibc (musl has no malloc_trim)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
