"""DICOMweb benchmark (issue 5): the hub against Orthanc with its DICOMweb plugin, same instances.

    .venv/bin/python -m bench.dicomweb [--runs 30] [--study-runs 5] [--corpus DIR] [--no-write]

Generates the shared benchmark corpus once (../shared/bench/gen_corpus.py: a 3000x2500 DX
study and a 300-slice 512x512 CT, native Explicit VR Little Endian), loads the same files into
a real hub process (through the registration path) and into Orthanc (REST upload), then
measures over HTTP on loopback, alternating hub and Orthanc request by request:

- rendered DX, full size and viewport 512x512 (image/jpeg);
- a raw DX frame (15 MB, application/octet-stream, transfer-syntax=*);
- a CT frame;
- the whole 300-slice CT study (multipart application/dicom, transfer-syntax=*, 158 MB),
  with the hub's peak RSS growth during the retrieve.

Medians, p95 and the ratio Orthanc / hub (>= 1.00 means the hub is at least as fast) go to
stdout and to the DICOMweb section of docs/benchmarks.md (unless --no-write).
"""

import argparse
import hashlib
import io
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tests.peers.hub import HubProcess, start_hub_process

from bench.common import (
    ROOT,
    dcmtk_env,
    ensure_corpus,
    free_port,
    machine,
    machine_lines,
    median,
    p95,
    package_version,
    tool,
    wait_for_port,
    write_section,
)
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.worklist.db.models import Institution
from imaging_hub.worklist.studies.registration import register_instance

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Reference figures measured for Orthanc on this machine kind (issue 5).
ORTHANC_REFERENCE = {"rendered DX": "55 ms", "raw DX frame (15 MB)": "28 ms"}


def corpus_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """(DX files, CT files) of the first corpus copy, generated once and reused."""
    ensure_corpus(directory, ct_copies=1, cr_copies=1)
    dx = sorted(directory.glob("cr/00/*.dcm"))
    ct = sorted(directory.glob("ct/00/q*/*.dcm"))
    if not dx or len(ct) < 300:
        raise SystemExit(f"The corpus in {directory} is incomplete; delete it and run again.")
    return dx, ct[:300]


def uids(path: Path) -> tuple[str, str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def load_hub(hub: HubProcess, files: list[Path]) -> None:
    store = FilesystemStore(hub.data_dir / "objects")
    with hub.sessions() as session:
        clinic = session.query(Institution).filter_by(code="clinic-a").one()
        for path in files:
            data = path.read_bytes()
            register_instance(
                session,
                store=store,
                clinic=clinic,
                body=io.BytesIO(data),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )


class Orthanc:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        orthanc = tool("Orthanc")
        if not ORTHANC_PLUGIN.is_file():
            raise SystemExit("orthanc-dicomweb is not installed: run `make bench`.")
        config = {
            "Name": "imaging-hub-bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "Plugins": [str(ORTHANC_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        log = (self.workdir / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(
            [orthanc, str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),  # Debian's Orthanc also needs TCP_NODELAY=1 to avoid Nagle stalls
        )
        log.close()
        wait_for_port(self.port, timeout=60)

    def load(self, files: list[Path]) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            for path in files:
                response = client.post("/instances", content=path.read_bytes())
                response.raise_for_status()

    def version(self) -> str:
        info = httpx.get(f"{self.url}/system", timeout=10).json()
        plugins = httpx.get(f"{self.url}/plugins/dicom-web", timeout=10).json()
        return f"Orthanc {info.get('Version')} + DICOMweb plugin {plugins.get('Version')}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def cpu_seconds(pid: int) -> float:
    """CPU time of process *pid*'s live threads so far (/proc schedstat: nanoseconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread just ended
            continue
    return total / 1e9


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: Requests per curl process (one keep-alive connection, one timing line per transfer).
BLOCK = 5


def timed_block(url: str, headers: dict[str, str], count: int) -> list[float]:
    """Times of *count* GETs of *url* by one curl process over one keep-alive connection.

    curl is the client for both servers: a native client that reads as fast as the server
    writes (Python HTTP clients stall on Orthanc's small writes and would skew the ratio).
    """
    command = [tool("curl"), "-sS", "--fail"]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    command += ["-w", "%{time_total} %{size_download}\\n"]
    for _ in range(count):
        command += ["-o", "/dev/null", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    times = []
    for line in out.stdout.strip().splitlines():
        seconds, size = line.split()
        if int(size) == 0:
            raise RuntimeError(f"empty answer from {url}")
        times.append(float(seconds))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="requests per single-object case")
    parser.add_argument("--study-runs", type=int, default=5, help="whole-study retrieves")
    parser.add_argument("--corpus", type=Path, default=ROOT / "var" / "bench" / "corpus")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    dx_files, ct_files = corpus_files(args.corpus)
    dx_study, dx_series, dx_sop = uids(dx_files[0])
    ct_study, ct_series, ct_sop = uids(ct_files[150])
    header = machine_lines(
        machine(),
        {
            "Orthanc": package_version("orthanc"),
            "orthanc-dicomweb": package_version("orthanc-dicomweb"),
        },
    )
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        hub = start_hub_process(Path(tmp) / "hub")
        orthanc = Orthanc(Path(tmp) / "orthanc")
        try:
            orthanc.start()
            print("loading the corpus into the hub and Orthanc ...", flush=True)
            load_hub(hub, [*dx_files, *ct_files])
            orthanc.load([*dx_files, *ct_files])
            peer = orthanc.version()
            token = hub.token("rad1")
            results = measure(
                hub,
                orthanc,
                token,
                args,
                (dx_study, dx_series, dx_sop),
                (ct_study, ct_series, ct_sop),
                ct_study,
            )
        finally:
            orthanc.stop()
            hub.stop()
    lines = report(results, peer, header, args)
    print("\n".join(lines))
    if not args.no_write:
        write_section("dicomweb", lines, title="DICOMweb: hub vs Orthanc")


Case = tuple[str, str, dict[str, str], bool, int]


def measure(
    hub: HubProcess,
    orthanc: Orthanc,
    token: str,
    args: argparse.Namespace,
    dx: tuple[str, str, str],
    ct: tuple[str, str, str],
    study: str,
) -> dict[str, dict[str, object]]:
    def inst(uid: tuple[str, str, str]) -> str:
        return f"/studies/{uid[0]}/series/{uid[1]}/instances/{uid[2]}"

    jpeg = {"Accept": "image/jpeg"}
    octets = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    dicom = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    cases: list[Case] = [
        ("rendered DX", f"{inst(dx)}/rendered", jpeg, False, args.runs),
        (
            "rendered DX, viewport 512",
            f"{inst(dx)}/rendered?viewport=512,512",
            jpeg,
            False,
            args.runs,
        ),
        ("raw DX frame (15 MB)", f"{inst(dx)}/frames/1", octets, False, args.runs),
        ("CT frame", f"{inst(ct)}/frames/1", octets, False, args.runs),
        ("CT study, 300 slices (158 MB)", f"/studies/{study}", dicom, True, args.study_runs),
    ]
    out: dict[str, dict[str, object]] = {}
    auth = {"Authorization": f"Bearer {token}"}
    pid = hub.proc.pid if hub.proc else 0
    for name, path, headers, _stream, runs in cases:
        hub_url, orthanc_url = f"{hub.url}/dicomweb{path}", f"{orthanc.url}/dicom-web{path}"
        hub_headers = {**headers, **auth}
        timed_block(hub_url, hub_headers, 1)  # warm-up: page cache, first-call costs
        timed_block(orthanc_url, headers, 1)
        hub_times: list[float] = []
        orthanc_times: list[float] = []
        peak_growth = 0
        hub_cpu = 0.0
        for _ in range(max(1, runs // BLOCK)):
            baseline = rss_kib(pid)
            peak = [baseline]
            stop = threading.Event()

            def watch(peak: list[int] = peak, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(pid))
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            cpu0 = cpu_seconds(pid)
            try:
                hub_times += timed_block(hub_url, hub_headers, min(BLOCK, runs))
            finally:
                hub_cpu += cpu_seconds(pid) - cpu0
                stop.set()
                watcher.join()
            peak_growth = max(peak_growth, peak[0] - baseline)
            orthanc_times += timed_block(orthanc_url, headers, min(BLOCK, runs))
        out[name] = {
            "hub": hub_times,
            "orthanc": orthanc_times,
            "rss_growth_kib": peak_growth,
            "hub_cpu": hub_cpu / len(hub_times),
        }
        print(
            f"{name}: hub {median(hub_times) * 1000:.1f} ms "
            f"({hub_cpu / len(hub_times) * 1000:.1f} ms CPU), "
            f"Orthanc {median(orthanc_times) * 1000:.1f} ms",
            flush=True,
        )
    return out


def report(
    results: dict[str, dict[str, object]], peer: str, header: list[str], args: argparse.Namespace
) -> list[str]:
    lines = [
        *header,
        f"- Peer: {peer} (Debian packages orthanc, orthanc-dicomweb), default settings, "
        "no authentication; the hub with a bearer token, policy scope and audit on every call.",
        "- Corpus: ../shared/bench/gen_corpus.py, one DX study (3000x2500, 12-bit) and a "
        "300-slice 512x512 CT, native Explicit VR Little Endian, the same files loaded into both.",
        f"- {args.runs} requests per case ({args.study_runs} for the whole study) after one "
        f"warm-up, hub and Orthanc alternating in blocks of {BLOCK} requests, each block one curl "
        "process over one keep-alive connection (loopback); times are curl's per-transfer "
        "`time_total`. Frames and studies with `transfer-syntax=*`.",
        "",
        "| case | hub median | hub p95 | Orthanc median | Orthanc p95 | Orthanc / hub | "
        "hub CPU per request | hub RSS growth |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, data in results.items():
        hub_times = data["hub"]
        orthanc_times = data["orthanc"]
        assert isinstance(hub_times, list) and isinstance(orthanc_times, list)
        hm, om = median(hub_times), median(orthanc_times)
        growth = int(data["rss_growth_kib"]) / 1024  # type: ignore[call-overload]
        cpu = float(data["hub_cpu"]) * 1000  # type: ignore[arg-type]
        lines.append(
            f"| {name} | {hm * 1000:.1f} ms | {p95(hub_times) * 1000:.1f} ms | "
            f"{om * 1000:.1f} ms | {p95(orthanc_times) * 1000:.1f} ms | {om / hm:.2f}x | "
            f"{cpu:.1f} ms | {growth:.0f} MiB |"
        )
    lines += [
        "",
        "Reference figures for Orthanc on this machine kind (issue 5): "
        + ", ".join(f"{k} {v}" for k, v in ORTHANC_REFERENCE.items())
        + ". Hub CPU per request is the CPU time of the hub process's threads (/proc schedstat) "
        "over its blocks, divided by the requests: it depends much less on the machine's load "
        "than the times do. RSS growth is "
        "the hub process's peak resident set during the request minus before it: the 158 MB "
        "study streams through a bounded buffer.",
    ]
    return lines


if __name__ == "__main__":
    main()
