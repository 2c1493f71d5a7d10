"""Forwarding over an emulated rural link: 20 Mbit/s, 50 ms round trip, with and without JPEG-LS.

The hub runs in a network namespace this script creates (a veth pair, 10.200.N.0/30, torn down
at the end); ``tc tbf`` on both ends of the pair shapes the rate (this kernel has no netem), and
an asyncio TCP proxy in this process adds 25 ms each way (order preserved) for the round trip.
The gateway runs in the host namespace and reaches the hub only through the proxy.

For each run the study is first received by the gateway with forwarding off (spool filled,
dcmtk storescu), then the gateway restarts with forwarding on; the transfer time is from the
gateway announcing it is forwarding until the spool has every instance acknowledged by the hub.
Target: within 15 % of (bytes sent / link rate), i.e. transcoding overlapped with the upload.
Needs root (ip netns, tc).

    python -m bench.wan [--reps 1] [--corpus DIR] [--no-write]
"""

import argparse
import asyncio
import contextlib
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CLI,
    dcmtk_env,
    ensure_corpus,
    free_port,
    machine,
    machine_lines,
    median,
    package_version,
    stop_process,
    tool,
    wait_for_port,
    write_section,
)

RATE_BITS = 20_000_000
ONE_WAY_DELAY = 0.025
CHUNK = 64 * 1024


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


@contextlib.contextmanager
def shaped_namespace() -> Iterator[tuple[str, str]]:
    """A namespace reached over a veth pair shaped to RATE_BITS; yields (name, its address)."""
    tag = os.getpid() % 250 + 1
    ns, host_if, ns_if = f"ihbench{tag}", f"ihb{tag}h", f"ihb{tag}n"
    host_ip, ns_ip = f"10.200.{tag}.1", f"10.200.{tag}.2"
    tbf = ["tbf", "rate", f"{RATE_BITS // 1000}kbit", "burst", "32kb", "latency", "400ms"]
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("tc", "qdisc", "add", "dev", host_if, "root", *tbf)
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns_if, "root", *tbf)
        yield ns, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class DelayProxy:
    """TCP proxy on 127.0.0.1 adding a fixed delay to each direction, order preserved."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def forward() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while True:
                chunk = await reader.read(CHUNK)
                await queue.put((time.monotonic() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    token: str
    url: str


def start_hub(data_dir: Path, ns: str, ns_ip: str) -> Hub:
    from imaging_hub.worklist.admin.seed import create_demo_network
    from imaging_hub.worklist.db.migrate import upgrade
    from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope

    data_dir.mkdir(parents=True)
    url = f"sqlite:///{data_dir / 'hub.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(make_session_factory(engine)) as session:
        network = create_demo_network(session, password=secrets.token_urlsafe(12))
    engine.dispose()
    port = 8000
    env = dict(
        os.environ,
        IMAGING_HUB_DATA_DIR=str(data_dir),
        IMAGING_HUB_DATABASE_URL=url,
        IMAGING_HUB_HOST=ns_ip,
        IMAGING_HUB_PORT=str(port),
    )
    env.pop("IMAGING_HUB_CONFIG", None)
    with (data_dir / "hub.log").open("ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *CLI, "hub", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, host=ns_ip, timeout=60)
    return Hub(proc, network.gateway_tokens["clinic-a"], f"http://{ns_ip}:{port}")


def gateway_env(spool: Path, port: int, hub_url: str, token: str, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        IMAGING_HUB_GATEWAY_CLINIC="clinic-a",
        IMAGING_HUB_GATEWAY_AE_TITLE="CLINIC_A",
        IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
        IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
        IMAGING_HUB_GATEWAY_SPOOL_DIR=str(spool),
        IMAGING_HUB_GATEWAY_HUB_URL=hub_url,
        IMAGING_HUB_GATEWAY_HUB_TOKEN=token,
        IMAGING_HUB_GATEWAY_STABILITY_SECONDS="1",
        IMAGING_HUB_GATEWAY_HEARTBEAT_SECONDS="3600",
        **{f"IMAGING_HUB_GATEWAY_{k.upper()}": v for k, v in extra.items()},
    )
    env.pop("IMAGING_HUB_CONFIG", None)
    return env


def spool_state(spool: Path) -> tuple[int, int, int]:
    """(instances, acknowledged by the hub, bytes sent)"""
    db = sqlite3.connect(spool / "index.sqlite3", timeout=30)
    try:
        total, sent, sent_bytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 'sent'), 0), COALESCE(SUM(sent_bytes), 0) "
            "FROM instances"
        ).fetchone()
    finally:
        db.close()
    return int(total), int(sent), int(sent_bytes)


def fill_spool(spool: Path, files: list[Path], hub: Hub) -> None:
    port = free_port()
    env = gateway_env(spool, port, hub.url, hub.token, forward="false", scp_workers="1")
    log = spool.parent / "fill.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*CLI, "gateway", "serve"], env=env, stdout=out, stderr=out)
    try:
        wait_for_port(port, timeout=60)
        args = [tool("storescu"), "-aec", "CLINIC_A", "127.0.0.1", str(port)]
        subprocess.run([*args, *map(str, files)], env=dcmtk_env(), check=True, timeout=600)
    finally:
        stop_process(proc)
    if spool_state(spool)[0] != len(files):
        raise SystemExit(f"the gateway spooled {spool_state(spool)[0]} of {len(files)} files")


def forward(spool: Path, hub_url: str, token: str, transcode: str) -> tuple[float, int]:
    """Seconds from 'forwarding' to every instance acknowledged, and the bytes sent."""
    port = free_port()
    env = gateway_env(spool, port, hub_url, token, transcode=transcode, scp_workers="1")
    log = spool.parent / f"forward-{transcode}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*CLI, "gateway", "serve"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "forwarding to" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the gateway did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.01)
        started = time.perf_counter()
        deadline = time.monotonic() + 900
        while True:
            total, sent, sent_bytes = spool_state(spool)
            if sent == total:
                return time.perf_counter() - started, sent_bytes
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"forwarding stalled at {sent}/{total}:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.05)
    finally:
        stop_process(proc)


def run(reps: int, corpus: Path, write: bool) -> None:
    manifest = ensure_corpus(corpus, ct_copies=2 * reps + 1, cr_copies=2 * reps + 1)
    info = machine()
    results: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="imaging-hub-wan-") as tmp,
        shaped_namespace() as (
            ns,
            ns_ip,
        ),
    ):
        base = Path(tmp)
        hub = start_hub(base / "hub", ns, ns_ip)
        proxy = DelayProxy((ns_ip, 8000), ONE_WAY_DELAY)
        proxy.start()
        hub_via_link = f"http://127.0.0.1:{proxy.port}"
        try:
            run_no = 0
            for rep in range(reps):
                for transcode in ("none", "jpeg-ls"):
                    for study in ("DX", "CT"):
                        copy = 2 * rep + (transcode == "jpeg-ls")
                        if study == "DX":
                            files = sorted((corpus / "cr" / f"{copy:02d}").glob("*.dcm"))
                        else:
                            files = sorted((corpus / "ct" / f"{copy:02d}").glob("q*/*.dcm"))
                        spool = base / f"run{run_no}" / "spool"
                        spool.parent.mkdir(parents=True)
                        run_no += 1
                        fill_spool(spool, files, hub)
                        original = sum(f.stat().st_size for f in files)
                        seconds, sent = forward(spool, hub_via_link, hub.token, transcode)
                        results.setdefault((study, transcode), []).append((seconds, sent, original))
                        ideal = sent * 8 / RATE_BITS
                        print(
                            f"rep {rep + 1}/{reps} {study} transcode={transcode:8} "
                            f"{sent / 1e6:7.1f} MB sent in {seconds:6.2f} s "
                            f"(link-bound ideal {ideal:6.2f} s, {seconds / ideal:.2f}x)",
                            flush=True,
                        )
        finally:
            proxy.stop()
            stop_process(hub.proc)
    lines = report(results, reps)
    print("\n".join(lines))
    del manifest
    if write:
        peers = {
            "iproute2 (tc tbf)": package_version("iproute2"),
            "dcmtk": package_version("dcmtk"),
        }
        write_section(
            "wan",
            [*machine_lines(info, peers), "", *lines],
            title="Forwarding over 20 Mbit/s, 50 ms RTT (with and without JPEG-LS)",
        )


def report(results: dict[tuple[str, str], list[tuple[float, int, int]]], reps: int) -> list[str]:
    lines = [
        f"Link: veth pair into a network namespace, `tc tbf` {RATE_BITS // 1_000_000} Mbit/s "
        f"each way, plus {int(ONE_WAY_DELAY * 2000)} ms round trip from a delaying TCP proxy. "
        "Hub (`hub serve`, SQLite, filesystem store) in the namespace; gateway forwarding with "
        "its defaults (4 uploads in flight, transcoding in a process pool). Median of "
        f"{reps} run(s). Ideal = bytes sent / link rate; target: time <= 1.15 x ideal.",
        "",
        "| study | transcoding | original MB | sent MB | ratio | time s | ideal s | time / ideal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (study, transcode), runs in sorted(results.items()):
        seconds = median([r[0] for r in runs])
        sent = median([r[1] for r in runs])
        original = median([r[2] for r in runs])
        ideal = sent * 8 / RATE_BITS
        lines.append(
            f"| {study} | {transcode} | {original / 1e6:.1f} | {sent / 1e6:.1f} | "
            f"{original / sent:.2f}x | {seconds:.2f} | {ideal:.2f} | {seconds / ideal:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "imaging-hub-bench"
        / "corpus",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.wan needs root: it creates a network namespace and shapes a veth pair.")
    run(args.reps, args.corpus, not args.no_write)


if __name__ == "__main__":
    main()
