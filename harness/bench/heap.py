"""The host allocator's state, made the same for every cell.

glibc's malloc serves a large request (above its mmap threshold: 128 KiB at first, raised as big blocks
are freed, up to 32 MiB) with fresh pages from the kernel and returns them on free; it also trims the
top of its heap back to the kernel. A CPU kernel that allocates big temporaries (a naive (N x N) score
matrix) then pays a page fault for every 4 KiB it touches, on every call, or none at all, depending on
what the process allocated before. Measured on the project's 2-core VM, per call in one process: naive
global N=2048 fwd took 57 ms with 32770 minor faults and 27.5 ms with none; naive hierarchical N=1024
fwd read 17-18.6 ms with 8400-9400 faults and 8-9 ms with none, switching as other cells ran between.
Such a cell has two speeds that no load reading explains.

``pin_allocator("steady")`` (the default of a sweep, its workers, the CI gate's workers and both
benchmark suites) turns off glibc's use of mmap for large requests and its trimming (``mallopt``), so
freed memory stays in the process: once a cell's calls have warmed up, they fault no pages, whatever
ran before (the state a training loop reaches, and the one a caching allocator, CUDA's, jemalloc or
tcmalloc, gives). Threads other than the main one allocate from their own arenas, whose requests
above 64 MiB are still mapped afresh; torch allocates from the calling thread. ``"system"`` leaves
the C library's defaults. The evidence is the timing loop's: it reads the process's minor page faults
beside every block (``time_fault_samples``; the ``page faults`` flag).

Nothing happens at import: glibc's settings change only when ``pin_allocator`` is called. Like
``timing.py``, this module imports nothing from attnbench: the CI gate's worker loads it by path, and
the tree under test (on its PYTHONPATH) may be one from before it existed.
"""

from __future__ import annotations

import ctypes
import functools
import sys

ALLOCATORS = ("steady", "system")  # the host allocator's states a sweep measures in
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
SETTINGS = ((M_MMAP_MAX, 0, "no mmap for large requests"), (M_TRIM_THRESHOLD, -1, "no trimming"))  # -1: never

_pinned: dict | None = None  # what pin_allocator("steady") did in this process (it is not undone)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _glibc():
    """(libc, what): glibc's handle when its malloc is the process's, else None and why not."""
    if not sys.platform.startswith("linux"):
        return None, f"not glibc malloc (platform {sys.platform})"
    try:
        libc = ctypes.CDLL("libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, "not glibc (no libc.so.6 with gnu_get_libc_version)"
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if hasattr(libc, "mallinfo2"):  # glibc 2.33 and later
        libc.mallinfo2.restype = _Mallinfo2
    # a malloc preloaded or linked ahead of glibc's (jemalloc, tcmalloc) answers for the process
    used = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
    own = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    if used != own:
        return None, "another malloc is loaded ahead of glibc's (its own policy applies)"
    return libc, f"glibc {version().decode()}"


def pin_allocator(mode: str = "steady") -> dict:
    """Set the host allocator to ``mode`` (``ALLOCATORS``) for the rest of this process and say what it
    is now: ``{"allocator": "steady" | "system", "malloc": ..., "reason": ...}``. Where ``steady`` cannot
    be set (another malloc, another OS, a setting glibc refused) the answer is ``system`` with the reason;
    ``system`` after a ``steady`` in the same process answers ``steady`` (glibc's defaults are not
    restored). Callers compare the answer with what they asked for."""
    global _pinned
    if mode not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {mode!r}")
    libc, what = _glibc()
    if _pinned is not None:
        return {**_pinned, **({"reason": "pinned steady earlier in this process"} if mode != "steady" else {})}
    if mode == "system":
        return {"allocator": "system", "malloc": what, "reason": "the C library's defaults, as asked"}
    if libc is None:
        return {"allocator": "system", "malloc": what, "reason": f"cannot pin: {what}"}
    refused = [text for param, value, text in SETTINGS if not libc.mallopt(param, value)]
    if refused:
        return {"allocator": "system", "malloc": what, "reason": f"cannot pin: mallopt refused {', '.join(refused)}"}
    _pinned = {"allocator": "steady", "malloc": what,
               "reason": ", ".join(text for _, _, text in SETTINGS) + ": freed memory stays in the process"}
    return dict(_pinned)


def free_heap_bytes() -> int:
    """Bytes free inside glibc's heap (``mallinfo2``'s fordblks): memory this process holds but no longer
    uses, which a steady allocator keeps instead of giving back (0 where it cannot be read)."""
    libc, _ = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):  # not glibc, or glibc before 2.33
        return 0
    return int(libc.mallinfo2().fordblks)


def allocator_of(entry: dict | None) -> str | None:
    """The state in run.json's ``allocator`` entry; None for a run written before it (which measured
    with the C library's defaults)."""
    return entry.get("allocator") or None if isinstance(entry, dict) else None


def describe(entry: dict | None) -> str:
    """run.json's ``allocator`` entry in words (a run written before it: the C library's defaults)."""
    if allocator_of(entry) is None:
        return "system (not recorded: a run from before the allocator was pinned)"
    return f"{entry['allocator']} ({entry.get('malloc', '?')}: {entry.get('reason', '')})"
