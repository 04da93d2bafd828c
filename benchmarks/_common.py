"""What every benchmark does with its table: print it and write it as markdown; and a steady
CPU allocator for timings of single layers."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def steady_allocator() -> str:
    """Keep glibc's malloc from handing large buffers back to the OS between calls.

    With glibc's defaults a freed buffer of many megabytes is unmapped (or trimmed), so the
    next one of that size is mapped again and its first touch costs a page fault per page: in a
    timing of one layer those faults are much of the time and vary by about +-1x between runs,
    and a layer that allocates more buffers pays more of them. Set once, early, large buffers
    come from the heap, which is kept (as PyTorch's CUDA caching allocator keeps GPU memory):
    the timings measure the layers' arithmetic and memory traffic. A no-op where the C library
    is not glibc.

    Returns:
        What was done, for the benchmark's header.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return "default allocator (no glibc mallopt)"
    settings = (  # values are C ints
        (_M_MMAP_THRESHOLD, 1 << 30),  # buffers below 1 GiB from the heap, not mmap
        (_M_TRIM_THRESHOLD, (1 << 31) - 1),  # the heap's free top is kept (up to 2 GiB)
        (_M_TOP_PAD, 1 << 28),  # and grown 256 MiB at a time
    )
    if not all(libc.mallopt(option, value) for option, value in settings):
        return "default allocator (mallopt refused)"
    return "glibc malloc keeps freed memory (mallopt)"


def publish(lines: list[str], out: str | Path) -> str:
    """Join ``lines`` into a markdown table, print it, write it to ``out``; return the text."""
    table = "\n".join(lines) + "\n"
    print(table)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    return table
