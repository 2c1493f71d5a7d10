"""A hub worker process that is slow to answer uvicorn's health ping is not killed.

uvicorn's supervisor pings each worker and kills one that does not answer within
``timeout_worker_healthcheck`` (5 s by default). The answer comes from a thread of the worker,
which needs the GIL, so a worker busy signing a report on a loaded machine could be killed with
every request it serves. Here a worker is stopped (SIGSTOP) for longer than uvicorn's default,
which is how a starved worker looks to the supervisor, and must still be the same process after.
"""

import os
import signal
import time
from pathlib import Path

import httpx

from imaging_hub.worklist.http.server import WORKER_HEALTHCHECK_SECONDS
from tests.peers.hub import start_hub_process
from tests.peers.net import wait_until

UVICORN_DEFAULT_HEALTHCHECK_SECONDS = 5


def _workers(parent: int) -> set[int]:
    """The uvicorn worker processes of *parent* (spawned children, not the resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        spawned = b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline
        if ppid == parent and spawned:
            found.add(int(entry.name))
    return found


def test_a_worker_slow_to_answer_the_health_ping_is_not_killed(tmp_path: Path) -> None:
    assert WORKER_HEALTHCHECK_SECONDS > 3 * UVICORN_DEFAULT_HEALTHCHECK_SECONDS
    hub = start_hub_process(tmp_path / "hub", extra_env={"IMAGING_HUB_WORKERS": "2"})
    try:
        assert hub.proc is not None
        parent = hub.proc.pid
        wait_until(lambda: len(_workers(parent)) == 2, timeout=60)
        workers = _workers(parent)
        starved = min(workers)
        os.kill(starved, signal.SIGSTOP)
        try:
            time.sleep(2 * UVICORN_DEFAULT_HEALTHCHECK_SECONDS)
        finally:
            os.kill(starved, signal.SIGCONT)
        time.sleep(1)
        assert _workers(parent) == workers, "a worker was replaced"
        assert "died" not in hub.log_path.read_text()
        assert httpx.get(f"{hub.url}/healthz", timeout=10).status_code == 200
    finally:
        hub.stop()
