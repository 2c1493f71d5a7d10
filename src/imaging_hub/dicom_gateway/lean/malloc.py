"""glibc tuning of an SCP process: the memory of freed large buffers is kept for reuse."""

import ctypes

# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap and are reused; larger ones are mapped and
#: returned to the system when freed.
REUSED_BUFFER_BYTES = 32 * 1024 * 1024
#: Free memory the heap keeps for reuse before it gives memory back to the system.
KEPT_FREE_BYTES = 64 * 1024 * 1024


def reuse_freed_buffers() -> bool:
    """Make this process's C allocator (glibc) reuse the memory of freed large buffers.

    Every instance an SCP receives passes through buffers of its size (the PDUs, the data set,
    the file header). glibc's defaults map buffers over a threshold afresh and give them back
    on free (or trim the heap), so each new instance page-faults its buffers in again: about
    one fault per 4 KiB received, a third of the SCP's system time for a CT slice
    (docs/gateway.md). Set both thresholds explicitly to keep up to :data:`KEPT_FREE_BYTES`
    for reuse. Returns False (and changes nothing) where the C library is not glibc.

    Process-wide: called by :func:`imaging_hub.dicom_gateway.lean.install` only.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, REUSED_BUFFER_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES)
    )
