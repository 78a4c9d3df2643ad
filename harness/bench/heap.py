"""The host allocator's state, made the same for every cell, and the page faults that show it.

glibc's malloc serves a large request (above its mmap threshold, 128 KiB at first, raised as big blocks
are freed, up to 32 MiB) with fresh pages from the kernel and returns them on free; it also trims the
top of its heap back to the kernel. A CPU kernel that allocates big temporaries (a naive (N x N) score
matrix) then pays a page fault for every 4 KiB it touches, on every call, or none at all, depending on
what the process allocated before. Measured on the project's 2-core VM: naive global N=2048 fwd took
57 ms with 32770 minor faults per call and 27.5 ms with none; naive hierarchical N=1024 fwd flipped
between 8 and 17 ms within one process as earlier cells moved the threshold. Such a cell has two
speeds that no load reading can explain.

``pin_allocator("steady")`` (the default of a sweep, its workers and the CI gate's workers) fixes
glibc's mmap and trim thresholds, so freed memory stays in the process and a warmed-up call faults no
pages, whatever ran before: the state a training loop reaches, and the one a caching allocator (CUDA's,
jemalloc, tcmalloc) gives. ``"system"`` leaves the C library's defaults. The evidence is the timing
loop's: it reads the process's minor page faults beside every block (``time_fault_samples``).

Nothing happens at import: the thresholds change only when ``pin_allocator`` is called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

ALLOCATORS = ("steady", "system")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
STEADY_MMAP_THRESHOLD = 2**31 - 1  # bytes (mallopt takes an int): smaller requests come from the heap, kept on free
STEADY_TRIM_THRESHOLD = 2**31 - 1  # bytes: the heap's free top is given back only beyond this

_pinned: dict | None = None  # what pin_allocator("steady") did in this process (it cannot be undone)


@functools.cache
def _glibc():
    """(libc, reason): glibc's handle when it is the malloc in use, else None and why not."""
    if not sys.platform.startswith("linux"):
        return None, f"not glibc malloc (platform {sys.platform})"
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, f"not glibc ({name} has no gnu_get_libc_version)"
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # a malloc preloaded ahead of glibc's (jemalloc, tcmalloc) answers for the process; glibc's is unused
    used = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
    own = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    if used != own:
        return None, "another malloc is preloaded ahead of glibc's (its own policy applies)"
    return libc, f"glibc {version().decode()}"


def pin_allocator(mode: str = "steady") -> dict:
    """Set the host allocator to ``mode`` (``ALLOCATORS``) for the rest of this process and say what it
    is now: ``{"allocator": "steady" | "system", "malloc": ..., "reason": ...}``. ``steady`` where it
    cannot be set (another malloc, another OS) reports ``system`` with the reason; ``system`` after a
    ``steady`` in the same process reports ``steady`` (mallopt's thresholds cannot be restored)."""
    global _pinned
    if mode not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {mode!r}")
    libc, what = _glibc()
    if _pinned is not None:
        return {**_pinned, **({"reason": "set earlier in this process"} if mode != "steady" else {})}
    if mode == "system":
        return {"allocator": "system", "malloc": what, "reason": "the C library's defaults, as asked"}
    if libc is None:
        return {"allocator": "system", "malloc": what, "reason": f"cannot pin: {what}"}
    ok = libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
    if not ok:
        return {"allocator": "system", "malloc": what, "reason": "cannot pin: mallopt refused the thresholds"}
    _pinned = {"allocator": "steady", "malloc": what,
               "reason": f"mmap and trim thresholds {STEADY_MMAP_THRESHOLD} bytes: freed memory stays in "
                         "the process"}
    return dict(_pinned)



def describe(entry: dict | None) -> str:
    """run.json's ``allocator`` entry in words (a run written before it: the C library's defaults)."""
    if not isinstance(entry, dict) or not entry.get("allocator"):
        return "system (not recorded: a run from before the allocator was pinned)"
    return f"{entry['allocator']} ({entry.get('malloc', '?')}: {entry.get('reason', '')})"
