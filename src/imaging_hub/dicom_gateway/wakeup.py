"""The forwarder's wake-up across processes: a Unix datagram socket in the spool directory.

With ``scp_workers`` > 1 the C-STOREs and MPPS N-SETs are taken by SCP worker processes while
the forwarder runs in the main process. After each committed instance, each association's end
and each accepted MPPS change a worker sends one byte (:class:`Waker`) to the socket the
forwarder's loop waits on (:class:`WakeListener`, bound by the main process at
``<spool>/forwarder.wake``), so the forwarder leases the instance or completes the study at once
instead of at its next poll.

A wake-up is only a hint; the spool index is the truth, and the forwarder still polls (slower)
as the fallback. So sending never fails and never blocks a C-STORE: the socket is
non-blocking, and every error is counted and ignored — no forwarder listening (ECONNREFUSED,
ENOENT: the gateway is stopping, or forwarding is off), the socket file removed (the listener
binds it again at its next poll), a full queue (EAGAIN: the kernel bounds it, and a wake-up is
pending anyway). The listener reads at most :data:`DRAIN_MAX` datagrams per wake-up and removes
its socket file when it closes (only if it is still its own).

A spool path too long for ``sun_path`` (108 bytes) is reached through the spool directory's
file descriptor (``/proc/self/fd/N/forwarder.wake``, Linux).
"""

import contextlib
import errno
import logging
import os
import select
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "forwarder.wake"
#: What a datagram says: an instance was committed (or an association ended), an MPPS changed.
STORED = b"s"
MPPS = b"m"
#: Datagrams read per wake-up at most (the rest wake the next wait).
DRAIN_MAX = 1024
_SUN_PATH_MAX = 107  # sun_path is 108 bytes with its NUL


class _Address:
    """The socket's address: its path, or the spool directory's fd path when that is too
    long for ``sun_path``."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / SOCKET_NAME
        self._dir_fd: int | None = None
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            self._dir_fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.address = f"/proc/self/fd/{self._dir_fd}/{SOCKET_NAME}"
        else:
            self.address = str(self.path)

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class Waker:
    """The sending side (an SCP worker process): one byte per event, never an error."""

    def __init__(self, spool_dir: Path) -> None:
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._address: _Address | None = None
        try:
            self._address = _Address(spool_dir)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            self._sock = sock
        except OSError as exc:  # no wake-ups from this process: the forwarder's poll remains
            log.warning("forwarder wake-ups unavailable, the forwarder polls: %s", exc)

    def stored(self) -> None:
        """An instance was committed, or an association carrying studies ended."""
        self._send(STORED)

    def mpps(self) -> None:
        """An MPPS step was created or changed."""
        self._send(MPPS)

    def _send(self, kind: bytes) -> None:
        sock, address = self._sock, self._address
        if sock is None or address is None:
            return
        try:
            sock.sendto(kind, address.address)
            self.sent += 1
        except OSError as exc:
            # ECONNREFUSED/ENOENT: nobody listens; EAGAIN/ENOBUFS: the queue is full, a
            # wake-up is pending. Either way the forwarder's poll finds the work.
            self.failed += 1
            if self.failed == 1 and exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                log.debug("forwarder wake-up not delivered: %s", exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._address is not None:
            self._address.close()
            self._address = None


class WakeListener:
    """The receiving side (the forwarder in the main process)."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.received = {STORED: 0, MPPS: 0}
        self._sock: socket.socket | None = None
        self._address: _Address | None = None
        self._inode: tuple[int, int] | None = None

    def open(self) -> bool:
        """Bind the socket (replacing a stale file of an earlier run); False if it cannot be
        (the forwarder then only polls)."""
        self.close()
        try:
            address = _Address(self.spool_dir)
            self._address = address
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.setblocking(False)
                sock.bind(address.address)
                st = os.stat(address.path)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            log.warning("forwarder wake-up socket unavailable, the forwarder polls: %s", exc)
            self.close()
            return False
        self._sock = sock
        self._inode = (st.st_dev, st.st_ino)
        return True

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def drain(self) -> bytes:
        """Read what is queued (at most DRAIN_MAX datagrams); the kinds seen."""
        sock = self._sock
        if sock is None:
            return b""
        kinds = set()
        for _ in range(DRAIN_MAX):
            try:
                data = sock.recv(16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            kind = data[:1]
            if kind in self.received:
                self.received[kind] += 1
                kinds.add(kind)
        return b"".join(sorted(kinds))

    def check(self) -> None:
        """Bind again if the socket file was removed (senders could not reach us); called at
        the forwarder's idle poll. A file another process put there (a second gateway on this
        spool by mistake) is left alone: no tug of war, the poll remains."""
        if self._address is None or self._inode is None:
            return
        if os.path.lexists(self._address.path):
            return
        log.warning("forwarder wake-up socket file was removed; bound again")
        self.open()

    def close(self) -> None:
        """Close the socket and remove its file if it is still ours."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._address is not None:
            if self._inode is not None:
                try:
                    st = os.stat(self._address.path)
                    if (st.st_dev, st.st_ino) == self._inode:
                        os.unlink(self._address.path)
                except OSError:
                    pass
            self._address.close()
            self._address = None
        self._inode = None


class Alarm:
    """What the forwarder's thread waits on: wake-ups from its own process (a pipe, from any
    thread), datagrams from other processes (an optional :class:`WakeListener`)."""

    def __init__(self, listener: WakeListener | None = None) -> None:
        self.listener = listener
        #: Waits ended by a datagram of another process (what the tests count).
        self.socket_wakeups = 0
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False

    def set(self) -> None:
        """Wake the waiting thread (any thread; never blocks)."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                os.write(self._write, b"x")

    def wait(self, timeout: float) -> bytes:
        """Wait up to *timeout* seconds for a wake-up; the datagram kinds received (b"" for
        none: a wake-up of this process, or the timeout)."""
        fds = [self._read]
        listener = self.listener
        if listener is not None and listener.is_open:
            fds.append(listener.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except (OSError, ValueError):  # closed while waiting (stop)
            return b""
        if self._read in ready:
            try:
                while os.read(self._read, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        kinds = b""
        if listener is not None and len(fds) > 1 and fds[1] in ready:
            kinds = listener.drain()
            if kinds:
                self.socket_wakeups += 1
        return kinds

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._write)
        os.close(self._read)
        if self.listener is not None:
            self.listener.close()
