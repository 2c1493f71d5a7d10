"""pynetdicom 3.0's SCU race (imaging_hub.dicom.scu): a send_*() that finds its reactor's
"paused" flag left over from the reactor's previous turn goes on, the reactor takes the response
itself and drops it, and the send waits out its DIMSE timeout. This happened in CI (a C-ECHO
after an N-SET on one association). Here the two moments of a loaded machine that make it are
staged with wrappers (the race itself is left to pynetdicom): the reactor thread held up right
after the checkpoint let it through, until the response is on the queue, and the sending thread
waking late to read it; against a pynetdicom Verification SCP over loopback. Plain pynetdicom
loses the response; :func:`reactor_parked` keeps it.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging_hub.dicom.scu import PARK_TIMEOUT, reactor_parked, send_parked
from tests.peers.net import free_port

HELD_UP = 1.0  # longest the reactor stands still right after the checkpoint let it through
DIMSE_TIMEOUT = 3.0


@contextmanager
def echo_association() -> Iterator[Association]:
    scp = AE(ae_title="ECHOSCP")
    scp.add_supported_context(Verification)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False)
    scu = AE(ae_title="ECHOSCU")
    scu.add_requested_context(Verification)
    scu.acse_timeout = scu.network_timeout = 10
    scu.dimse_timeout = DIMSE_TIMEOUT
    assoc = scu.associate("127.0.0.1", port, ae_title="ECHOSCP")
    try:
        assert assoc.is_established
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        server.shutdown()


def race_the_reactor(assoc: Association) -> Callable[[], None]:
    """Stage the race: once the checkpoint lets the reactor through, it stands still until a
    message is on the queue (at most HELD_UP seconds), then goes on to take it; the thread that
    sent the request wakes 50 ms late to read its response (its time slice went elsewhere)."""
    checkpoint = assoc._reactor_checkpoint
    wait = checkpoint.wait
    messages = assoc.dimse.msg_queue
    get = messages.get
    held_since = [0.0]

    def held_up_wait(timeout: float | None = None) -> Any:
        passed = wait(timeout)
        if threading.current_thread() is assoc:
            held_since[0] = time.monotonic()
            deadline = held_since[0] + HELD_UP
            while messages.empty() and time.monotonic() < deadline:
                time.sleep(0.001)
        return passed

    def late_get(block: bool = True, timeout: float | None = None) -> Any:
        if block and threading.current_thread() is not assoc:
            time.sleep(0.05)
        return get(block, timeout)

    checkpoint.wait = held_up_wait  # type: ignore[method-assign]
    messages.get = late_get  # type: ignore[method-assign]

    def mid_hold_up() -> None:
        """Return while the reactor stands still, well inside its HELD_UP."""
        deadline = time.monotonic() + 10 * HELD_UP
        while not 0.01 < time.monotonic() - held_since[0] < HELD_UP / 2:
            assert time.monotonic() < deadline, "the reactor is not held up"
            time.sleep(0.001)

    return mid_hold_up


def echo_status(assoc: Association) -> int:
    answer = assoc.send_c_echo()
    return int(answer.Status) if answer and "Status" in answer else -1


def test_plain_pynetdicom_loses_the_response_to_a_held_up_reactor() -> None:
    with echo_association() as assoc:
        race_the_reactor(assoc)()
        started = time.monotonic()
        assert echo_status(assoc) == -1  # the reactor took the response and dropped it
        assert time.monotonic() - started >= DIMSE_TIMEOUT * 0.9


@pytest.mark.parametrize("sends", [1, 5])
def test_a_parked_reactor_leaves_every_response_to_its_send(sends: int) -> None:
    with echo_association() as assoc:
        race_the_reactor(assoc)
        for _ in range(sends):
            started = time.monotonic()
            with reactor_parked(assoc):
                assert echo_status(assoc) == 0x0000
            assert time.monotonic() - started < HELD_UP + DIMSE_TIMEOUT / 2
        assert assoc._reactor_checkpoint.is_set()  # the reactor runs again afterwards


def test_a_reactor_that_ended_is_not_waited_for() -> None:
    with echo_association() as assoc:
        assoc.release()
        assoc.join(5)
        started = time.monotonic()
        with reactor_parked(assoc):
            pass
        assert time.monotonic() - started < PARK_TIMEOUT / 2  # not its whole timeout
        assert assoc._is_paused  # pynetdicom's own wait would not spin
        # A send on it is no answer (None), not pynetdicom's RuntimeError.
        assert send_parked(assoc, assoc.send_c_echo) is None
