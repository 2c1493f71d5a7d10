"""Small helpers shared by the peer fixtures: free ports, waiting for a listener."""

import random
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (see :func:`free_port_block`)."""
    return free_port_block(1)


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' local ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int) -> int:
    """A port P such that P … P + count - 1 are free on 127.0.0.1, chosen at random below the
    kernel's range for outgoing connections: a service that binds them seconds later (a hub or
    gateway process, the demo) cannot lose one to another test's client socket, which takes its
    local port from that range — seen in CI as "Address already in use" for the demo's second
    gateway, on a port the kernel had handed out as free a moment before."""
    high = _ephemeral_low() - count
    rng = random.SystemRandom()
    for _ in range(200):
        start = rng.randrange(10000, high)
        if all(_bindable(port) for port in range(start, start + count)):
            return start
    raise RuntimeError(f"No {count} adjacent free ports were found on 127.0.0.1.")


def wait_for_port(port: int, *, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"Nothing listened on {host}:{port} within {timeout} s.")


def wait_for_port_closed(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until nothing accepts on *port* (a killed service's child processes are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} still accepted connections after {timeout} s.")


def wait_until(predicate: "object", *, timeout: float = 30.0, interval: float = 0.1) -> object:
    """Poll *predicate* (a callable) until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Condition not met within {timeout} s.")
        time.sleep(interval)


def stop_process(proc: "subprocess.Popen[bytes]", timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within *timeout*."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
