"""Event-driven reactors: pynetdicom's association threads wait for work instead of polling.

Relies on pynetdicom 3.0 internals (see :mod:`imaging_hub.dicom_gateway.lean`).
"""

import contextlib
import queue
import select
import socket
import threading
import time
from typing import Any

# Event-driven reactors. pynetdicom's two reactor threads per association poll: the DUL sleeps
# 1 ms whenever it finds nothing to do, and the association reactor sleeps 1 ms per loop before
# looking for a decoded DIMSE message. Each C-STORE crosses both, so every instance paid one to
# three milliseconds of sleeping. The queues below let both threads wait for the thing they poll
# for instead (the peer's socket, a primitive to send, a decoded message), so they wake at once
# and sleep longer when idle; and the DUL reads each PDU in one buffer (`dul.recv_exact`). They
# replace attributes of pynetdicom's DULServiceProvider, DIMSEServiceProvider and
# AssociationSocket (pynetdicom 3.0.x, the pinned series); `check_reactor_internals` keeps the
# lean path off at start-up if a pynetdicom renames them.
IDLE_WAIT = 0.01  # s: longest an idle reactor waits before re-checking timers and flags


class WakingQueue(queue.Queue[Any]):
    """A queue whose put() also wakes a thread waiting in select() on *wake*'s peer."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        # OSError: already signalled (buffer full) or closing; the reader wakes anyway.
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")


class DulEventQueue(WakingQueue):
    """The DUL's event queue: an empty non-blocking get() first waits until the peer sends
    data, another thread queues a primitive or event, or IDLE_WAIT passes."""

    def __init__(self, wake: socket.socket, waiter: socket.socket, peer: socket.socket) -> None:
        super().__init__(wake)
        self._waiter = waiter
        self._peer = peer

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        try:
            return super().get(False)
        except queue.Empty:
            pending = getattr(self._peer, "pending", None)  # TLS may hold decrypted bytes
            if pending is None or not pending():
                try:
                    ready, _, _ = select.select([self._peer, self._waiter], [], [], IDLE_WAIT)
                except (OSError, ValueError):
                    # The socket closed: the DUL is about to stop; do not spin meanwhile.
                    time.sleep(IDLE_WAIT)
                    ready = []
                if self._waiter in ready:
                    with contextlib.suppress(OSError):
                        self._waiter.recv(4096)
            raise


class DimseMessageQueue(queue.Queue[Any]):
    """The decoded-message queue: the association reactor's non-blocking get() waits up to
    IDLE_WAIT for a message instead of returning empty at once (it then re-checks for release
    and abort, as before)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        return super().get(True, IDLE_WAIT)


# Both reactor loops also sleep by themselves: the association reactor 1 ms at the top of every
# loop (pynetdicom Association._run_reactor: ``time.sleep(0.001)``), i.e. after every request it
# served and before it looks for the next, about a fifth of a CT slice's time on one
# association; and the DUL ``time.sleep(0)`` after every loop that found no event, which hands
# the GIL to any other thread and waits to get it back (the association thread finishing a
# response, say) before it sends what was just queued. Those sleeps go through the ``time``
# module pynetdicom.association and pynetdicom.dul imported; `_ReactorTime` stands in for it and
# skips exactly those sleeps on threads whose queues wait instead (`DimseMessageQueue`,
# `DulEventQueue`).
ACCEPTOR_LOOP_SLEEP = 0.001
DUL_LOOP_SLEEP = 0


class _ReactorTime:
    """The ``time`` module as pynetdicom's reactors see it (see above); all else unchanged."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds == ACCEPTOR_LOOP_SLEEP:
            dimse = getattr(threading.current_thread(), "dimse", None)  # an Association thread
            if dimse is not None and isinstance(dimse.msg_queue, DimseMessageQueue):
                return  # its msg_queue.get() waits instead
        elif seconds == DUL_LOOP_SLEEP:
            events = getattr(threading.current_thread(), "event_queue", None)  # a DUL thread
            if isinstance(events, DulEventQueue):
                return  # its event_queue.get() waits instead
        time.sleep(seconds)


def install_reactor_time() -> None:
    from pynetdicom import association, dul

    for module in (association, dul):
        if not isinstance(getattr(module, "time", None), _ReactorTime):
            setattr(module, "time", _ReactorTime())  # noqa: B010  not exported: mypy


def check_reactor_internals() -> None:
    """Raise RuntimeError if pynetdicom no longer has what `attach` replaces and
    `store.LeanStore` reads (`install` then keeps the lean path off)."""
    from pynetdicom import AE, association, dul
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.transport import AssociationSocket

    probe = Association(AE(), "acceptor")
    missing = [
        name
        for owner, names in (
            (
                probe.dul,
                (
                    "event_queue",
                    "to_provider_queue",
                    "_run_loop_delay",
                    "_read_pdu_data",
                    "_recv_pdu",
                    "state_machine",
                ),
            ),
            (probe.dimse, ("msg_queue", "message", "maximum_pdu_size")),
            (probe, ("_accepted_cx", "_sent_release", "is_established")),
            (probe.acceptor, ("accepted_common_extended",)),
            (AssociationSocket, ("recv",)),
        )
        for name in names
        if not hasattr(owner, name)
    ]
    for module in (association, dul):
        if not isinstance(getattr(module, "time", None), type(time) | _ReactorTime):
            missing.append(f"{module.__name__}.time")
    if missing or not (
        isinstance(probe.dul, DULServiceProvider) and isinstance(probe.dimse, DIMSEServiceProvider)
    ):
        raise RuntimeError(
            "this pynetdicom lacks the reactor internals the lean path replaces: "
            + (", ".join(missing) or "provider classes")
        )
