"""Requests sent with pynetdicom as the SCU (the gateway's report sender, the demo modality, the
test peers): associations that leave no socket behind, and sends safe from a race in pynetdicom
3.0's association reactor.

:func:`association` requests an association and, whatever becomes of it, closes its socket
afterwards: pynetdicom drops the socket of a refused connection unclosed, and closes an
association's socket only when ``shutdown()`` succeeds, which fails once the peer has gone (a
killed or unplugged node). Left to the garbage collector, each is a ResourceWarning.

Each ``Association.send_*()`` pauses the association's reactor thread, so that the response is
read by the send and not by the reactor: it clears the reactor's checkpoint and waits until the
reactor says it is paused (``_is_paused``). That flag may still be set from the reactor's
previous turn, when it has just been let through the checkpoint by the previous send: the send
then goes on, and the reactor, once it runs again, can take the response off the queue itself,
logs "Received unexpected C-ECHO service message" (or C-STORE, N-SET, ...; pynetdicom issue
#875) and drops it, and the send waits out its DIMSE timeout and aborts the association. It
takes a reactor thread held up at that instant (a loaded machine; seen in this project's CI).

:func:`reactor_parked` resets the flag before the send and waits for the reactor's next turn,
which parks it for real (a reactor that ended is not waited for; one that takes longer than
``timeout`` is given up on), and lets it go again afterwards, whatever happened. pynetdicom is
pinned (``>=3.0.4,<3.1``).
"""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: Longest :func:`reactor_parked` waits for the reactor's next turn (about 1 ms normally; a
#: reactor held up that long is the case this exists for).
PARK_TIMEOUT = 10.0


def _waiting_at(checkpoint: threading.Event) -> bool:
    """Whether a thread waits at *checkpoint* (only the reactor ever does): CPython's Event
    waits on a Condition, whose waiters are listed."""
    return bool(getattr(getattr(checkpoint, "_cond", None), "_waiters", None))


@contextmanager
def reactor_parked(assoc: Any, timeout: float = PARK_TIMEOUT) -> Iterator[None]:
    """Run one pynetdicom ``send_*()`` call on *assoc* (an established requestor association)
    with its reactor parked for real; see the module docstring."""
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()
    assoc._is_paused = False
    deadline = time.monotonic() + timeout
    # Parked: the reactor said so after the flag was reset, or it waits at the checkpoint (it
    # may have said so just before the reset).
    while not (assoc._is_paused or _waiting_at(checkpoint)):
        if not assoc.is_alive() or time.monotonic() > deadline:
            break
        time.sleep(0.0002)
    # Parked, ended, or too slow: what pynetdicom's own wait then finds (it must not spin
    # forever on a reactor that ended).
    assoc._is_paused = True
    try:
        yield
    finally:
        checkpoint.set()


def send_parked(assoc: Any, send: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``send(*args, **kwargs)`` (one of *assoc*'s ``send_*()`` methods) with the reactor parked
    for real, or None if the association ended meanwhile (a peer that went away: parking waits
    for the reactor, which is the thread that notices it; parked, it can no longer change that)."""
    with reactor_parked(assoc):
        if not assoc.is_established:
            return None
        return send(*args, **kwargs)


@contextmanager
def association(
    ae: Any, host: str, port: int, *, called_ae: str, timeout: float, probe: bool = False
) -> Iterator[Any]:
    """The association *ae* (a pynetdicom ``AE``: its callers import pynetdicom) requests of
    *called_ae* at (*host*, *port*), established or not (the caller looks: rejected, aborted,
    unanswered); on exit released if still established, its reactor joined (at most *timeout*)
    and its socket closed.

    With *probe*, a plain TCP connection is tried first and its OSError raised: for a node that
    may be down (pynetdicom logs two ERROR lines and leaks the socket of a refused connect).
    """
    if probe:
        socket.create_connection((host, port), timeout=timeout).close()
    assoc = ae.associate(host, port, ae_title=called_ae)
    transport = assoc.dul.socket
    raw = transport.socket if transport is not None else None
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        if assoc.ident is not None:  # its reactor never started when the connect failed
            assoc.join(timeout)
        if raw is not None and not assoc.is_alive():
            raw.close()
