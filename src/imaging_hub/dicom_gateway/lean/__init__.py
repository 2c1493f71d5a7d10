"""The gateway's optional fast C-STORE path, built on pynetdicom internals.

What it changes, per process (`install`) and per association (`attach`):

- pynetdicom's reactor threads wait on their socket and queues instead of polling with 1 ms
  sleeps (`reactors`);
- the DUL reads each PDU in one buffer and hands P-DATA values on as views (`dul`);
- plain C-STORE requests are served on the DUL thread, responses encoded directly (`store`);
- ``copy.deepcopy`` shares pydicom UIDs instead of rebuilding them (`copying`);
- glibc keeps freed large buffers for reuse (`malloc`).

These are process-wide patches of pynetdicom, ``copy`` and the C allocator, so nothing happens
at import time: a gateway SCP process calls `install` from its serve entry
(`imaging_hub.dicom_gateway.scp.start_scp` and `start_shared_scp` do), and a process that runs
the hub never does. `install` is idempotent and refuses, logged once, on any pynetdicom outside
:data:`PYNETDICOM_SPEC` (the series whose internals this relies on) or whose internals are not
what it expects; the SCP then runs on plain pynetdicom, correct and slower.
"""

import functools
import logging
import queue
import socket
import ssl
import threading
import weakref

import pynetdicom
from pynetdicom import evt

from imaging_hub.dicom_gateway.lean import copying, malloc, reactors
from imaging_hub.dicom_gateway.lean.dul import read_pdu, recv_exact
from imaging_hub.dicom_gateway.lean.store import LeanStore, StoreTarget, send_msg

__all__ = [
    "PYNETDICOM_SPEC",
    "StoreTarget",
    "attach",
    "detach",
    "install",
    "installed",
    "unsupported_reason",
]

log = logging.getLogger(__name__)

#: The pynetdicom releases whose internals this package was written against and tested with
#: (pyproject.toml pins the dependency to the same series).
PYNETDICOM_SPEC = ">=3.0.4,<3.1"
SUPPORTED_SERIES = (3, 0)
MINIMUM_PATCH = 4

_lock = threading.Lock()
_state: bool | None = None  # None: install() not called yet in this process


def unsupported_reason(version: str | None = None) -> str | None:
    """Why *version* (default: the installed pynetdicom's) cannot take the lean path, or None."""
    version = pynetdicom.__version__ if version is None else version
    parts = version.split(".")
    try:
        numbers = tuple(int(part) for part in parts[:3])
    except ValueError:
        numbers = ()
    if len(numbers) < 3 or numbers[:2] != SUPPORTED_SERIES or numbers[2] < MINIMUM_PATCH:
        return f"pynetdicom {version} is not {PYNETDICOM_SPEC}"
    try:
        reactors.check_reactor_internals()
    except RuntimeError as exc:
        return str(exc)
    return None


def install() -> bool:
    """Turn the lean path on for this process (idempotent); whether it is on.

    Only a gateway SCP process calls this. On an unsupported pynetdicom nothing is changed and
    one WARNING says so (the first call only); the SCP runs on plain pynetdicom.
    """
    global _state
    with _lock:
        if _state is not None:
            return _state
        reason = unsupported_reason()
        if reason is not None:
            log.warning(
                "lean C-STORE path OFF: %s; the DICOM SCP runs on plain pynetdicom "
                "(correct, slower). Install pynetdicom%s for the lean path.",
                reason,
                PYNETDICOM_SPEC,
            )
            _state = False
            return False
        reactors.install_reactor_time()
        copying.copy_uids_by_reference()
        malloc.reuse_freed_buffers()
        log.info("lean C-STORE path on (pynetdicom %s)", pynetdicom.__version__)
        _state = True
        return True


def installed() -> bool:
    """Whether `install` turned the lean path on in this process."""
    return _state is True


def attach(event: evt.Event, handler: StoreTarget) -> None:
    """EVT_CONN_OPEN: swap the association's polled queues for waking ones, and on plain TCP
    read P-DATA with `dul.read_pdu` for *handler*. Bound by the SCP only when `installed`.

    Runs before the association's threads start; events already queued are carried over.
    """
    assoc = event.assoc
    dul = assoc.dul
    transport = dul.socket
    peer = transport.socket if transport is not None else None
    if transport is None or peer is None:
        return
    waiter, wake = socket.socketpair()
    waiter.setblocking(False)
    wake.setblocking(False)
    events = reactors.DulEventQueue(wake, waiter, peer)
    while True:
        try:
            events.put(dul.event_queue.get_nowait())
        except queue.Empty:
            break
    outgoing = reactors.WakingQueue(wake)
    while True:
        try:
            outgoing.put(dul.to_provider_queue.get_nowait())
        except queue.Empty:
            break
    dul.event_queue = events
    dul.to_provider_queue = outgoing
    dul._run_loop_delay = 0  # the wait happens in events.get()
    assoc.dimse.msg_queue = reactors.DimseMessageQueue()
    transport.recv = functools.partial(recv_exact, peer)  # type: ignore[method-assign]
    if not isinstance(peer, ssl.SSLSocket):  # TLS cannot peek at a PDU header (MSG_PEEK)
        lean = LeanStore(handler, assoc)
        dul._read_pdu_data = functools.partial(read_pdu, dul, dul._read_pdu_data, peer, lean)  # type: ignore[method-assign]
    dimse = assoc.dimse
    dimse.send_msg = functools.partial(send_msg, dimse, dimse.send_msg)  # type: ignore[method-assign]
    setattr(assoc, "_imaging_hub_wake", (waiter, wake))  # noqa: B010  closed by detach
    # An association that ends without EVT_CONN_CLOSE (a PDU cut by a dropped connection) must
    # not keep its wake-up sockets open: they close when the association object goes too.
    weakref.finalize(assoc, _close_sockets, waiter, wake)


def _close_sockets(*socks: socket.socket) -> None:
    for sock in socks:
        sock.close()


def detach(event: evt.Event) -> None:
    """EVT_CONN_CLOSE: close the wake-up sockets `attach` made."""
    _close_sockets(*getattr(event.assoc, "_imaging_hub_wake", ()))
