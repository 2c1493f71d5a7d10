"""Free space on the spool's file system: the floor below which no instance is accepted.

A gateway that wrote until the disk was full would leave SQLite no room for its write-ahead
log (the index, the MPPS steps, the order cache and the reports all live in ``spool_dir``) and
would turn every C-STORE into a half-written file. Instead, before an instance is written, the
SCP asks :meth:`SpaceGuard.admit`: below the floor (``spool_min_free_bytes``, or
``spool_min_free_percent`` of the file system when that is larger) the C-STORE is answered Out
of Resources (0xA700) without writing anything; the modality keeps the study and sends it again
later. The forwarder goes on sending what the spool holds, the retention purge deletes what the
hub confirmed, and the first C-STORE after free space is back above the floor is accepted, with
no restart.

The check costs one ``statvfs`` per :data:`CHECK_SECONDS` per process while free space is more
than twice the floor: between two readings the bytes this process admitted are subtracted from
the last reading. Nearer the floor every instance reads the file system again (a few
microseconds), so what other processes wrote, and what the forwarder and the purge freed, is
seen at once.

One refusal episode is logged once per process (WARNING when it starts, INFO when instances are
accepted again), not once per instance. The alarm (``spool_full`` in the heartbeat, the
``imaging_hub_gateway_spool_full`` gauge) is what :meth:`SpaceGuard.status` reads at that
moment: free space below the floor.

Writing can still fail for want of space (another program filled the disk, a quota, an instance
larger than the floor): :func:`is_no_space` tells those errors (ENOSPC, EDQUOT, SQLite's
SQLITE_FULL) apart, the partial file is removed, the C-STORE answered 0xA700 and the guard
re-reads the file system at the next instance.
"""

import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A statvfs reading is trusted this long (minus what this process admitted meanwhile).
CHECK_SECONDS = 1.0

#: errno values of a write that failed for want of space (disk full, quota exceeded).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: SQLite's primary result code SQLITE_FULL ("database or disk is full").
SQLITE_FULL = 13

#: The counter (spool index ``meta``) of C-STOREs refused for want of space.
REFUSED_COUNTER = "refused_no_space"


def is_no_space(exc: BaseException | None) -> bool:
    """Whether *exc*, or an exception it was raised from, is a write that found no space."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and (
            getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
            or "database or disk is full" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class SpaceGuard:
    """The free-space floor of one spool directory's file system (one per process)."""

    def __init__(
        self,
        root: Path,
        *,
        min_free_bytes: int = 0,
        min_free_percent: float = 0.0,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        if min_free_bytes < 0 or not 0 <= min_free_percent < 100:
            raise ValueError("The free-space floor must be >= 0 bytes and 0 to 100 percent.")
        self.root = root
        self.min_free_bytes = int(min_free_bytes)
        self.min_free_percent = float(min_free_percent)
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._read_at = float("-inf")  # monotonic time of the last statvfs
        self._free = 0
        self._total = 0
        self._admitted_since = 0  # bytes admitted by this process since that reading
        self._in_flight = 0  # bytes admitted and not yet stored or dropped (see `done`)
        self._in_flight_at_read = 0  # of which admitted before that reading
        self._refusing_since: float | None = None  # wall time this process started refusing
        self._refused = 0  # refusals of the current episode (this process)

    @property
    def enabled(self) -> bool:
        return self.min_free_bytes > 0 or self.min_free_percent > 0

    def floor(self, total: int | None = None) -> int:
        """The floor in bytes: the larger of the byte and the percentage settings."""
        total = self._total if total is None else total
        return max(self.min_free_bytes, int(total * self.min_free_percent / 100))

    def _read(self) -> None:
        """statvfs now (space available to the gateway's unprivileged user: f_bavail)."""
        st = os.statvfs(self.root)
        self._free = st.f_bavail * st.f_frsize
        self._total = st.f_blocks * st.f_frsize
        self._read_at = time.monotonic()
        self._admitted_since = 0
        # Admitted instances still being written may not show in the reading yet: counted as
        # unwritten (a little pessimistic) until the next reading.
        self._in_flight_at_read = self._in_flight

    def free_bytes(self) -> tuple[int, int]:
        """(free bytes, floor in bytes), read from the file system now."""
        with self._lock:
            self._read()
            return self._free, self.floor()

    def admit(self, size: int, *, calling: str = "") -> bool:
        """Whether an instance of *size* bytes may be written now; False: refuse it (0xA700).

        Refused: free space is below the floor, or writing *size* bytes would leave less than
        half of the floor free. Instances admitted by this process and still being written
        (other associations) count as written. The first refusal of an episode is logged, the
        end of one too. Admitted, the caller calls :meth:`done` once the instance is stored or
        dropped.
        """
        if not self.enabled:
            if self._refusing_since is not None:  # an episode of `no_space`
                with self._lock:
                    self._read()
                    self._episode_over(self._free, 0)
            return True
        with self._lock:
            floor = self.floor()
            free = self._free - self._in_flight_at_read - self._admitted_since
            # The last reading is trusted for check_seconds, and only while far from the floor
            # (another program may write too): near it, every instance reads the file system,
            # so a refusal is never made on an old reading.
            if time.monotonic() - self._read_at > self.check_seconds or free - size < 2 * floor:
                self._read()
                floor = self.floor()
                free = self._free - self._in_flight_at_read
            if free < floor or free - size < floor // 2:
                self._refusal(size, free, floor, calling)
                return False
            self._admitted_since += size
            self._in_flight += size
            if self._refusing_since is not None:
                self._episode_over(free, floor)
            return True

    def done(self, size: int) -> None:
        """An instance :meth:`admit` let in is stored or dropped: it is no longer in flight."""
        if not self.enabled:
            return
        with self._lock:
            self._in_flight = max(0, self._in_flight - size)

    def _refusal(self, size: int, free: int, floor: int, calling: str) -> None:
        if self._refusing_since is not None:
            self._refused += 1
            log.debug("C-STORE from %s refused: spool file system below its floor", calling)
            return
        self._refusing_since = time.time()
        self._refused = 1
        if free < floor:
            why = f"{_human(free)} free, below the floor of {_human(floor)}"
        else:
            why = (
                f"an instance of {_human(size)} would leave {_human(free - size)} of "
                f"{_human(free)} free (floor {_human(floor)})"
            )
        log.warning(
            "SPOOL DISK FULL: the spool's file system (%s) has %s: refusing new instances with "
            "Out of Resources (0xA700) until forwarding and the retention purge free space "
            "(spool_min_free_bytes / spool_min_free_percent); logged once until it accepts again",
            self.root,
            why,
        )

    def _episode_over(self, free: int, floor: int) -> None:
        since = self._refusing_since or time.time()
        log.warning(
            "spool disk space back: %s free (floor %s); accepting instances again after "
            "%d refusal(s) in %.0f s",
            _human(free),
            _human(floor),
            self._refused,
            time.time() - since,
        )
        self._refusing_since = None
        self._refused = 0

    def no_space(self, exc: BaseException, *, calling: str = "") -> None:
        """A write failed for want of space (*exc*): start an episode (logged once) and read
        the file system again at the next instance."""
        with self._lock:
            self._read_at = float("-inf")
            if self._refusing_since is not None:
                self._refused += 1
                log.debug("C-STORE from %s: no space while writing: %s", calling, exc)
                return
            self._refusing_since = time.time()
            self._refused = 1
        log.warning(
            "SPOOL DISK FULL: the spool's file system (%s) ran out of space while storing an "
            "instance from %s (%s): it is refused with Out of Resources (0xA700), nothing of it "
            "is kept; logged once until instances are accepted again",
            self.root,
            calling or "a modality",
            exc,
        )

    def status(self) -> dict[str, Any]:
        """The alarm and its figures, read now (heartbeat, ``gateway status``, metrics)."""
        free, floor = self.free_bytes()
        return {
            "spool_full": self.enabled and free < floor,
            "spool_free_bytes": free,
            "spool_min_free_bytes": floor,
        }
