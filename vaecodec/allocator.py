"""glibc's allocator, set for the codec's working set (elsewhere these calls do nothing).

By default glibc hands a freed block larger than a threshold back to the system at once (the
threshold grows with the blocks freed, up to 32 MiB) and trims the top of its heap past twice
that, so every image allocates its arrays afresh and the kernel faults in and zeroes their pages
again. Compressing Kodak's 24 images in one command on one core took 700 000 page faults and
1.2 s of its 8.3 s in the kernel. The `vaecodec` command (every subcommand) and its workers keep
freed memory for reuse instead (`keep_freed_memory`), and give the heap's free memory back after
a large image's tiles (`release_freed_memory`), where its peak is. The setting is the whole
process's, so the library leaves it to the program: `from vaecodec import allocator;
allocator.keep_freed_memory()`.
"""

import ctypes

_M_TRIM_THRESHOLD = -1  # mallopt's parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # where glibc's own threshold stops growing: larger blocks are mapped
TRIM_THRESHOLD = 512 << 20  # free memory the heap keeps at its top


def _glibc(name, argtypes):
    """A function of the C library by name, or None where it has none (musl, macOS, Windows)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


_mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
_malloc_trim = _glibc("malloc_trim", [ctypes.c_size_t])


def keep_freed_memory():
    """Keep freed blocks up to MMAP_THRESHOLD in the heap, and up to TRIM_THRESHOLD of free
    memory at its top, for the next arrays (fixed thresholds: glibc stops adjusting them). A
    glibc that refuses the first leaves both as they were: a fixed trim threshold alone would
    hold its mmap threshold at its starting 128 KiB."""
    if _mallopt is not None and _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def release_freed_memory():
    """Give the heap's free memory back to the system (a few ms). After a large image's tiles:
    the heap kept up to 185 MB of their freed intermediates at a 24 MP image's peak."""
    if _malloc_trim is not None:
        _malloc_trim(0)
