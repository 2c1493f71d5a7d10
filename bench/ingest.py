"""C-STORE ingest: dcmtk storescu -> this gateway, dcmtk storescp and Orthanc, in one run.

Workloads (corpus from ../shared/bench/gen_corpus.py, a fresh copy with new UIDs per timed run
so no receiver deduplicates): the 300-slice CT on one association and on four concurrent ones
(one per quarter), the 2-image DX study on one association and four DX studies on four
concurrent associations. Time = from starting the storescu processes until the last one exits
successfully. Receivers are interleaved per repetition, in an order rotated each repetition,
so drift of the machine and what one receiver leaves behind hit all alike; every timed run
starts after a sync() (no dirty pages of earlier runs pending writeback, which would slow the
next receiver's fsyncs) and after the files it sends were read once (in the page cache, so no
receiver pays for the sender's disk reads). The gateway runs with durability on (real spool:
fsync'd files, SQLite WAL index) and its forwarder paused (``forward = false``), so the figure
is SCP ingest alone.

Beside that receive-only figure, ``--forwarding`` (on by default) also measures the shape users
live with: the same gateway receiving while it forwards to a hub in another process (``hub
serve``, SQLite and filesystem store, started by the benchmark), JPEG-LS transcoding for the WAN
and the uplink capped at 20 Mbit/s. The uplink cannot drain a CT in the time it takes to
receive one, so the forwarder is busy (reading the spool, transcoding, uploading) throughout the
receptions that follow: the time measured is still storescu's, start to exit.

    python -m bench.ingest [--reps 5] [--corpus DIR] [--no-write] [--no-forwarding]
"""

import argparse
import json
import os
import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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

WORKLOADS = ("CT 300 slices, 1 association", "CT 300 slices, 4 associations")
DX_WORKLOADS = ("DX study 30 MB, 1 association", "DX 4 studies 120 MB, 4 associations")


@dataclass
class Receiver:
    name: str
    ae_title: str
    durable: str
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "receiver.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        self.port = free_port()
        args, env = self.command()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout=60)
            echo = subprocess.run(
                [tool("echoscu"), "-aec", self.ae_title, "127.0.0.1", str(self.port)],
                env=dcmtk_env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
            if echo.returncode != 0:
                raise RuntimeError(echo.stderr.decode(errors="replace"))
        except Exception:
            self.stop()
            raise SystemExit(
                f"{self.name} did not start:\n{self.log.read_text()[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    transient = False  # started for its own turn only (see GatewayReceiver)

    def check(self, expected: int) -> None:
        """Raise if the receiver does not hold what it acknowledged (where it can be counted)."""


#: The uplink of the forwarding gateway: 20 Mbit/s.
UPLINK_BYTES_PER_SECOND = 20_000_000 // 8


@dataclass
class Hub:
    """``imaging-hub hub serve`` in its own process (the forwarding gateway's target)."""

    workdir: Path
    url: str = ""
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from imaging_hub.worklist.admin.seed import create_demo_network
        from imaging_hub.worklist.db.migrate import upgrade
        from imaging_hub.worklist.db.session import (
            make_engine,
            make_session_factory,
            session_scope,
        )

        self.workdir.mkdir(parents=True, exist_ok=True)
        database = f"sqlite:///{self.workdir / 'hub.sqlite3'}"
        engine = make_engine(database)
        upgrade(engine)
        with session_scope(make_session_factory(engine)) as session:
            network = create_demo_network(session, password=secrets.token_urlsafe(12))
        engine.dispose()
        self.token = network.gateway_tokens["clinic-a"]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(
            os.environ,
            IMAGING_HUB_DATA_DIR=str(self.workdir),
            IMAGING_HUB_DATABASE_URL=database,
            IMAGING_HUB_HOST="127.0.0.1",
            IMAGING_HUB_PORT=str(port),
        )
        env.pop("IMAGING_HUB_CONFIG", None)
        with (self.workdir / "hub.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "hub", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(port, timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class GatewayReceiver(Receiver):
    def __init__(self, workdir: Path, *, workers: int, hub: Hub | None = None) -> None:
        forwarding = ", forwarding (JPEG-LS, 20 Mbit/s)" if hub is not None else ""
        super().__init__(
            f"gateway ({workers} SCP worker{'s' if workers > 1 else ''}{forwarding})",
            "GATEWAY",
            "file written by direct I/O + fdatasync (O_DSYNC where the file system has no direct "
            "I/O) + directory entry fsync'd + index row committed (SQLite WAL, "
            "synchronous=NORMAL; files re-indexed after a power cut), before Success",
            workdir,
        )
        self.workers = workers
        self.hub = hub
        # A forwarding gateway keeps forwarding (transcoding, uploading) long after its
        # workloads: it runs during its own turn only, so the others are not measured beside it.
        # Its spool stays: at its next turn it resumes with the backlog, as after a busy day.
        self.transient = hub is not None

    def command(self) -> tuple[list[str], dict[str, str]]:
        hub = self.hub
        forwarding = (
            {
                "IMAGING_HUB_GATEWAY_FORWARD": "true",
                "IMAGING_HUB_GATEWAY_CLINIC": "clinic-a",
                "IMAGING_HUB_GATEWAY_HUB_URL": hub.url,
                "IMAGING_HUB_GATEWAY_HUB_TOKEN": hub.token,
                "IMAGING_HUB_GATEWAY_TRANSCODE": "jpeg-ls",
                "IMAGING_HUB_GATEWAY_BANDWIDTH_LIMIT_BYTES_PER_SECOND": str(
                    UPLINK_BYTES_PER_SECOND
                ),
                "IMAGING_HUB_GATEWAY_STABILITY_SECONDS": "2",
            }
            if hub is not None
            else {}
        )
        env = dict(
            os.environ,
            IMAGING_HUB_GATEWAY_AE_TITLE=self.ae_title,
            IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
            IMAGING_HUB_GATEWAY_DICOM_PORT=str(self.port),
            IMAGING_HUB_GATEWAY_SPOOL_DIR=str(self.workdir / "spool"),
            IMAGING_HUB_GATEWAY_HUB_URL=f"http://127.0.0.1:{free_port()}",
            IMAGING_HUB_GATEWAY_HUB_TOKEN="bench-not-used",
            IMAGING_HUB_GATEWAY_FORWARD="false",
            IMAGING_HUB_GATEWAY_SCP_WORKERS=str(self.workers),
        )
        env.update(forwarding)
        env.pop("IMAGING_HUB_CONFIG", None)
        return [*CLI, "gateway", "serve"], env

    def check(self, expected: int) -> None:
        db = sqlite3.connect(self.workdir / "spool" / "index.sqlite3")
        try:
            count = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        finally:
            db.close()
        if count != expected:
            raise SystemExit(f"{self.name} spooled {count} instances, expected {expected}.")


class StorescpReceiver(Receiver):
    def __init__(self, workdir: Path) -> None:
        super().__init__("dcmtk storescp", "STORESCP", "none (no fsync)", workdir)

    def command(self) -> tuple[list[str], dict[str, str]]:
        out = self.workdir / "out"
        out.mkdir(exist_ok=True)
        args = [tool("storescp"), "--fork", "-aet", self.ae_title, "-od", str(out)]
        return [*args, str(self.port)], dcmtk_env()


class OrthancReceiver(Receiver):
    def __init__(self, workdir: Path) -> None:
        super().__init__(
            "Orthanc",
            "ORTHANC",
            "Orthanc 1.10 defaults: fsync of each stored file (SyncStorageArea), SQLite index",
            workdir,
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        config = {
            "Name": "imaging-hub-bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {},
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "UnknownSopClassAccepted": True,
            "Plugins": [],
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        return [tool("Orthanc"), str(path)], dcmtk_env()


def storescu(port: int, ae_title: str, files: Sequence[Path]) -> subprocess.Popen[bytes]:
    args = [tool("storescu"), "-aec", ae_title, "-aet", "BENCH", "127.0.0.1", str(port)]
    return subprocess.Popen(
        [*args, *map(str, files)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def send(receiver: Receiver, batches: Sequence[Sequence[Path]]) -> float:
    """Send each batch on its own association, concurrently; seconds until all finished.

    Dirty pages of the previous runs (dcmtk storescp does not fsync; every receiver leaves
    some) are written out first, outside the timing: otherwise their writeback lands in the
    next receiver's fsyncs and the order of receivers decides who pays for it. The files to
    send are read once first, also outside the timing: this machine's kernel reclaims idle page
    cache, and whichever receiver got a copy's first (cold) read would pay for the sender's disk.
    """
    for batch in batches:
        for path in batch:
            path.read_bytes()
    os.sync()
    started = time.perf_counter()
    procs = [storescu(receiver.port, receiver.ae_title, batch) for batch in batches]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or b"E:" in err:
            errors.append(err.decode(errors="replace")[-1500:])
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"storescu into {receiver.name} failed:\n" + "\n".join(errors))
    return elapsed


PROBE_BYTES = 100 * 1024 * 1024


def page_cache_write_cost(directory: Path) -> float:
    """CPU seconds this process spends writing PROBE_BYTES of new files through the page cache
    (no sync): what a receiver that writes buffered pays per 100 MB, besides its own work."""
    chunk = os.urandom(1024 * 1024)
    probe = directory / "page-cache-probe"
    probe.mkdir()
    started = time.process_time()
    for index in range(PROBE_BYTES // len(chunk)):
        (probe / f"{index}.bin").write_bytes(chunk)
    spent = time.process_time() - started
    for path in probe.iterdir():
        path.unlink()
    probe.rmdir()
    return spent


def ct_batches(corpus: Path, copy: int, associations: int) -> list[list[Path]]:
    quarters = [
        sorted((corpus / "ct" / f"{copy:02d}" / f"q{q}").glob("*.dcm")) for q in range(1, 5)
    ]
    if associations == 1:
        return [[f for q in quarters for f in q]]
    return quarters


def dx_batches(corpus: Path, first_copy: int, associations: int) -> list[list[Path]]:
    return [
        sorted((corpus / "cr" / f"{first_copy + i:02d}").glob("*.dcm")) for i in range(associations)
    ]


def run(
    reps: int, corpus: Path, workers: list[int], write: bool, *, forwarding: bool = True
) -> None:
    manifest = ensure_corpus(corpus, ct_copies=2 * reps, cr_copies=5 * reps)
    info = machine()
    peers = {
        "dcmtk": package_version("dcmtk"),
        "Orthanc": package_version("orthanc"),
    }
    with tempfile.TemporaryDirectory(prefix="imaging-hub-bench-") as tmp:
        base = Path(tmp)
        hub = Hub(base / "hub") if forwarding else None
        receivers: list[Receiver] = [
            *(GatewayReceiver(base / f"gateway{w}", workers=w) for w in workers),
            *(
                GatewayReceiver(base / f"gateway{w}-forwarding", workers=w, hub=hub)
                for w in (workers if hub is not None else [])
            ),
            StorescpReceiver(base / "storescp"),
            OrthancReceiver(base / "orthanc"),
        ]
        # times[receiver][workload] = [seconds per repetition]
        times: dict[str, dict[str, list[float]]] = {r.name: {} for r in receivers}
        sent: dict[str, int] = {r.name: 0 for r in receivers}
        probes = [page_cache_write_cost(base)]
        try:
            if hub is not None:
                hub.start()
            with ThreadPoolExecutor(len(receivers)) as pool:
                list(pool.map(lambda r: r.start(), [r for r in receivers if not r.transient]))
            for rep in range(reps):
                # Rotated each repetition: whatever a receiver leaves behind (background work,
                # cache state) falls on a different successor each time.
                shift = rep % len(receivers)
                for receiver in receivers[shift:] + receivers[:shift]:
                    if receiver.transient:
                        receiver.start()
                    plan = [
                        (WORKLOADS[0], ct_batches(corpus, 2 * rep, 1)),
                        (WORKLOADS[1], ct_batches(corpus, 2 * rep + 1, 4)),
                        (DX_WORKLOADS[0], dx_batches(corpus, 5 * rep, 1)),
                        (DX_WORKLOADS[1], dx_batches(corpus, 5 * rep + 1, 4)),
                    ]
                    for workload, batches in plan:
                        seconds = send(receiver, batches)
                        sent[receiver.name] += sum(map(len, batches))
                        times[receiver.name].setdefault(workload, []).append(seconds)
                        print(
                            f"rep {rep + 1}/{reps} {receiver.name:28} {workload:38} {seconds:.3f} s"
                        )
                        time.sleep(0.5)  # let the receiver settle between workloads
                    if receiver.transient:
                        receiver.stop()
            for receiver in receivers:
                receiver.check(sent[receiver.name])
            probes.append(page_cache_write_cost(base))
        finally:
            for receiver in receivers:
                receiver.stop()
            if hub is not None:
                hub.stop()
    lines = report(times, receivers, reps, manifest, probes)
    print("\n".join(lines))
    if write:
        write_section(
            "ingest",
            [*machine_lines(info, peers), "", *lines],
            title="C-STORE ingest: gateway vs dcmtk storescp vs Orthanc",
        )


def report(
    times: dict[str, dict[str, list[float]]],
    receivers: Sequence[Receiver],
    reps: int,
    manifest: dict[str, int],
    probes: Sequence[float],
) -> list[str]:
    sizes = {
        WORKLOADS[0]: manifest["ct_series_bytes"],
        WORKLOADS[1]: manifest["ct_series_bytes"],
        DX_WORKLOADS[0]: manifest["cr_study_bytes"],
        DX_WORKLOADS[1]: 4 * manifest["cr_study_bytes"],
    }
    names = [r.name for r in receivers]
    header = (
        "| workload | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} vs Orthanc" for n in names if n.startswith("gateway"))
    )
    lines = [
        f"Sender: dcmtk storescu (TCP_NODELAY=1) on loopback. Median (min-max) seconds of {reps} "
        "runs, each with a fresh copy of the corpus (new UIDs), receivers in an order rotated "
        "each repetition, each run after a sync() and after its files were read once. "
        '"vs Orthanc" is the throughput ratio '
        "(Orthanc time / gateway time; >= 1.00 means at least Orthanc's throughput).",
        "",
        header + " |",
        "|" + " --- |" * (1 + len(names) + sum(n.startswith("gateway") for n in names)),
    ]
    for workload in (*WORKLOADS, *DX_WORKLOADS):
        cells = []
        for name in names:
            values = times[name][workload]
            cells.append(f"{median(values):.3f} ({min(values):.2f}-{max(values):.2f})")
        orthanc = median(times["Orthanc"][workload])
        ratios = [
            f"{orthanc / median(times[n][workload]):.2f}x" for n in names if n.startswith("gateway")
        ]
        mb = sizes[workload] / 1e6
        lines.append(f"| {workload} ({mb:.0f} MB) | " + " | ".join(cells + ratios) + " |")
    lines += ["", "Durability of each receiver when it answers Success:", ""]
    lines += [f"- {r.name}: {r.durable}" for r in receivers]
    lines += [
        "",
        f"Writing {PROBE_BYTES // 2**20} MiB of new files through the page cache cost this "
        f"benchmark {probes[0]:.2f} s of CPU before the receivers ran and {probes[-1]:.2f} s "
        "after (on this virtual machine fresh page-cache memory gets dear once the cache has "
        "grown). Receivers that write buffered (dcmtk storescp, Orthanc) pay that for every "
        "byte they store; the gateway writes its spool by direct I/O (docs/gateway.md).",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "imaging-hub-bench"
        / "corpus",
    )
    parser.add_argument(
        "--workers",
        default=f"1,{os.cpu_count() or 1}",
        help="comma-separated scp_workers settings of the gateway to measure",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--no-forwarding",
        action="store_true",
        help="measure the receive-only gateway alone (no hub, no gateway that forwards while "
        "it receives)",
    )
    args = parser.parse_args()
    workers = sorted({int(w) for w in args.workers.split(",")})
    run(args.reps, args.corpus, workers, not args.no_write, forwarding=not args.no_forwarding)


if __name__ == "__main__":
    main()
