"""dcmtk's command-line tools as the modality (Debian ``dcmtk``).

``TCP_NODELAY=1`` is set in their environment: Debian's dcmtk otherwise stalls ~45 ms per
instance (Nagle). A missing dcmtk is a failure, never a skip: CI installs it.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from tests.peers.net import free_port, wait_for_port


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"dcmtk's {name} is not installed (apt-get install dcmtk).")
    return path


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def _run(args: Sequence[str], timeout: float) -> Run:
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.run(list(args), capture_output=True, timeout=timeout, env=env, check=False)
    return Run(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def echoscu(
    port: int, *, called_ae: str, calling_ae: str = "ECHOSCU", extra: Sequence[str] = ()
) -> Run:
    return _run(
        [
            _tool("echoscu"),
            "-aec",
            called_ae,
            "-aet",
            calling_ae,
            *extra,
            "127.0.0.1",
            str(port),
        ],
        30,
    )


def association_config(files: Sequence[Path], directory: Path) -> Path:
    """A storescu ``--config-file`` proposing each file's own (SOP class, transfer syntax).

    storescu's built-in ``-x?`` options cover only some compressed syntaxes (none proposes JPEG
    Lossless Process 14 non-SV1, for example); a config profile proposes exactly what is sent,
    so compressed files travel as they are, like a modality sending its own encoding.
    """
    pairs: list[tuple[str, str]] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            pair = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        except Exception:  # unreadable test input: propose CR in Explicit VR LE for it
            pair = ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1")
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > 128:
        raise ValueError("A DICOM association proposes at most 128 presentation contexts.")
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Files]"]
    for n, (sop, ts) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{n} = {sop}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Files]", "PresentationContexts = Files"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"storescu-{uuid.uuid4().hex}.cfg"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def storescu(
    port: int,
    files: Sequence[Path],
    *,
    called_ae: str,
    calling_ae: str = "STORESCU",
    extra: Sequence[str] = (),
    timeout: float = 120,
) -> Run:
    """Send *files* on one association, each in its own transfer syntax (no conversion)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = association_config(files, Path(tmp))
        args = [
            _tool("storescu"),
            "-aec",
            called_ae,
            "-aet",
            calling_ae,
            "--config-file",
            str(config),
            "Files",
            "-nh",
            "-v",
            *extra,
            "127.0.0.1",
            str(port),
            *[str(f) for f in files],
        ]
        return _run(args, timeout)


@contextlib.contextmanager
def storescp(directory: Path, *, ae_title: str = "STORESCP") -> Iterator[int]:
    """dcmtk's storescp in bit-preserving mode: writes each data set exactly as received.

    Used as the oracle for "what storescu really sent" (storescu re-encodes some elements on
    the wire, e.g. undefined-length sequences get explicit lengths).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        [_tool("storescp"), "-aet", ae_title, "+xa", "+B", "-od", str(directory), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=15)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def findscu(
    port: int,
    query: Path,
    *,
    called_ae: str,
    calling_ae: str = "FINDSCU",
    out: Path,
    timeout: float = 30,
) -> Run:
    """A Modality Worklist C-FIND (``findscu -W``) with the query file *query* (a data set
    written with pydicom); each answer is written to *out* as ``rsp0001.dcm``, ..."""
    out.mkdir(parents=True, exist_ok=True)
    return _run(
        [
            _tool("findscu"),
            "-W",
            "-aec",
            called_ae,
            "-aet",
            calling_ae,
            "-X",
            "-od",
            str(out),
            "-to",
            str(int(timeout)),
            "127.0.0.1",
            str(port),
            str(query),
        ],
        timeout,
    )


@contextlib.contextmanager
def wlmscpfs(directory: Path) -> Iterator[int]:
    """dcmtk's worklist SCP answering from ``directory/<called AE>/*.wl`` (each AE folder holds
    a ``lockfile``), in the character set of each file (``--keep-char-set``)."""
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        [_tool("wlmscpfs"), "-dfp", str(directory), "-dfr", "-csk", "-s", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=15)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
