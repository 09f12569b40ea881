"""The process's memory on a CPU: glibc's allocator settings for training, set once per process.

``reuse_freed_memory`` keeps glibc from returning every large freed block to the system, which a
CPU training step pays for in page faults; ``return_unused_memory``, after each step, returns free
pages whenever fragmentation has grown the heap by 256 MiB. The run sets the first once, when it
starts on a CPU (plmcli.run); the Trainer calls the second through ``memory_callback``.
"""

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from (and go back to) the heap


def reuse_freed_memory() -> bool:
    """Let glibc reuse freed memory within the process instead of unmapping it at every free.

    A training step on the CPU allocates and frees hundreds of megabytes of activations and
    gradients. By default glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
    mappings and unmaps them when freed, so every step the kernel maps and zeroes that memory
    again: about 150,000 page faults a step for MiniLM at batch 32, 10-20% of the step time on a
    2-core host. Raising the mmap and trim thresholds keeps the memory in the heap for the next
    step. Returns whether it applied (glibc on Linux only).

    The heap fragments as steps go by: with MiniLM at 32 x 128, about 1.1 GB is in use at a
    step's peak, yet the heap grew to 2.4 GB over 60 steps, with or without this setting. The
    Trainer therefore calls ``return_unused_memory`` after each step (see ``memory_callback``).
    """
    global _reusing
    libc = _glibc()
    if libc is None:
        return False
    _reusing = bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW))
    return _reusing


_reusing = False  # whether reuse_freed_memory applied in this process
_GROWTH_LIMIT = 256 << 20  # heap growth after which return_unused_memory releases free pages
_heap_at_trim = None  # the heap's size at the first call or the last release


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2: ``arena`` is the bytes the heap holds from the system."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


@functools.cache
def _glibc():
    """The C library if it is glibc on Linux (its mallopt and mallinfo2 typed), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    except (OSError, AttributeError):  # another C library (musl) has no mallopt
        return None
    if hasattr(libc, "mallinfo2"):  # glibc 2.33 or later
        libc.mallinfo2.restype = _MallInfo2
    return libc


def return_unused_memory() -> bool:
    """Hand the heap's unused pages back to the system each time the heap has grown by 256 MiB.

    A step's activations are freed at its end and reused by the next step, so free memory alone
    says nothing; growth of the heap is what fragmentation adds. The first call notes the heap's
    size; when it has grown by more than 256 MiB since, malloc_trim releases the pages of free
    blocks anywhere in the heap (memory in use is untouched), and the next steps touch again only
    what they use. Returns whether it released (glibc 2.33 or later).
    """
    global _heap_at_trim
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return False
    heap = libc.mallinfo2().arena
    if _heap_at_trim is None:
        _heap_at_trim = heap
        return False
    if heap <= _heap_at_trim + _GROWTH_LIMIT:
        return False
    _heap_at_trim = heap
    return bool(libc.malloc_trim(0))


def memory_callback():
    """A Trainer callback running return_unused_memory after each step if reuse_freed_memory applied; else None."""
    if not _reusing:
        return None
    from transformers import TrainerCallback

    class ReturnUnusedMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            return_unused_memory()

    return ReturnUnusedMemory()
